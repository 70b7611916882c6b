//! `gpu-tolerations`: a pod that asks for GPUs gets the toleration for the GPU nodes' taint.
//!
//! GPU node pools are tainted so that CPU-only pods cannot fill expensive nodes. The cost of that
//! protection falls on ML engineers: a training Job or inference Deployment that requests
//! `nvidia.com/gpu` but forgets the toleration stays Pending forever, with a scheduler event about
//! untolerated taints that few people read. Kubernetes already knows the pod wants a GPU (it is in
//! its resources), so this policy adds the matching toleration, and optionally node labels, to
//! every pod spec whose containers request a GPU resource, and leaves every other pod alone.
//!
//! - A toleration is added only if no existing one covers it (see [`toleration`]).
//! - `nodeSelector` labels are merged, never overwritten: a pod that already pins a different
//!   value (say another GPU model) keeps it, and the response carries a warning. Overwriting would
//!   silently move the workload; refusing would block a deliberate choice.
//! - Pods are mutated on CREATE only: the API server forbids changing a running Pod's
//!   `nodeSelector`, and a Pod that was admitted already got its tolerations then. So are Jobs,
//!   whose `spec.template` is immutable. Other templates (Deployments, CronJobs, ML CRDs) are
//!   mutated on CREATE and UPDATE (see `AdmissionRequest::pod_specs_mutable`).
//! - A quantity of zero is no request; a malformed one counts as a request (the API server will
//!   refuse it anyway, and a toleration too many is harmless).

pub mod settings;
pub mod toleration;

use portcullis_policy_sdk::quantity::Quantity;
use portcullis_policy_sdk::{
    ValidationRequest, ValidationResponse, Value, containers, describe_pod_spec, export_policy,
    pod_spec_pointers,
};
use serde_json::Map;

pub use settings::{GpuPlacement, GpuTolerationsSettings};
use toleration::Toleration;

export_policy!(GpuTolerationsSettings, validate);

/// Adds GPU tolerations and node labels where pods need them; never rejects.
pub fn validate(request: &ValidationRequest<GpuTolerationsSettings>) -> ValidationResponse {
    let review = &request.request;
    let kind = review.kind.kind.as_str();
    if !review.pod_specs_mutable() {
        return ValidationResponse::accept();
    }
    let mut object = review.object.clone();
    let outcome = place(&request.settings, kind, &mut object);
    ValidationResponse::mutated_if(outcome.changed, object, outcome.warnings)
}

/// What [`place`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the object was modified.
    pub changed: bool,
    /// Node-selector conflicts and malformed fields that were left as they were.
    pub warnings: Vec<String>,
}

/// Mutates every pod spec of `object` that requests a GPU. Idempotent: a second call on its own
/// output changes nothing.
pub fn place(settings: &GpuTolerationsSettings, kind: &str, object: &mut Value) -> Outcome {
    let mut outcome = Outcome::default();
    for location in pod_spec_pointers(kind, object) {
        let who = describe_pod_spec(kind, object, &location);
        let Some(pod_spec) = object.pointer_mut(&location.pointer) else {
            continue;
        };
        let placements = placements(settings, pod_spec);
        if placements.is_empty() {
            continue;
        }
        let Some(pod_spec) = pod_spec.as_object_mut() else {
            continue;
        };
        let tolerations: Vec<&Toleration> = placements.iter().flat_map(|(_, p)| &p.tolerations).collect();
        outcome.changed |= add_tolerations(pod_spec, &tolerations, &who, &mut outcome.warnings);
        for (resource, placement) in &placements {
            outcome.changed |=
                merge_node_selector(pod_spec, resource, placement, &who, &mut outcome.warnings);
        }
    }
    outcome
}

