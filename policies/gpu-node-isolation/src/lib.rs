//! `gpu-node-isolation`: only pods that use a GPU may tolerate GPU taints.
//!
//! GPU node pools are tainted so that ordinary pods stay off them. A pod that tolerates the
//! taint but requests no GPU (often a copy-pasted toleration, or a catch-all `operator: Exists`)
//! lands on a GPU node and takes the CPU and memory the GPU jobs need: the GPUs sit idle and
//! training jobs stay Pending on the most expensive nodes in the cluster. This policy rejects a
//! pod spec that tolerates a GPU taint (matched with its effect, as the scheduler matches it:
//! see [`toleration`]) while none of its containers requests a GPU (a non-zero GPU resource in
//! requests or limits, init containers included).
//!
//! Node agents (DaemonSets such as the device plugin, the DCGM exporter or log collectors) must
//! run on every node and are exempt, as are Pods whose controller is of an exempt kind. The
//! default configuration runs this policy in monitor mode, where the webhook turns a rejection
//! into a warning.

pub mod settings;
pub mod toleration;

use portcullis_policy_sdk::quantity::Quantity;
use portcullis_policy_sdk::{
    ValidationRequest, ValidationResponse, Value, containers, describe_pod_spec, export_policy, pod_specs,
};

pub use settings::Settings;

/// Rejects pod specs that tolerate a GPU taint without requesting a GPU.
pub fn validate(request: &ValidationRequest<Settings>) -> ValidationResponse {
    let settings = &request.settings;
    let kind = request.request.kind.kind.as_str();
    let object = &request.request.object;
    let is_pod = kind == "Pod" && request.request.kind.group.is_empty();
    if settings.is_exempt(kind) || (is_pod && owned_by_exempt(settings, object)) {
        return ValidationResponse::accept();
    }
    let mut violations = Vec::new();
    for (location, spec) in pod_specs(kind, object) {
        let Some(ticket) = gpu_toleration(settings, spec) else {
            continue;
        };
        if !requests_gpu(settings, spec) {
            violations.push(format!(
                "{}: {ticket}, but no container requests a GPU; remove the toleration or request a GPU",
                describe_pod_spec(kind, object, &location),
            ));
        }
    }
    ValidationResponse::reject_all(&violations)
}

/// Describes the first toleration that tolerates a GPU taint, if any.
pub fn gpu_toleration(settings: &Settings, pod_spec: &Value) -> Option<String> {
    let tolerations = pod_spec.get("tolerations").and_then(Value::as_array)?;
    tolerations.iter().enumerate().find_map(|(i, toleration)| {
        let taint = settings
            .gpu_taints
            .iter()
            .find(|taint| toleration::tolerates(toleration, taint))?;
        let field = |name: &str| toleration.get(name).and_then(Value::as_str).unwrap_or("");
        Some(if field("key").is_empty() && field("operator") == "Exists" {
            let effect = match field("effect") {
                "" => String::new(),
                effect => format!("{effect} "),
            };
            format!("tolerations[{i}] tolerates every {effect}taint, GPU taint \"{taint}\" included")
        } else {
            format!("tolerations[{i}] tolerates GPU taint \"{taint}\"")
        })
    })
}

/// Whether any container requests or limits a non-zero amount of a GPU resource. A quantity
/// that does not parse counts as a request: the API server rejects it anyway, and this policy
/// should not add a misleading second complaint.
pub fn requests_gpu(settings: &Settings, pod_spec: &Value) -> bool {
    containers(pod_spec).iter().any(|container| {
        ["requests", "limits"].iter().any(|section| {
            let amounts = container
                .container
                .get("resources")
                .and_then(|r| r.get(*section))
                .and_then(Value::as_object);
            amounts.into_iter().flatten().any(|(resource, amount)| {
                settings.is_gpu_resource(resource) && Quantity::parse(amount).map_or(true, |q| !q.is_zero())
            })
        })
    })
}

