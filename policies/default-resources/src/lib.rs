//! `default-resources`: LimitRange for type Container, enforced by the webhook for every workload
//! kind.
//!
//! Containers without requests are scheduled as if they needed nothing, so the scheduler packs
//! model servers and feature pipelines onto nodes that cannot hold them, and they are the first
//! evicted under pressure (BestEffort). Containers without a memory limit let one leaking
//! data loader or oversized batch OOM-kill its neighbours. A namespace LimitRange fixes both,
//! but only for bare Pods at creation, only in namespaces someone remembered to equip, and it
//! reports problems when the ReplicaSet or training operator creates the Pod, long after
//! `kubectl apply` said "configured". This policy applies the same defaults and bounds to pod
//! templates (Deployments, Jobs, CronJobs, KServe, Kubeflow, Ray, JobSet) at apply time.
//!
//! - Regular, init and KServe model containers are handled; ephemeral containers are skipped,
//!   because Kubernetes forbids resources on them.
//! - Pods are handled on CREATE only (like LimitRanger: a running Pod's containers cannot be
//!   changed), and so are Jobs (their template is immutable); other templates on CREATE and
//!   UPDATE.
//! - The namespace is the request's, else the object's `metadata.namespace`.
//! - A denial lists every container and resource out of bounds; nothing is mutated then.
//! - See [`container`] for the rules.

pub mod bounds;
pub mod container;
pub mod settings;

use portcullis_policy_sdk::{
    ContainerList, ValidationRequest, ValidationResponse, Value, containers, describe, export_policy, json,
    pod_specs,
};

use crate::bounds::Bounds;
use crate::container::Addition;
pub use settings::{DefaultResourcesSettings, LimitSet};

export_policy!(DefaultResourcesSettings, validate);

/// Applies the defaults in force in the request's namespace, or denies with every violation.
pub fn validate(request: &ValidationRequest<DefaultResourcesSettings>) -> ValidationResponse {
    let review = &request.request;
    let kind = review.kind.kind.as_str();
    if !review.pod_specs_mutable() {
        return ValidationResponse::accept();
    }
    let namespace = review.effective_namespace();
    let bounds = match request.settings.bounds_for(namespace) {
        Ok(bounds) => bounds,
        Err(e) => return ValidationResponse::reject(format!("policy settings are invalid: {e}")),
    };
    let mut object = review.object.clone();
    let outcome = apply(&request.settings, &bounds, kind, &mut object);
    if !outcome.violations.is_empty() {
        ValidationResponse::reject_all(&outcome.violations)
    } else if outcome.changed {
        ValidationResponse::mutate(object)
    } else {
        ValidationResponse::accept()
    }
}

/// What [`apply`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Whether any request or limit was added.
    pub changed: bool,
    /// Every bound broken; when non-empty, `object` was left unchanged.
    pub violations: Vec<String>,
}

/// Plans every container of every pod spec of `object`, then, if none breaks a bound, adds the
/// planned requests and limits. Idempotent: a second call on its own output adds nothing.
pub fn apply(
    settings: &DefaultResourcesSettings,
    bounds: &Bounds,
    kind: &str,
    object: &mut Value,
) -> Outcome {
    let mut violations = Vec::new();
    let mut planned: Vec<(String, Vec<Addition>)> = Vec::new();
    for (location, pod_spec) in pod_specs(kind, object) {
        for c in containers(pod_spec) {
            if c.list == ContainerList::EphemeralContainers {
                continue;
            }
            let who = describe(kind, object, &location, &c);
            let additions = container::plan(settings, bounds, &who, c.container, &mut violations);
            if !additions.is_empty() {
                let pointer = format!("{}{}", location.pointer, c.list.pointer(c.index));
                planned.push((pointer, additions));
            }
        }
    }
    if !violations.is_empty() {
        return Outcome {
            changed: false,
            violations,
        };
    }
    let mut changed = false;
    for (pointer, additions) in planned {
        for addition in additions {
            changed |= insert(object, &pointer, addition);
        }
    }
    Outcome { changed, violations }
}