/// The placements for the GPU resources that a pod spec's containers request (in requests or
/// limits, non-zero), each once, keyed by the settings entry that supplied it.
fn placements<'s>(
    settings: &'s GpuTolerationsSettings,
    pod_spec: &Value,
) -> Vec<(&'s str, &'s GpuPlacement)> {
    let mut found: Vec<(&str, &GpuPlacement)> = Vec::new();
    for container in containers(pod_spec) {
        let resources = container.container.get("resources");
        for section in ["requests", "limits"] {
            let entries = resources.and_then(|r| r.get(section)).and_then(Value::as_object);
            for (resource, quantity) in entries.into_iter().flatten() {
                if Quantity::parse(quantity).is_ok_and(|q| q.is_zero()) {
                    continue;
                }
                for (key, placement) in settings.placements_for(resource) {
                    if !found.iter().any(|(_, p)| std::ptr::eq(*p, placement)) {
                        found.push((key, placement));
                    }
                }
            }
        }
    }
    found
}

/// Appends each toleration no existing entry covers; true if any was added.
fn add_tolerations(
    pod_spec: &mut Map<String, Value>,
    wanted: &[&Toleration],
    who: &str,
    warnings: &mut Vec<String>,
) -> bool {
    if wanted.is_empty() {
        return false;
    }
    let list = pod_spec
        .entry("tolerations")
        .or_insert_with(|| Value::Array(Vec::new()));
    if list.is_null() {
        *list = Value::Array(Vec::new());
    }
    let Some(list) = list.as_array_mut() else {
        warnings.push(format!(
            "{who}: tolerations is not a list, so the GPU node tolerations were not added"
        ));
        return false;
    };
    let before = list.len();
    for toleration in wanted {
        if !list.iter().any(|existing| toleration.is_covered_by(existing)) {
            list.push(toleration.to_value());
        }
    }
    list.len() > before
}

