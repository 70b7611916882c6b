//! Bounds: the LimitRange maps in force for one request, parsed, defaulted and checked, per
//! resource.
//!
//! Settings keep quantities as JSON values so that defaults are written back exactly as
//! configured; this module pairs each with its parsed [`Quantity`] for comparisons, fills the
//! missing defaults exactly as the API server defaults a LimitRange of type Container
//! (`SetDefaults_LimitRangeItem` in kubernetes/kubernetes pkg/apis/core/v1/defaults.go:
//! `default` ← `max`, then `defaultRequest` ← `default` ← `min`), and then checks the
//! consistency rules `ValidateLimitRange` (pkg/apis/core/validation/validation.go) applies to the
//! defaulted item, so that a contradictory configuration (a default above the maximum) fails at
//! load time rather than denying every pod.

use std::collections::BTreeMap;

use portcullis_policy_sdk::quantity::Quantity;
use serde_json::Value;

use crate::settings::LimitSet;

/// One of the five LimitRange maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `default`: limits for containers that set none.
    Default,
    /// `default_request`: requests for containers that set none.
    DefaultRequest,
    /// `min`: lowest request and limit.
    Min,
    /// `max`: highest limit and request.
    Max,
    /// `max_limit_request_ratio`: highest limit / request.
    MaxLimitRequestRatio,
}

impl Setting {
    /// The settings key.
    pub fn key(&self) -> &'static str {
        match self {
            Setting::Default => "default",
            Setting::DefaultRequest => "default_request",
            Setting::Min => "min",
            Setting::Max => "max",
            Setting::MaxLimitRequestRatio => "max_limit_request_ratio",
        }
    }
}

/// One quantity in force: as written, its value, and, when LimitRange defaulting filled it in,
/// the map it was first configured in.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    /// The value as configured, written verbatim into manifests.
    pub raw: Value,
    /// Its exact value.
    pub quantity: Quantity,
    /// `None` when configured in its own map; else the map the value was copied from (`max` for
    /// a `default_request` copied from a `default` that was itself copied from `max`).
    pub copied_from: Option<Setting>,
}

impl Bound {
    /// The configured text, for messages.
    pub fn shown(&self) -> String {
        shown(&self.raw)
    }

    /// This bound filled into an unset slot of another map, remembering where it came from.
    fn copied(&self, from: Setting) -> Bound {
        Bound {
            copied_from: self.copied_from.or(Some(from)),
            ..self.clone()
        }
    }

    /// Whether the value was configured in its own map rather than copied by defaulting.
    fn configured(&self) -> bool {
        self.copied_from.is_none()
    }

    /// `<map>.<resource> <value>`, and where a copied value came from, for settings errors.
    fn named(&self, setting: Setting, resource: &str) -> String {
        let copied = match self.copied_from {
            Some(from) => format!(" (copied from {}.{resource})", from.key()),
            None => String::new(),
        };
        format!("{}.{resource} {}{copied}", setting.key(), self.shown())
    }
}

/// What is configured for one resource.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceBounds {
    /// Default limit.
    pub default: Option<Bound>,
    /// Default request.
    pub default_request: Option<Bound>,
    /// Minimum request and limit.
    pub min: Option<Bound>,
    /// Maximum limit and request.
    pub max: Option<Bound>,
    /// Maximum limit / request.
    pub max_limit_request_ratio: Option<Bound>,
}

/// Every configured resource's bounds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bounds {
    by_resource: BTreeMap<String, ResourceBounds>,
}

