//! One container under the bounds: the requests and limits to add, and the bounds it breaks.
//!
//! Planning reads the container without changing it, so that a denial never comes with a
//! half-applied mutation and the object is only touched once every container is known to pass.
//!
//! For each *managed* resource (one named in any configured map, or a GPU in the container's
//! limits) the rules are, in order, those a Pod meets in the API server:
//! 1. a missing request gets the limit the user wrote, if any (`SetDefaults_Pod` in
//!    kubernetes/kubernetes pkg/apis/core/v1/defaults.go does this to every Pod before
//!    admission; here templates and ML CRDs get it too, so a Deployment ends up as its Pods
//!    will). GPUs get only this rule unless configured;
//! 2. LimitRanger (plugin/pkg/admission/limitranger/admission.go, `mergeContainerResources`):
//!    a missing limit gets `default`, a still missing request gets `default_request`. Both are
//!    the defaulted maps of [`crate::bounds`] (`default` ← `max`, `default_request` ←
//!    `default` ← `min`), so a container that sets nothing is never denied for leaving a
//!    value out;
//! 3. the result must satisfy `min` ≤ request, `min` ≤ limit, limit ≤ `max`, request ≤ `max`,
//!    limit / request ≤ `max_limit_request_ratio` (LimitRanger's `minConstraint`,
//!    `maxConstraint`, `limitRequestRatioConstraint`), and request ≤ limit (Pod validation).
//!
//! Resources nobody configured are left alone, as are values the user wrote.

use std::collections::BTreeSet;

use portcullis_policy_sdk::quantity::Quantity;
use serde_json::{Map, Value};

use crate::bounds::{Bound, ResourceBounds, shown};
use crate::settings::DefaultResourcesSettings;

/// Which map of `resources` an addition goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `resources.requests`.
    Requests,
    /// `resources.limits`.
    Limits,
}

impl Section {
    /// The field name in `resources`.
    pub fn field(&self) -> &'static str {
        match self {
            Section::Requests => "requests",
            Section::Limits => "limits",
        }
    }
}

/// A request or limit to add to a container.
#[derive(Debug, Clone, PartialEq)]
pub struct Addition {
    /// Where it goes.
    pub section: Section,
    /// The resource name.
    pub resource: String,
    /// The value, verbatim from the settings or the container's own limit.
    pub value: Value,
}

/// Where a request or limit came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Written,
    DefaultLimit,
    DefaultRequest,
    CopiedFromLimit,
}

impl Origin {
    fn note(&self) -> &'static str {
        match self {
            Origin::Written => "",
            Origin::DefaultLimit => " (the default limit)",
            Origin::DefaultRequest => " (the default request)",
            Origin::CopiedFromLimit => " (copied from its limit)",
        }
    }
}

/// A request or limit after defaulting.
#[derive(Debug, Clone, Copy)]
enum Amount<'a> {
    Missing,
    /// Written by the user but not a quantity (already reported).
    Invalid,
    Set {
        raw: &'a Value,
        quantity: Quantity,
        origin: Origin,
    },
}

impl Amount<'_> {
    fn describe(&self) -> String {
        match self {
            Amount::Set { raw, origin, .. } => format!("{}{}", shown(raw), origin.note()),
            Amount::Missing | Amount::Invalid => String::new(),
        }
    }

    fn quantity(&self) -> Option<Quantity> {
        match self {
            Amount::Set { quantity, .. } => Some(*quantity),
            Amount::Missing | Amount::Invalid => None,
        }
    }
}