/// Merges a placement's node labels into `nodeSelector`; true if any was added.
fn merge_node_selector(
    pod_spec: &mut Map<String, Value>,
    resource: &str,
    placement: &GpuPlacement,
    who: &str,
    warnings: &mut Vec<String>,
) -> bool {
    if placement.node_selector.is_empty() {
        return false;
    }
    let selector = pod_spec
        .entry("nodeSelector")
        .or_insert_with(|| Value::Object(Map::new()));
    if selector.is_null() {
        *selector = Value::Object(Map::new());
    }
    let Some(selector) = selector.as_object_mut() else {
        warnings.push(format!(
            "{who}: nodeSelector is not a map, so the {resource} node labels were not added"
        ));
        return false;
    };
    let mut added = false;
    for (label, value) in &placement.node_selector {
        match selector.get(label) {
            None => {
                selector.insert(label.clone(), Value::String(value.clone()));
                added = true;
            }
            Some(Value::String(current)) if current == value => {}
            Some(current) => warnings.push(format!(
                "{who}: keeps nodeSelector {label}: {current}, although GPU resource {resource} \
                 is placed with {label}: {value}; check that such nodes exist and are tainted \
                 as the added tolerations expect"
            )),
        }
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy_sdk::json;
    use std::collections::BTreeMap;

    fn gpu_job(resources: Value, tolerations: Option<Value>) -> Value {
        let mut spec = json!({"restartPolicy": "Never",
            "containers": [{"name": "trainer", "image": "trainer:1", "resources": resources}]});
        if let Some(t) = tolerations {
            spec["tolerations"] = t;
        }
        json!({"kind": "Job", "metadata": {"name": "train"}, "spec": {"template": {"spec": spec}}})
    }

    fn nvidia() -> Value {
        json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})
    }

    /// Runs the policy twice, asserting the second pass is a no-op, and returns the first result.
    fn placed(settings: &GpuTolerationsSettings, kind: &str, object: &Value) -> (Value, Outcome) {
        let mut once = object.clone();
        let outcome = place(settings, kind, &mut once);
        let mut twice = once.clone();
        let again = place(settings, kind, &mut twice);
        assert!(!again.changed, "second pass changed {once} into {twice}");
        assert_eq!(once, twice);
        (once, outcome)
    }

    #[test]
    fn a_gpu_pod_gets_the_toleration_once() {
        let s = GpuTolerationsSettings::default();
        let job = gpu_job(json!({"limits": {"nvidia.com/gpu": 1}}), None);
        let (out, outcome) = placed(&s, "Job", &job);
        assert!(outcome.changed && outcome.warnings.is_empty());
        assert_eq!(out["spec"]["template"]["spec"]["tolerations"], json!([nvidia()]));
        let mut expected = job.clone();
        expected["spec"]["template"]["spec"]["tolerations"] = json!([nvidia()]);
        assert_eq!(out, expected, "nothing else may change");
    }

    #[test]
    fn pods_without_gpus_or_with_zero_gpus_are_untouched() {
        let s = GpuTolerationsSettings::default();
        for resources in [
            json!({"limits": {"cpu": "2"}}),
            json!({"limits": {"nvidia.com/gpu": "0"}, "requests": {"nvidia.com/gpu": 0}}),
            json!(null),
        ] {
            let job = gpu_job(resources, None);
            let (out, outcome) = placed(&s, "Job", &job);
            assert_eq!(outcome, Outcome::default());
            assert_eq!(out, job);
        }
    }

    #[test]
    fn covering_tolerations_are_respected_and_others_kept() {
        let s = GpuTolerationsSettings::default();
        for covered in [json!([{"operator": "Exists"}]), json!([nvidia()])] {
            let job = gpu_job(json!({"requests": {"nvidia.com/gpu": 2}}), Some(covered));
            let (out, outcome) = placed(&s, "Job", &job);
            assert!(!outcome.changed);
            assert_eq!(out, job);
        }
        let spot = json!({"key": "cloud.google.com/gke-spot", "operator": "Equal",
                          "value": "true", "effect": "NoSchedule"});
        let job = gpu_job(json!({"limits": {"nvidia.com/gpu": 1}}), Some(json!([spot])));
        let (out, _) = placed(&s, "Job", &job);
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([spot, nvidia()])
        );
    }

    #[test]
    fn mig_and_full_gpus_share_one_toleration_and_amd_gets_its_own() {
        let s = GpuTolerationsSettings::default();
        let job = gpu_job(
            json!({"limits": {"nvidia.com/gpu": 1, "nvidia.com/mig-1g.5gb": 1, "amd.com/gpu": 1}}),
            Some(Value::Null),
        );
        let (out, _) = placed(&s, "Job", &job);
        let amd = json!({"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"});
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([amd, nvidia()])
        );
    }

    #[test]
    fn init_containers_count_and_each_pod_spec_is_separate() {
        let s = GpuTolerationsSettings::default();
        let cluster = json!({"kind": "RayCluster", "metadata": {"name": "rc"}, "spec": {
            "headGroupSpec": {"template": {"spec": {"containers": [{"name": "head"}]}}},
            "workerGroupSpecs": [{"groupName": "gpu", "template": {"spec": {
                "initContainers": [{"name": "warm", "resources": {"limits": {"nvidia.com/gpu": 1}}}],
                "containers": [{"name": "worker"}]}}}]}});
        let (out, outcome) = placed(&s, "RayCluster", &cluster);
        assert!(outcome.changed);
        assert!(
            out.pointer("/spec/headGroupSpec/template/spec/tolerations")
                .is_none()
        );
        assert_eq!(
            out.pointer("/spec/workerGroupSpecs/0/template/spec/tolerations"),
            Some(&json!([nvidia()]))
        );
    }

    #[test]
    fn node_selector_is_merged_and_conflicts_are_warned_not_overwritten() {
        let mut s = GpuTolerationsSettings::default();
        if let Some(p) = s.resources.get_mut("nvidia.com/gpu") {
            p.node_selector = BTreeMap::from([
                ("accelerator".to_string(), "nvidia-a100".to_string()),
                ("pool".to_string(), "gpu".to_string()),
            ]);
        }
        let mut job = gpu_job(json!({"limits": {"nvidia.com/gpu": 1}}), None);
        job["spec"]["template"]["spec"]["nodeSelector"] = json!({"accelerator": "nvidia-h100"});
        let (out, outcome) = placed(&s, "Job", &job);
        assert_eq!(
            out["spec"]["template"]["spec"]["nodeSelector"],
            json!({"accelerator": "nvidia-h100", "pool": "gpu"})
        );
        assert_eq!(outcome.warnings.len(), 1, "{:?}", outcome.warnings);
        assert!(outcome.warnings[0].contains("Job train: keeps nodeSelector accelerator: \"nvidia-h100\""));
    }

    #[test]
    fn malformed_fields_are_left_alone_with_a_warning() {
        let s = GpuTolerationsSettings::default();
        let job = gpu_job(json!({"limits": {"nvidia.com/gpu": 1}}), Some(json!("all")));
        let (out, outcome) = placed(&s, "Job", &job);
        assert!(!outcome.changed);
        assert_eq!(out, job);
        assert!(outcome.warnings[0].contains("tolerations is not a list"));
    }

    #[test]
    fn pod_updates_and_deletes_are_not_mutated() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}});
        for (operation, mutated) in [("CREATE", true), ("UPDATE", false), ("DELETE", false)] {
            let request: ValidationRequest<GpuTolerationsSettings> =
                serde_json::from_value(json!({"request": {
                    "uid": "u", "kind": {"version": "v1", "kind": "Pod"},
                    "operation": operation, "object": pod}}))
                .expect("valid request");
            let response = validate(&request);
            assert!(response.accepted);
            assert_eq!(response.mutated_object.is_some(), mutated, "{operation}");
        }
    }

    /// Properties over random GPU pods with random existing tolerations: placing is
    /// idempotent, keeps every existing toleration in place, and leaves the pod tolerating the
    /// configured toleration.
    #[test]
    fn random_pods_are_placed_idempotently() {
        let s = GpuTolerationsSettings::default();
        let keys = ["", "nvidia.com/gpu", "amd.com/gpu", "other"];
        let operators = ["", "Exists", "Equal"];
        let effects = ["", "NoSchedule", "NoExecute", "PreferNoSchedule"];
        let gpus = ["nvidia.com/gpu", "amd.com/gpu", "nvidia.com/mig-1g.5gb", "cpu"];
        let mut rng = portcullis_policy_sdk::testing::Rng::new(0x7013);
        for _ in 0..3_000 {
            let existing: Vec<Value> = (0..rng.below(3))
                .map(|_| {
                    let mut t = serde_json::Map::new();
                    for (field, choices) in [
                        ("key", &keys[..]),
                        ("operator", &operators[..]),
                        ("effect", &effects[..]),
                    ] {
                        let choice = choices[rng.below(choices.len())];
                        if !choice.is_empty() {
                            t.insert(field.into(), json!(choice));
                        }
                    }
                    if rng.below(4) == 0 {
                        t.insert("value".into(), json!("present"));
                    }
                    Value::Object(t)
                })
                .collect();
            let gpu = gpus[rng.below(gpus.len())];
            let job = gpu_job(json!({"limits": {gpu: rng.below(3)}}), Some(json!(existing)));
            let (out, _) = placed(&s, "Job", &job);
            let tolerations = out["spec"]["template"]["spec"]["tolerations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert_eq!(
                tolerations[..existing.len()],
                existing[..],
                "existing entries kept in order"
            );
            let requested =
                job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][gpu] != json!(0);
            for (_, placement) in s.placements_for(gpu) {
                for wanted in &placement.tolerations {
                    let covered = tolerations.iter().any(|t| wanted.is_covered_by(t));
                    assert!(covered || !requested, "{gpu}: {out}");
                }
            }
        }
    }

    #[test]
    fn fixtures() {
        portcullis_policy_sdk::testing::check_fixtures(env!("CARGO_MANIFEST_DIR"), validate);
    }
}
