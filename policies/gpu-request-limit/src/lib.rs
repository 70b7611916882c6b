//! `gpu-request-limit`: every GPU a container requests must carry an equal limit.
//!
//! GPUs are extended resources, which Kubernetes never overcommits: a GPU is handed whole to one
//! container, so there is no "burst" above the request. The API server therefore rejects a
//! container whose GPU request has no limit or a different one, and it does so late, when the
//! workload controller creates the Pod: a Deployment, Job or PyTorchJob with a bad template is
//! accepted, and its Pods then silently fail to appear while the training run or inference
//! rollout waits. This policy moves that failure to the moment the template is applied, with a
//! message that says what to write.
//!
//! A limit alone is fine (Kubernetes copies it into the request). Quantities are compared by
//! value, so `"1"`, `1` and `"1000m"` are equal. Fractions of a GPU (`0.5`) are refused with the
//! same reasoning: the device plugin only hands out whole devices.

pub mod settings;

use portcullis_policy_sdk::quantity::Quantity;
use portcullis_policy_sdk::{
    ValidationRequest, ValidationResponse, Value, containers, describe, export_policy, pod_specs,
};

pub use settings::GpuRequestLimitSettings;

export_policy!(GpuRequestLimitSettings, validate);

/// Checks every container of every pod spec in the object and lists all violations.
pub fn validate(request: &ValidationRequest<GpuRequestLimitSettings>) -> ValidationResponse {
    let kind = request.request.kind.kind.as_str();
    let object = &request.request.object;
    let mut violations = Vec::new();
    for (location, pod_spec) in pod_specs(kind, object) {
        for container in containers(pod_spec) {
            let who = describe(kind, object, &location, &container);
            check_container(&request.settings, &who, container.container, &mut violations);
        }
    }
    ValidationResponse::reject_all(&violations)
}

/// Appends to `violations` what is wrong with one container's GPU requests and limits.
///
/// `who` is the message prefix naming the kind, object and container.
pub fn check_container(
    settings: &GpuRequestLimitSettings,
    who: &str,
    container: &Value,
    violations: &mut Vec<String>,
) {
    let section = |name: &str| {
        container
            .get("resources")
            .and_then(|r| r.get(name))
            .and_then(Value::as_object)
    };
    let requests = section("requests");
    let limits = section("limits");

    for (resource, requested) in requests.into_iter().flatten() {
        if !settings.is_gpu(resource) {
            continue;
        }
        let Some(request) = gpu_count(who, "requests", resource, requested, violations) else {
            continue;
        };
        let Some(limited) = limits.and_then(|l| l.get(resource)) else {
            violations.push(format!(
                "{who}: requests {resource}: {} without a limit; GPUs are extended resources \
                 that Kubernetes cannot overcommit, so it rejects a GPU request that has no equal \
                 limit and the Pod never schedules (set limits {resource}: {0}, or only the limit: \
                 the request defaults to it)",
                shown(requested)
            ));
            continue;
        };
        let Some(limit) = gpu_count(who, "limits", resource, limited, violations) else {
            continue;
        };
        if request != limit {
            violations.push(format!(
                "{who}: requests {resource}: {} but limits it to {}; GPUs are extended \
                 resources that Kubernetes cannot overcommit, so the request must equal the limit \
                 or the API server rejects the Pod (set both to the number of GPUs the model needs)",
                shown(requested),
                shown(limited)
            ));
        }
    }

    for (resource, limited) in limits.into_iter().flatten() {
        let requested_too = requests.is_some_and(|r| r.contains_key(resource));
        if settings.is_gpu(resource) && !requested_too {
            gpu_count(who, "limits", resource, limited, violations);
        }
    }
}

/// Parses a GPU quantity, recording why it is unusable: not a quantity, negative, or not whole.
fn gpu_count(
    who: &str,
    section: &str,
    resource: &str,
    raw: &Value,
    violations: &mut Vec<String>,
) -> Option<Quantity> {
    let problem = match Quantity::parse(raw) {
        Err(e) => e,
        Ok(q) if q.is_negative() => "a GPU count cannot be negative".to_string(),
        Ok(q) if q.nanos() % Quantity::from_units(1).nanos() != 0 => {
            "a GPU is allocated whole to one container, never in fractions (share a GPU \
             through MIG or time-slicing resources instead)"
                .to_string()
        }
        Ok(q) => return Some(q),
    };
    violations.push(format!(
        "{who}: {section} {resource}: {} is not a valid GPU count: {problem}",
        shown(raw)
    ));
    None
}