/// Plans one container: returns what to add and appends what is wrong to `violations`, each
/// message prefixed with `who` (kind, object and container).
pub fn plan(
    settings: &DefaultResourcesSettings,
    bounds: &crate::bounds::Bounds,
    who: &str,
    container: &Value,
    violations: &mut Vec<String>,
) -> Vec<Addition> {
    let mut additions = Vec::new();
    let Some((requests, limits)) = sections(who, container, violations) else {
        return additions;
    };
    let mut managed: BTreeSet<&str> = bounds.resources().collect();
    managed.extend(
        limits
            .into_iter()
            .flat_map(Map::keys)
            .map(String::as_str)
            .filter(|r| settings.is_gpu(r)),
    );
    let unbounded = ResourceBounds::default();
    for resource in managed {
        let bounds = bounds.get(resource).unwrap_or(&unbounded);
        let mut add = |section: Section, value: &Value| {
            additions.push(Addition {
                section,
                resource: resource.to_string(),
                value: value.clone(),
            });
        };
        let written_limit = limits.and_then(|l| l.get(resource));
        let (limit_raw, limit_origin) = match (written_limit, &bounds.default) {
            (Some(raw), _) => (Some(raw), Origin::Written),
            (None, Some(default)) => {
                add(Section::Limits, &default.raw);
                (Some(&default.raw), Origin::DefaultLimit)
            }
            (None, None) => (None, Origin::Written),
        };
        let (request_raw, request_origin) = match requests.and_then(|r| r.get(resource)) {
            Some(raw) => (Some(raw), Origin::Written),
            None => {
                let source = match (written_limit, &bounds.default_request) {
                    (Some(raw), _) => Some((raw, Origin::CopiedFromLimit)),
                    (None, Some(default)) => Some((&default.raw, Origin::DefaultRequest)),
                    (None, None) => None,
                };
                if let Some((raw, _)) = source {
                    add(Section::Requests, raw);
                }
                source.map_or((None, Origin::Written), |(raw, o)| (Some(raw), o))
            }
        };
        let request = amount(who, resource, "request", request_raw, request_origin, violations);
        let limit = amount(who, resource, "limit", limit_raw, limit_origin, violations);
        enforce(who, resource, bounds, request, limit, violations);
    }
    additions
}

/// A container's `resources.requests` or `resources.limits`; `None` when absent or null.
type ResourceMap<'a> = Option<&'a Map<String, Value>>;

/// The container's `resources.requests` and `resources.limits`, or `None` after recording a
/// violation when one of them is not a map.
fn sections<'a>(
    who: &str,
    container: &'a Value,
    violations: &mut Vec<String>,
) -> Option<(ResourceMap<'a>, ResourceMap<'a>)> {
    let resources = match container.get("resources") {
        None | Some(Value::Null) => return Some((None, None)),
        Some(Value::Object(resources)) => resources,
        Some(other) => {
            violations.push(format!("{who}: resources must be a map, not {other}"));
            return None;
        }
    };
    let mut section = |name: &str| match resources.get(name) {
        None | Some(Value::Null) => Some(None),
        Some(Value::Object(map)) => Some(Some(map)),
        Some(other) => {
            violations.push(format!("{who}: resources.{name} must be a map, not {other}"));
            None
        }
    };
    let requests = section("requests");
    let limits = section("limits");
    Some((requests?, limits?))
}

/// Parses a request or limit; a value the user wrote that is not a quantity is a violation.
fn amount<'a>(
    who: &str,
    resource: &str,
    what: &str,
    raw: Option<&'a Value>,
    origin: Origin,
    violations: &mut Vec<String>,
) -> Amount<'a> {
    let Some(raw) = raw else {
        return Amount::Missing;
    };
    match Quantity::parse(raw) {
        Ok(quantity) => Amount::Set {
            raw,
            quantity,
            origin,
        },
        Err(e) => {
            // Copies and defaults come from values already reported or validated.
            if origin == Origin::Written {
                violations.push(format!("{who}: {resource} {what} is invalid: {e}"));
            }
            Amount::Invalid
        }
    }
}