impl Bounds {
    /// Parses a merged [`LimitSet`], fills the defaults LimitRange defaulting fills, and checks
    /// the result. Errors name the map and resource (`max.memory: ...`).
    pub fn parse(set: &LimitSet) -> Result<Bounds, String> {
        let mut by_resource: BTreeMap<String, ResourceBounds> = BTreeMap::new();
        let maps = [
            (Setting::Default, &set.default),
            (Setting::DefaultRequest, &set.default_request),
            (Setting::Min, &set.min),
            (Setting::Max, &set.max),
            (Setting::MaxLimitRequestRatio, &set.max_limit_request_ratio),
        ];
        for (setting, map) in maps {
            let key = setting.key();
            for (resource, raw) in map {
                if resource.is_empty() {
                    return Err(format!("{key}: a resource name must not be empty"));
                }
                let quantity = Quantity::parse(raw).map_err(|e| format!("{key}.{resource}: {e}"))?;
                if quantity.is_negative() {
                    return Err(format!("{key}.{resource}: {} must not be negative", shown(raw)));
                }
                let bound = Bound {
                    raw: raw.clone(),
                    quantity,
                    copied_from: None,
                };
                *by_resource.entry(resource.clone()).or_default().slot(setting) = Some(bound);
            }
        }
        for (resource, bounds) in &mut by_resource {
            bounds.fill_defaults();
            bounds.check(resource)?;
        }
        Ok(Bounds { by_resource })
    }

    /// The bounds of `resource`, if any is configured.
    pub fn get(&self, resource: &str) -> Option<&ResourceBounds> {
        self.by_resource.get(resource)
    }

    /// Configured resource names, sorted.
    pub fn resources(&self) -> impl Iterator<Item = &str> {
        self.by_resource.keys().map(String::as_str)
    }
}

impl ResourceBounds {
    /// The field holding `setting`.
    fn slot(&mut self, setting: Setting) -> &mut Option<Bound> {
        match setting {
            Setting::Default => &mut self.default,
            Setting::DefaultRequest => &mut self.default_request,
            Setting::Min => &mut self.min,
            Setting::Max => &mut self.max,
            Setting::MaxLimitRequestRatio => &mut self.max_limit_request_ratio,
        }
    }

    /// `SetDefaults_LimitRangeItem` for type Container, in its order: an unset default limit
    /// is the maximum; then an unset default request is the default limit, else the minimum.
    /// So a container that sets nothing gets a limit whenever a maximum exists and a request
    /// whenever a minimum exists, and is never denied for leaving them out.
    fn fill_defaults(&mut self) {
        if self.default.is_none() {
            self.default = self.max.as_ref().map(|max| max.copied(Setting::Max));
        }
        if self.default_request.is_none() {
            self.default_request = match (&self.default, &self.min) {
                (Some(default), _) => Some(default.copied(Setting::Default)),
                (None, Some(min)) => Some(min.copied(Setting::Min)),
                (None, None) => None,
            };
        }
    }

    /// `ValidateLimitRange`'s rules for one resource of a defaulted item, in its order: min ≤
    /// max, min ≤ default request ≤ max, default request ≤ default, min ≤ default ≤ max, a
    /// ratio of at least 1 and at most max / min, and, for a resource the API server never
    /// overcommits (extended resources such as GPUs, hugepages), default request = default.
    ///
    /// The order checks compare configured values only: a copy equals the value it was copied
    /// from, so each conflict of a copy is a conflict between two configured values, which is
    /// reported instead, naming what the operator wrote. The set of settings refused is the
    /// API server's.
    fn check(&self, resource: &str) -> Result<(), String> {
        use Setting::{Default, DefaultRequest, Max, Min};
        let ordered = [
            (Min, &self.min, Max, &self.max),
            (Min, &self.min, DefaultRequest, &self.default_request),
            (DefaultRequest, &self.default_request, Max, &self.max),
            (DefaultRequest, &self.default_request, Default, &self.default),
            (Min, &self.min, Default, &self.default),
            (Default, &self.default, Max, &self.max),
        ];
        for (low_setting, low, high_setting, high) in ordered {
            if let (Some(low), Some(high)) = (low, high)
                && low.configured()
                && high.configured()
                && low.quantity > high.quantity
            {
                return Err(format!(
                    "{} is above {}",
                    low.named(low_setting, resource),
                    high.named(high_setting, resource)
                ));
            }
        }
        if let Some(ratio) = &self.max_limit_request_ratio {
            if ratio.quantity < Quantity::from_units(1) {
                return Err(format!(
                    "max_limit_request_ratio.{resource}: {} must be at least 1 (a limit is never \
                     below its request)",
                    ratio.shown()
                ));
            }
            if let (Some(min), Some(max)) = (&self.min, &self.max)
                && ratio_above_max_over_min(ratio.quantity, min.quantity, max.quantity)
            {
                return Err(format!(
                    "max_limit_request_ratio.{resource}: {} is above max/min ({} / {}), a ratio \
                     no container within both bounds can reach",
                    ratio.shown(),
                    max.shown(),
                    min.shown()
                ));
            }
        }
        if let (Some(default), Some(request)) = (&self.default, &self.default_request)
            && !overcommit_allowed(resource)
            && default.quantity != request.quantity
        {
            return Err(format!(
                "{} differs from {}; {resource} cannot be overcommitted, so its request must \
                 equal its limit",
                request.named(DefaultRequest, resource),
                default.named(Default, resource)
            ));
        }
        Ok(())
    }
}