/// Whether a Pod's controller is of an exempt kind (a DaemonSet's Pods). Only the controller
/// counts (`controller: true`, as the DaemonSet controller sets it), and only for Pods: another
/// object with such an ownerReference is judged on its own spec.
fn owned_by_exempt(settings: &Settings, object: &Value) -> bool {
    let owners = object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array);
    owners.into_iter().flatten().any(|owner| {
        owner.get("controller").and_then(Value::as_bool) == Some(true)
            && owner
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|kind| settings.is_exempt(kind))
    })
}

export_policy!(Settings, validate);

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy_sdk::json;

    #[test]
    fn tolerations() {
        let s = Settings::default();
        let spec = |tolerations: Value| json!({"tolerations": tolerations});
        assert_eq!(gpu_toleration(&s, &json!({})), None);
        assert_eq!(
            gpu_toleration(
                &s,
                &spec(json!([{"key": "dedicated", "operator": "Equal", "value": "ml"}]))
            ),
            None
        );
        let t = gpu_toleration(
            &s,
            &spec(
                json!([{"key": "dedicated"}, {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]),
            ),
        );
        assert_eq!(
            t.as_deref(),
            Some("tolerations[1] tolerates GPU taint \"nvidia.com/gpu:NoSchedule\"")
        );
        assert_eq!(
            gpu_toleration(&s, &spec(json!([{"operator": "Exists"}]))).as_deref(),
            Some("tolerations[0] tolerates every taint, GPU taint \"nvidia.com/gpu:NoSchedule\" included")
        );
        assert_eq!(
            gpu_toleration(&s, &spec(json!([{"operator": "Exists", "effect": "NoSchedule"}]))).as_deref(),
            Some(
                "tolerations[0] tolerates every NoSchedule taint, GPU taint \"nvidia.com/gpu:NoSchedule\" \
                 included"
            )
        );
        // Another effect does not get past a NoSchedule taint (toleration.go ToleratesTaint).
        for other in [
            json!([{"operator": "Exists", "effect": "NoExecute"}]),
            json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]),
            json!([{"key": "amd.com/gpu", "operator": "Exists", "effect": "PreferNoSchedule"}]),
        ] {
            assert_eq!(gpu_toleration(&s, &spec(other.clone())), None, "{other}");
        }
        // An empty key with Equal (refused by the API server in Pods and templates, possible in
        // CRDs) matches every key with that value, and the GPU taint's value is not pinned.
        assert_eq!(
            gpu_toleration(&s, &spec(json!([{"operator": "Equal", "value": "x"}]))).as_deref(),
            Some("tolerations[0] tolerates GPU taint \"nvidia.com/gpu:NoSchedule\"")
        );
    }

    #[test]
    fn gpu_requests() {
        let s = Settings::default();
        let with =
            |resources: Value| json!({"containers": [{"name": "a"}, {"name": "b", "resources": resources}]});
        assert!(requests_gpu(&s, &with(json!({"limits": {"nvidia.com/gpu": 1}}))));
        assert!(requests_gpu(
            &s,
            &with(json!({"requests": {"nvidia.com/gpu": "2"}}))
        ));
        assert!(requests_gpu(
            &s,
            &with(json!({"limits": {"nvidia.com/mig-1g.5gb": "1"}}))
        ));
        assert!(!requests_gpu(
            &s,
            &with(json!({"limits": {"nvidia.com/gpu": "0"}}))
        ));
        assert!(!requests_gpu(
            &s,
            &with(json!({"limits": {"cpu": "4", "memory": "16Gi"}}))
        ));
        assert!(requests_gpu(&s, &with(json!({"limits": {"amd.com/gpu": "one"}}))));
        let init =
            json!({"initContainers": [{"resources": {"limits": {"nvidia.com/gpu": 1}}}], "containers": [{}]});
        assert!(requests_gpu(&s, &init));
    }

    #[test]
    fn fixtures() {
        portcullis_policy_sdk::testing::check_fixtures(env!("CARGO_MANIFEST_DIR"), validate);
    }
}