/// Appends every bound that `request` and `limit` break, as LimitRanger's constraints do.
/// Defaulting fills a request wherever a minimum exists and a limit wherever a maximum does, so
/// the "sets no ..." arms only speak if that ever changes; they keep this function a complete
/// statement of the upstream checks.
fn enforce(
    who: &str,
    resource: &str,
    bounds: &ResourceBounds,
    request: Amount,
    limit: Amount,
    violations: &mut Vec<String>,
) {
    let mut violation = |text: String| violations.push(format!("{who}: {text}"));
    let copied = matches!(
        request,
        Amount::Set {
            origin: Origin::CopiedFromLimit,
            ..
        }
    );
    if let Some(min) = &bounds.min {
        let shown_min = min.shown();
        match request {
            Amount::Missing => violation(format!(
                "sets no {resource} request, but the minimum is {shown_min}; set \
                 resources.requests.{resource}"
            )),
            Amount::Set { quantity, .. } if quantity < min.quantity => violation(format!(
                "{resource} request {} is below the minimum {shown_min}",
                request.describe()
            )),
            _ => {}
        }
        // A request copied from the limit was just reported with the same value.
        if !copied && limit.quantity().is_some_and(|q| q < min.quantity) {
            violation(format!(
                "{resource} limit {} is below the minimum {shown_min}",
                limit.describe()
            ));
        }
    }
    if let Some(max) = &bounds.max {
        let shown_max = max.shown();
        match limit {
            Amount::Missing => violation(format!(
                "sets no {resource} limit, but the maximum is {shown_max}; set \
                 resources.limits.{resource}"
            )),
            Amount::Set { quantity, .. } if quantity > max.quantity => violation(format!(
                "{resource} limit {} is above the maximum {shown_max}",
                limit.describe()
            )),
            _ => {}
        }
        // Likewise, a copied request repeats the limit just reported.
        if !copied && request.quantity().is_some_and(|q| q > max.quantity) {
            violation(format!(
                "{resource} request {} is above the maximum {shown_max}",
                request.describe()
            ));
        }
    }
    if let Some(ratio) = &bounds.max_limit_request_ratio {
        check_ratio(resource, ratio, request, limit, &mut violation);
    }
    if let (Some(requested), Some(limited)) = (request.quantity(), limit.quantity())
        && requested > limited
    {
        let fix = if matches!(
            limit,
            Amount::Set {
                origin: Origin::DefaultLimit,
                ..
            }
        ) {
            format!(
                "; set resources.limits.{resource} to at least {}",
                request.describe()
            )
        } else {
            "; the API server refuses a request above its limit".to_string()
        };
        violation(format!(
            "{resource} request {} is above the limit {}{fix}",
            request.describe(),
            limit.describe()
        ));
    }
}