/// A quantity as the user wrote it: strings bare, numbers as numbers.
fn shown(raw: &Value) -> String {
    match raw {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy_sdk::json;

    fn check(container: Value) -> Vec<String> {
        let mut violations = Vec::new();
        let settings = GpuRequestLimitSettings::default();
        check_container(&settings, "Pod p, container \"c\"", &container, &mut violations);
        violations
    }

    fn resources(requests: Value, limits: Value) -> Value {
        json!({"name": "c", "resources": {"requests": requests, "limits": limits}})
    }

    #[test]
    fn equal_quantities_in_any_spelling_pass() {
        let equal = [
            (json!("1"), json!(1)),
            (json!("1000m"), json!("1")),
            (json!(2), json!(2.0)),
            (json!("4"), json!("4")),
        ];
        for (request, limit) in equal {
            let c = resources(
                json!({"nvidia.com/gpu": request}),
                json!({"nvidia.com/gpu": limit}),
            );
            assert_eq!(check(c.clone()), Vec::<String>::new(), "{c}");
        }
    }

    #[test]
    fn a_limit_alone_or_no_gpu_at_all_passes() {
        assert!(check(resources(json!({"cpu": "4"}), json!({"nvidia.com/gpu": 1}))).is_empty());
        assert!(check(json!({"name": "c"})).is_empty());
        assert!(check(json!({"name": "c", "resources": {"requests": null}})).is_empty());
        // Unequal CPU is ordinary bursting and none of this policy's business.
        assert!(check(resources(json!({"cpu": "1"}), json!({"cpu": "4"}))).is_empty());
    }

    #[test]
    fn a_request_without_limit_is_refused_with_the_fix() {
        let v = check(resources(
            json!({"nvidia.com/gpu": "2"}),
            json!({"memory": "8Gi"}),
        ));
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("Pod p, container \"c\": requests nvidia.com/gpu: 2 without a limit"));
        assert!(v[0].contains("set limits nvidia.com/gpu: 2"));
        assert!(check(json!({"resources": {"requests": {"amd.com/gpu": 1}}}))[0].contains("amd.com/gpu"));
    }

    #[test]
    fn unequal_request_and_limit_are_refused_with_both_values() {
        let v = check(resources(
            json!({"nvidia.com/gpu": 1}),
            json!({"nvidia.com/gpu": "2"}),
        ));
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("requests nvidia.com/gpu: 1 but limits it to 2"),
            "{}",
            v[0]
        );
    }

    #[test]
    fn mig_profiles_are_gpus_and_every_violation_is_listed() {
        let v = check(resources(
            json!({"nvidia.com/mig-1g.5gb": 1, "nvidia.com/mig-3g.20gb": 1, "nvidia.com/gpu": 1}),
            json!({"nvidia.com/mig-1g.5gb": 2}),
        ));
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v.iter().any(|m| m.contains("mig-1g.5gb: 1 but limits it to 2")));
        assert!(v.iter().any(|m| m.contains("mig-3g.20gb: 1 without a limit")));
        assert!(v.iter().any(|m| m.contains("nvidia.com/gpu: 1 without a limit")));
    }

    #[test]
    fn fractional_negative_and_malformed_counts_are_refused() {
        let cases = [
            (json!("0.5"), "allocated whole"),
            (json!(-1), "cannot be negative"),
            (json!("1 GPU"), "unknown suffix"),
            (json!(true), "not a quantity"),
        ];
        for (value, reason) in cases {
            let same = resources(json!({"nvidia.com/gpu": value}), json!({"nvidia.com/gpu": value}));
            let v = check(same);
            assert_eq!(v.len(), 1, "{value}: {v:?}");
            assert!(v[0].contains(reason), "{value}: {}", v[0]);
            let limit_only = check(resources(json!({}), json!({"nvidia.com/gpu": value})));
            assert!(limit_only[0].contains("limits nvidia.com/gpu"), "{limit_only:?}");
        }
    }

    #[test]
    fn configured_resources_replace_the_defaults() {
        let settings = GpuRequestLimitSettings {
            gpu_resources: vec!["habana.ai/gaudi".to_string()],
            gpu_resource_prefixes: vec![],
        };
        let mut v = Vec::new();
        let c = resources(json!({"habana.ai/gaudi": 8, "nvidia.com/gpu": 1}), json!({}));
        check_container(&settings, "x", &c, &mut v);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("habana.ai/gaudi: 8 without a limit"));
    }

    #[test]
    fn fixtures() {
        portcullis_policy_sdk::testing::check_fixtures(env!("CARGO_MANIFEST_DIR"), validate);
    }
}