/// Writes one addition into the container at `pointer`, creating `resources` and its section
/// when absent or null. Planning has already refused non-map `resources`.
fn insert(object: &mut Value, pointer: &str, addition: Addition) -> bool {
    let Some(container) = object.pointer_mut(pointer).and_then(Value::as_object_mut) else {
        return false;
    };
    let resources = container.entry("resources").or_insert_with(|| json!({}));
    if resources.is_null() {
        *resources = json!({});
    }
    let Some(section) = resources
        .as_object_mut()
        .map(|r| r.entry(addition.section.field()).or_insert_with(|| json!({})))
    else {
        return false;
    };
    if section.is_null() {
        *section = json!({});
    }
    match section.as_object_mut() {
        Some(map) if !map.contains_key(&addition.resource) => {
            map.insert(addition.resource, addition.value);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(value: Value) -> DefaultResourcesSettings {
        serde_json::from_value(value).expect("settings")
    }

    /// Applies twice, asserting the second pass changes nothing, and returns the first result.
    fn applied(
        s: &DefaultResourcesSettings,
        ns: Option<&str>,
        kind: &str,
        object: &Value,
    ) -> (Value, Outcome) {
        let bounds = s.bounds_for(ns).expect("bounds");
        let mut once = object.clone();
        let outcome = apply(s, &bounds, kind, &mut once);
        let mut twice = once.clone();
        let again = apply(s, &bounds, kind, &mut twice);
        assert!(!again.changed, "second pass changed {once} into {twice}");
        assert_eq!(once, twice);
        assert_eq!(again.violations, outcome.violations);
        (once, outcome)
    }

    #[test]
    fn a_bare_deployment_gets_defaults_and_nothing_else_changes() {
        let d = json!({"kind": "Deployment", "metadata": {"name": "fraud-model"},
            "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "f"}}, "spec": {
                "containers": [{"name": "model", "image": "m:1", "x-unknown": true}],
                "initContainers": [{"name": "fetch", "image": "f:1", "resources": null}],
                "ephemeralContainers": [{"name": "debug", "image": "busybox"}]}}}});
        let (out, outcome) = applied(&DefaultResourcesSettings::default(), None, "Deployment", &d);
        assert!(outcome.changed && outcome.violations.is_empty());
        let defaults = json!({"requests": {"cpu": "250m", "memory": "512Mi"},
                              "limits": {"memory": "1Gi"}});
        let mut expected = d.clone();
        expected["spec"]["template"]["spec"]["containers"][0]["resources"] = defaults.clone();
        expected["spec"]["template"]["spec"]["initContainers"][0]["resources"] = defaults;
        assert_eq!(out, expected);
    }

    #[test]
    fn a_violation_anywhere_denies_without_mutating() {
        let s = settings(json!({"max": {"memory": "8Gi"}, "default": {"memory": "1Gi"}}));
        let job = json!({"kind": "Job", "metadata": {"name": "train"}, "spec": {"template": {"spec": {
            "containers": [{"name": "ok"}, {"name": "big", "resources": {"limits": {"memory": "64Gi"}}}]}}}});
        let (out, outcome) = applied(&s, None, "Job", &job);
        assert_eq!(out, job);
        assert!(!outcome.changed);
        assert_eq!(
            outcome.violations,
            ["Job train, container \"big\": memory limit 64Gi is above the maximum 8Gi"]
        );
    }

    #[test]
    fn the_namespace_picks_the_overrides() {
        let s = settings(json!({"namespaces": {"ml-training": {"default": {"memory": "16Gi"}}}}));
        let pod = json!({"kind": "Pod", "metadata": {"name": "p", "namespace": "ml-training"},
                         "spec": {"containers": [{"name": "c"}]}});
        let (out, _) = applied(&s, Some("ml-training"), "Pod", &pod);
        assert_eq!(
            out["spec"]["containers"][0]["resources"]["limits"]["memory"],
            "16Gi"
        );
        assert_eq!(
            out["spec"]["containers"][0]["resources"]["requests"]["memory"],
            "512Mi"
        );
        let (out, _) = applied(&s, Some("ml-prod"), "Pod", &pod);
        assert_eq!(
            out["spec"]["containers"][0]["resources"]["limits"]["memory"],
            "1Gi"
        );
    }

    #[test]
    fn operations_and_namespace_fallback() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ml-training"},
            "spec": {"containers": [{"name": "c"}]}});
        let s = json!({"namespaces": {"ml-training": {"default": {"memory": "16Gi"}}}});
        for (operation, namespace, limit) in [
            ("CREATE", Some("ml-training"), Some("16Gi")),
            ("CREATE", None, Some("16Gi")),
            ("UPDATE", Some("ml-training"), None),
            ("DELETE", Some("ml-training"), None),
        ] {
            let mut review = json!({"uid": "u", "kind": {"version": "v1", "kind": "Pod"},
                                    "operation": operation, "object": pod});
            if let Some(ns) = namespace {
                review["namespace"] = json!(ns);
            }
            let request: ValidationRequest<DefaultResourcesSettings> =
                serde_json::from_value(json!({"request": review, "settings": s})).expect("valid request");
            let response = validate(&request);
            assert!(response.accepted, "{operation}");
            let got = response
                .mutated_object
                .as_ref()
                .and_then(|o| o.pointer("/spec/containers/0/resources/limits/memory"))
                .and_then(Value::as_str);
            assert_eq!(got, limit, "{operation} {namespace:?}");
        }
    }

    #[test]
    fn fully_specified_containers_are_accepted_unchanged() {
        let pod = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{
            "name": "c", "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                                       "limits": {"memory": "2Gi"}}}]}});
        let (out, outcome) = applied(&DefaultResourcesSettings::default(), None, "Pod", &pod);
        assert_eq!(outcome, Outcome::default());
        assert_eq!(out, pod);
    }

    /// Properties over random containers: applying is idempotent, a denial leaves the object
    /// untouched, and an admitted container ends with a request for every configured resource.
    #[test]
    fn random_containers_are_defaulted_idempotently() {
        let s = settings(json!({
            "default": {"memory": "2Gi", "cpu": "2"}, "default_request": {"memory": "1Gi"},
            "min": {"memory": "64Mi"}, "max": {"memory": "16Gi", "cpu": "8"},
            "max_limit_request_ratio": {"cpu": 4}
        }));
        let values = [
            json!("100m"),
            json!("1"),
            json!(2),
            json!("4Gi"),
            json!("32Gi"),
            json!("0"),
            json!("128Mi"),
            json!("1GB"),
        ];
        let resources = ["cpu", "memory", "nvidia.com/gpu", "ephemeral-storage"];
        let mut rng = portcullis_policy_sdk::testing::Rng::new(0xDEF0);
        let (mut admitted, mut denied) = (0, 0);
        for _ in 0..2_000 {
            let mut containers = Vec::new();
            for i in 0..=rng.below(2) {
                let mut sections = serde_json::Map::new();
                for section in ["requests", "limits"] {
                    let mut map = serde_json::Map::new();
                    for resource in resources {
                        if rng.below(3) == 0 {
                            map.insert(resource.into(), values[rng.below(values.len())].clone());
                        }
                    }
                    sections.insert(section.into(), Value::Object(map));
                }
                containers.push(json!({"name": format!("c{i}"), "resources": sections}));
            }
            let job = json!({"kind": "Job", "metadata": {"name": "j"},
                             "spec": {"template": {"spec": {"containers": containers}}}});
            let (out, outcome) = applied(&s, None, "Job", &job);
            if outcome.violations.is_empty() {
                admitted += 1;
                for c in out["spec"]["template"]["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    for resource in ["cpu", "memory"] {
                        assert!(c["resources"]["requests"].get(resource).is_some(), "{c}");
                        assert!(c["resources"]["limits"].get(resource).is_some(), "{c}");
                    }
                }
            } else {
                denied += 1;
                assert_eq!(out, job);
            }
        }
        assert!(
            admitted > 50 && denied > 50,
            "admitted {admitted}, denied {denied}"
        );
    }

    #[test]
    fn fixtures() {
        portcullis_policy_sdk::testing::check_fixtures(env!("CARGO_MANIFEST_DIR"), validate);
    }
}