/// Whether `ratio` > `max` / `min`, exactly (no floating point): `ratio·min > max`. A zero
/// minimum makes max / min infinite, as in the API server's float division.
fn ratio_above_max_over_min(ratio: Quantity, min: Quantity, max: Quantity) -> bool {
    if min.is_zero() {
        return false;
    }
    // ratio·min is in nano² units; max·10⁹ is too, and fits by Quantity's invariant.
    let scaled_max = max.nanos() * Quantity::from_units(1).nanos();
    ratio
        .nanos()
        .checked_mul(min.nanos())
        .is_none_or(|product| product > scaled_max)
}

/// `IsOvercommitAllowed` (pkg/apis/core/helper/helpers.go): native resources — unprefixed or
/// under `kubernetes.io/` — except hugepages. Extended resources (GPUs) are never overcommitted,
/// so their request must equal their limit.
pub fn overcommit_allowed(resource: &str) -> bool {
    let native = !resource.contains('/') || resource.contains("kubernetes.io/");
    native && !resource.starts_with("hugepages-")
}

/// A quantity as written: strings bare, numbers as numbers.
pub fn shown(raw: &Value) -> String {
    match raw {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(value: Value) -> LimitSet {
        serde_json::from_value(value).expect("limit set")
    }

    #[test]
    fn pairs_raw_values_with_quantities() {
        let b = Bounds::parse(&set(json!({"default": {"memory": "1Gi", "nvidia.com/gpu": 1},
                                          "min": {"memory": 1048576}})))
        .expect("valid");
        let memory = b.get("memory").expect("memory");
        assert_eq!(memory.default.as_ref().map(Bound::shown).as_deref(), Some("1Gi"));
        assert_eq!(memory.min.as_ref().map(Bound::shown).as_deref(), Some("1048576"));
        assert_eq!(b.resources().collect::<Vec<_>>(), ["memory", "nvidia.com/gpu"]);
    }

    /// `SetDefaults_LimitRangeItem` (kubernetes/kubernetes pkg/apis/core/v1/defaults.go), in
    /// its order: `default` ← `max`, then `defaultRequest` ← `default` ← `min`.
    #[test]
    fn unset_defaults_are_filled_as_the_api_server_fills_them() {
        let b = Bounds::parse(&set(json!({
            "max": {"memory": "8Gi", "cpu": "4"},
            "min": {"memory": "1Gi", "cpu": "100m", "ephemeral-storage": "1Gi"},
            "default": {"cpu": "2"},
            "default_request": {"ephemeral-storage": "2Gi"}
        })))
        .expect("valid");
        let get = |resource: &str| b.get(resource).cloned().expect("resource");
        let filled = |bound: Option<Bound>| bound.map(|b| (b.shown(), b.copied_from));
        // max → default → defaultRequest: the request copies max, not min.
        assert_eq!(
            filled(get("memory").default),
            Some(("8Gi".into(), Some(Setting::Max)))
        );
        assert_eq!(
            filled(get("memory").default_request),
            Some(("8Gi".into(), Some(Setting::Max)))
        );
        // A configured default wins over max, and is the request.
        assert_eq!(filled(get("cpu").default), Some(("2".into(), None)));
        assert_eq!(
            filled(get("cpu").default_request),
            Some(("2".into(), Some(Setting::Default)))
        );
        // No max and no default: no default limit; a configured request stays.
        assert_eq!(filled(get("ephemeral-storage").default), None);
        assert_eq!(
            filled(get("ephemeral-storage").default_request),
            Some(("2Gi".into(), None))
        );
        let only_min = Bounds::parse(&set(json!({"min": {"cpu": "100m"}}))).expect("valid");
        let cpu = only_min.get("cpu").expect("cpu");
        assert_eq!(cpu.default, None);
        assert_eq!(
            filled(cpu.default_request.clone()),
            Some(("100m".into(), Some(Setting::Min)))
        );
    }

    #[test]
    fn consistency_rules() {
        let ok = set(json!({"min": {"cpu": "100m"}, "default_request": {"cpu": "250m"},
                            "default": {"cpu": "1"}, "max": {"cpu": "1000m"},
                            "max_limit_request_ratio": {"cpu": 1}}));
        assert!(Bounds::parse(&ok).is_ok());
        let bad = [
            (
                json!({"min": {"cpu": "1"}, "max": {"cpu": "500m"}}),
                "min.cpu 1 is above max.cpu 500m",
            ),
            (
                json!({"min": {"cpu": "1"}, "default_request": {"cpu": "500m"}}),
                "min.cpu",
            ),
            (
                json!({"default": {"cpu": "2"}, "max": {"cpu": "1"}}),
                "default.cpu 2 is above max.cpu 1",
            ),
            (
                json!({"max_limit_request_ratio": {"memory": "999m"}}),
                "at least 1",
            ),
            (
                json!({"max": {"memory": "lots"}}),
                "max.memory: quantity \"lots\"",
            ),
            (
                json!({"min": {"": "1"}}),
                "min: a resource name must not be empty",
            ),
            // The API server refuses a default request above the maximum even when the default
            // limit is unset (it would be the maximum); the error names what was written.
            (
                json!({"default_request": {"cpu": "2"}, "max": {"cpu": "1"}}),
                "default_request.cpu 2 is above max.cpu 1",
            ),
            // validation.go: "ratio 10 is greater than max/min = 4.000000".
            (
                json!({"min": {"memory": "512Mi"}, "max": {"memory": "2Gi"},
                       "max_limit_request_ratio": {"memory": 10}}),
                "max_limit_request_ratio.memory: 10 is above max/min (2Gi / 512Mi)",
            ),
            // Extended resources and hugepages are never overcommitted (IsOvercommitAllowed).
            (
                json!({"default": {"nvidia.com/gpu": 1}, "default_request": {"nvidia.com/gpu": 0}}),
                "default_request.nvidia.com/gpu 0 differs from default.nvidia.com/gpu 1",
            ),
            (
                json!({"max": {"hugepages-2Mi": "1Gi"}, "default_request": {"hugepages-2Mi": "512Mi"}}),
                "default_request.hugepages-2Mi 512Mi differs from default.hugepages-2Mi 1Gi \
                 (copied from max.hugepages-2Mi)",
            ),
        ];
        for (value, message) in bad {
            let e = Bounds::parse(&set(value.clone())).expect_err("inconsistent");
            assert!(e.contains(message), "{value}: {e}");
        }
        let fine = [
            // ratio = max/min exactly, and a zero minimum (max/min is infinite).
            json!({"min": {"memory": "512Mi"}, "max": {"memory": "2Gi"},
                   "max_limit_request_ratio": {"memory": 4}}),
            json!({"min": {"cpu": 0}, "max": {"cpu": "1"}, "max_limit_request_ratio": {"cpu": 100}}),
            // Native resources, prefixed or not, may be overcommitted.
            json!({"default": {"kubernetes.io/x": 2, "ephemeral-storage": "2Gi"},
                   "default_request": {"kubernetes.io/x": 1, "ephemeral-storage": "1Gi"}}),
            json!({"default": {"nvidia.com/gpu": 1}}),
        ];
        for value in fine {
            assert!(Bounds::parse(&set(value.clone())).is_ok(), "{value}");
        }
    }
}