/// LimitRange's `maxLimitRequestRatio`: both must be set and non-zero, and the ratio in bounds.
fn check_ratio(
    resource: &str,
    ratio: &Bound,
    request: Amount,
    limit: Amount,
    violation: &mut impl FnMut(String),
) {
    let shown_ratio = ratio.shown();
    let (requested, limited) = match (request, limit) {
        (Amount::Invalid, _) | (_, Amount::Invalid) => return,
        (Amount::Set { quantity: r, .. }, Amount::Set { quantity: l, .. })
            if !r.is_zero() && !l.is_zero() =>
        {
            (r, l)
        }
        _ => {
            violation(format!(
                "{resource} needs a non-zero request and limit, because the maximum \
                 limit/request ratio is {shown_ratio}"
            ));
            return;
        }
    };
    if Quantity::ratio_exceeds(limited, requested, ratio.quantity) {
        violation(format!(
            "{resource} limit/request ratio is {} (limit {}, request {}), above the maximum \
             {shown_ratio}",
            Quantity::ratio_display(limited, requested),
            limit.describe(),
            request.describe()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(settings: Value, container: Value) -> (Vec<Addition>, Vec<String>) {
        let settings: DefaultResourcesSettings = serde_json::from_value(settings).expect("settings");
        let bounds = settings.bounds_for(None).expect("bounds");
        let mut violations = Vec::new();
        let additions = plan(&settings, &bounds, "C", &container, &mut violations);
        (additions, violations)
    }

    fn added(additions: &[Addition]) -> Vec<(String, String, Value)> {
        additions
            .iter()
            .map(|a| (a.section.field().to_string(), a.resource.clone(), a.value.clone()))
            .collect()
    }

    fn add(section: &str, resource: &str, value: Value) -> (String, String, Value) {
        (section.to_string(), resource.to_string(), value)
    }

    #[test]
    fn an_empty_container_gets_every_default() {
        let (a, v) = run(json!({}), json!({"name": "c"}));
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(
            added(&a),
            [
                add("requests", "cpu", json!("250m")),
                add("limits", "memory", json!("1Gi")),
                add("requests", "memory", json!("512Mi")),
            ]
        );
    }

    #[test]
    fn written_values_are_kept_and_a_written_limit_becomes_the_request() {
        let (a, v) = run(
            json!({}),
            json!({"resources": {"limits": {"memory": "4Gi", "cpu": 2}}}),
        );
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(
            added(&a),
            [
                add("requests", "cpu", json!(2)),
                add("requests", "memory", json!("4Gi"))
            ]
        );
        let (a, _) = run(
            json!({}),
            json!({"resources": {"requests": {"cpu": "1", "memory": "256Mi"}}}),
        );
        assert_eq!(added(&a), [add("limits", "memory", json!("1Gi"))]);
    }

    #[test]
    fn without_default_request_the_default_limit_is_the_request() {
        let (a, _) = run(
            json!({"default": {"memory": "2Gi"}, "default_request": {}}),
            json!({}),
        );
        assert_eq!(
            added(&a),
            [
                add("limits", "memory", json!("2Gi")),
                add("requests", "memory", json!("2Gi"))
            ]
        );
    }

    #[test]
    fn gpu_requests_follow_their_limits_and_other_resources_are_left_alone() {
        let (a, _) = run(
            json!({"default": {}, "default_request": {}}),
            json!({"resources": {"limits": {"nvidia.com/gpu": 2, "ephemeral-storage": "10Gi"},
                                 "requests": {"nvidia.com/mig-1g.5gb": 1}}}),
        );
        assert_eq!(added(&a), [add("requests", "nvidia.com/gpu", json!(2))]);
    }

    #[test]
    fn min_max_and_ratio_report_every_violation_with_numbers() {
        let settings = json!({"default": {}, "default_request": {},
            "min": {"memory": "256Mi"}, "max": {"memory": "8Gi", "cpu": "4"},
            "max_limit_request_ratio": {"cpu": "2"}});
        let (_, v) = run(
            settings.clone(),
            json!({"resources": {"requests": {"memory": "128Mi", "cpu": "500m"},
                                 "limits": {"memory": "16Gi", "cpu": "8"}}}),
        );
        assert_eq!(
            v,
            [
                "C: cpu limit 8 is above the maximum 4",
                "C: cpu limit/request ratio is 16 (limit 8, request 500m), above the maximum 2",
                "C: memory request 128Mi is below the minimum 256Mi",
                "C: memory limit 16Gi is above the maximum 8Gi",
            ]
        );
        // With no default, the maximum is the default limit (and the default request), so a
        // missing value is filled, not denied; the filled cpu limit still breaks the ratio.
        let (a, v) = run(settings, json!({"resources": {"requests": {"cpu": "1"}}}));
        assert_eq!(
            v,
            [
                "C: cpu limit/request ratio is 4 (limit 4 (the default limit), request 1), above \
              the maximum 2"
            ]
        );
        assert_eq!(
            added(&a),
            [
                add("limits", "cpu", json!("4")),
                add("limits", "memory", json!("8Gi")),
                add("requests", "memory", json!("8Gi")),
            ]
        );
        let (_, v) = run(
            json!({"default": {}, "default_request": {}, "max_limit_request_ratio": {"cpu": 2}}),
            json!({"resources": {"requests": {"cpu": "1"}}}),
        );
        assert_eq!(
            v,
            [
                "C: cpu needs a non-zero request and limit, because the maximum limit/request ratio \
              is 2"
            ]
        );
    }

    /// LimitRanger applies the defaulted LimitRange (`default` ← `max`, `defaultRequest` ←
    /// `default` ← `min`: kubernetes/kubernetes pkg/apis/core/v1/defaults.go
    /// `SetDefaults_LimitRangeItem`) to a container that leaves values out, and only then
    /// checks the bounds (plugin/pkg/admission/limitranger/admission.go).
    #[test]
    fn max_and_min_fill_missing_values_as_limitrange_defaulting_does() {
        let bounds_only = json!({"default": {}, "default_request": {},
            "min": {"cpu": "100m", "memory": "256Mi"}, "max": {"memory": "8Gi"}});
        let (a, v) = run(bounds_only.clone(), json!({"name": "c"}));
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(
            added(&a),
            [
                // cpu: only a minimum, so the request is the minimum and there is no limit.
                add("requests", "cpu", json!("100m")),
                // memory: the maximum is the default limit, and the default limit the request
                // (before the minimum is considered).
                add("limits", "memory", json!("8Gi")),
                add("requests", "memory", json!("8Gi")),
            ]
        );
        // A written request is kept and gets the maximum as its limit.
        let (a, v) = run(
            bounds_only.clone(),
            json!({"resources": {"requests": {"memory": "1Gi", "cpu": "2"}}}),
        );
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(added(&a), [add("limits", "memory", json!("8Gi"))]);
        // A written limit is the request (SetDefaults_Pod), not the minimum.
        let (a, _) = run(bounds_only, json!({"resources": {"limits": {"cpu": "500m"}}}));
        assert_eq!(
            added(&a),
            [
                add("requests", "cpu", json!("500m")),
                add("limits", "memory", json!("8Gi")),
                add("requests", "memory", json!("8Gi")),
            ]
        );
        // The upstream footgun, kept: a maximum alone is everyone's default, GPUs included.
        // `default: 0` caps without handing out GPUs.
        let (a, _) = run(
            json!({"default": {}, "default_request": {}, "max": {"nvidia.com/gpu": 8}}),
            json!({}),
        );
        assert_eq!(
            added(&a),
            [
                add("limits", "nvidia.com/gpu", json!(8)),
                add("requests", "nvidia.com/gpu", json!(8)),
            ]
        );
        let (a, v) = run(
            json!({"default": {"nvidia.com/gpu": 0}, "default_request": {},
                   "max": {"nvidia.com/gpu": 8}}),
            json!({"resources": {"limits": {"nvidia.com/gpu": 2}}}),
        );
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(added(&a), [add("requests", "nvidia.com/gpu", json!(2))]);
        // A configured default request wins over the minimum and the maximum.
        let (a, _) = run(
            json!({"default": {}, "default_request": {"memory": "1Gi"},
                   "min": {"memory": "256Mi"}, "max": {"memory": "8Gi"}}),
            json!({}),
        );
        assert_eq!(
            added(&a),
            [
                add("limits", "memory", json!("8Gi")),
                add("requests", "memory", json!("1Gi")),
            ]
        );
    }

    #[test]
    fn defaults_are_checked_like_written_values() {
        let (_, v) = run(
            json!({"default": {"cpu": "4"}, "default_request": {"cpu": "500m"},
                   "max_limit_request_ratio": {"cpu": 4}}),
            json!({}),
        );
        assert_eq!(
            v,
            [
                "C: cpu limit/request ratio is 8 (limit 4 (the default limit), request 500m \
              (the default request)), above the maximum 4"
            ]
        );
    }

    #[test]
    fn a_request_above_the_default_limit_explains_the_fix() {
        let (_, v) = run(json!({}), json!({"resources": {"requests": {"memory": "24Gi"}}}));
        assert_eq!(
            v,
            [
                "C: memory request 24Gi is above the limit 1Gi (the default limit); set \
              resources.limits.memory to at least 24Gi"
            ]
        );
        let (_, v) = run(
            json!({}),
            json!({"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}),
        );
        assert!(
            v[0].contains("the API server refuses a request above its limit"),
            "{v:?}"
        );
    }

    #[test]
    fn malformed_values_are_reported_once() {
        let (_, v) = run(json!({}), json!({"resources": {"limits": {"memory": "1GB"}}}));
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].starts_with("C: memory limit is invalid: quantity \"1GB\""));
        let (a, v) = run(json!({}), json!({"resources": {"limits": "lots"}}));
        assert!(a.is_empty());
        assert_eq!(v, ["C: resources.limits must be a map, not \"lots\""]);
    }
}
