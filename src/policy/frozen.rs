//! What a mutation may not change: the parts of an object that the API server or a controller
//! would turn a patch on into an outage.
//!
//! Mutating policies are written for CREATE. Applied to an UPDATE as they are, they break
//! objects that existed before Portcullis was installed:
//! - the API server refuses any change to a Pod's spec beyond a few fields, and to a Job's pod
//!   template, so a label on an old Job fails with "field is immutable"
//!   (`pkg/apis/core/validation/validation.go` `ValidatePodUpdate`,
//!   `pkg/apis/batch/validation/validation.go` `ValidateJobSpecUpdate`);
//! - a pod template that changes starts a rollout of every replica, so a label on an old
//!   Deployment that gains default resources on the way restarts it;
//! - a ReplicaSet's template is its controller's copy of the owner's template, and the
//!   Deployment controller creates a new ReplicaSet whenever none has an identical template
//!   (`pkg/controller/deployment/util/deployment_util.go` `EqualIgnoreHash`), so mutating the copy
//!   makes it create ReplicaSets forever.
//!
//! The host enforces this for every policy, whatever its language: it restores the frozen parts
//! of the mutated object from the submitted one before computing the patch. An UPDATE that
//! changes a mutable pod template (a new image in a Deployment) is mutated as a CREATE would be.

use serde_json::Value;

use crate::review::{Operation, Review};

/// Whether `review` is for a controller's copy of its owner's pod template (a ReplicaSet with a
/// controller), which no mutating policy may change at all.
pub fn is_controller_copy(review: &Review) -> bool {
    review.group == "apps" && review.kind == "ReplicaSet" && review.controller.is_some()
}

/// The JSON pointers into `object` that a mutation of `review` must leave as submitted:
/// immutable fields on UPDATE, and pod templates (or, for kinds whose templates Portcullis does
/// not know, the whole `spec`) that the UPDATE did not change. Empty on CREATE.
pub fn frozen_paths(review: &Review, object: &Value, old: &Value) -> Vec<&'static str> {
    if review.operation != Operation::Update {
        return Vec::new();
    }
    let unchanged = |pointer: &'static str| object.pointer(pointer) == old.pointer(pointer);
    let template = match (review.group.as_str(), review.kind.as_str()) {
        // Immutable whatever the update: freeze it even when the user changed it.
        ("", "Pod") => return vec!["/spec"],
        ("batch", "Job") => return vec!["/spec/template"],
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("", "ReplicationController") => "/spec/template",
        ("batch", "CronJob") => "/spec/jobTemplate",
        ("", "PodTemplate") => "/template",
        _ => "/spec",
    };
    if unchanged(template) {
        vec![template]
    } else {
        Vec::new()
    }
}

/// Puts back, at each of `pointers`, what `original` holds there (or removes what `original`
/// lacks), undoing any mutation below them. Returns whether anything had changed.
pub fn restore(mutated: &mut Value, original: &Value, pointers: &[&str]) -> bool {
    let mut changed = false;
    for pointer in pointers {
        let before = original.pointer(pointer);
        if mutated.pointer(pointer) == before {
            continue;
        }
        changed = true;
        let Some((parent, key)) = pointer.rsplit_once('/') else {
            continue;
        };
        match (before, mutated.pointer_mut(parent).and_then(Value::as_object_mut)) {
            (Some(value), Some(slot)) => {
                slot.insert(key.to_owned(), value.clone());
            }
            (None, Some(slot)) => {
                slot.remove(key);
            }
            // The parent itself is new or gone: restore the parent instead.
            (_, None) => {
                restore(mutated, original, &[parent]);
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn review(group: &str, kind: &str, operation: &str, owners: Value) -> Review {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u", "kind": {"group": group, "version": "v1", "kind": kind},
                "resource": {"group": group, "version": "v1", "resource": "x"},
                "operation": operation, "userInfo": {}, "name": "n", "namespace": "ml",
                "object": {"metadata": {"ownerReferences": owners}}
            }
        });
        Review::decode(body.to_string().as_bytes()).expect("valid")
    }

    #[test]
    fn only_updates_freeze_and_pods_and_jobs_always_do() {
        let o = json!({"spec": {"template": {"spec": {"containers": []}}}});
        let changed = json!({"spec": {"template": {"spec": {"containers": [{"name": "m"}]}}}});
        assert!(frozen_paths(&review("", "Pod", "CREATE", json!([])), &o, &o).is_empty());
        assert_eq!(
            frozen_paths(&review("", "Pod", "UPDATE", json!([])), &changed, &o),
            ["/spec"]
        );
        assert_eq!(
            frozen_paths(&review("batch", "Job", "UPDATE", json!([])), &changed, &o),
            ["/spec/template"]
        );
    }

    #[test]
    fn mutable_templates_freeze_only_when_unchanged() {
        let d = review("apps", "Deployment", "UPDATE", json!([]));
        let o = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": []}}}});
        let scaled = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": []}}}});
        let changed = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "m"}]}}}});
        assert_eq!(frozen_paths(&d, &scaled, &o), ["/spec/template"]);
        assert!(frozen_paths(&d, &changed, &o).is_empty());
        let c = review("batch", "CronJob", "UPDATE", json!([]));
        assert_eq!(frozen_paths(&c, &o, &o), ["/spec/jobTemplate"]);
        let crd = review("kubeflow.org", "PyTorchJob", "UPDATE", json!([]));
        assert_eq!(frozen_paths(&crd, &o, &o), ["/spec"]);
        assert!(frozen_paths(&crd, &changed, &o).is_empty());
    }

    #[test]
    fn controller_owned_replicasets_are_copies() {
        let owned = json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "1", "controller": true}]);
        assert!(is_controller_copy(&review(
            "apps",
            "ReplicaSet",
            "CREATE",
            owned.clone()
        )));
        assert!(!is_controller_copy(&review(
            "apps",
            "ReplicaSet",
            "CREATE",
            json!([])
        )));
        assert!(!is_controller_copy(&review("", "Pod", "CREATE", owned)));
    }

    #[test]
    fn restore_undoes_changes_below_each_pointer_only() {
        let original =
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"template": {"x": 1}, "replicas": 1}});
        let mut mutated = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"template": {"x": 2, "y": 3}, "replicas": 1}});
        assert!(restore(&mut mutated, &original, &["/spec/template"]));
        assert_eq!(
            mutated,
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"template": {"x": 1}, "replicas": 1}})
        );
        assert!(!restore(&mut mutated, &original, &["/spec/template"]));
        let original = json!({"spec": {"containers": []}});
        let mut mutated = json!({"spec": {"containers": [], "tolerations": []}});
        assert!(restore(&mut mutated, &original, &["/spec/tolerations"]));
        assert_eq!(mutated, original);
        let original = json!({"metadata": {}});
        let mut mutated = json!({"metadata": {}, "spec": {"template": {}, "replicas": 2}});
        assert!(restore(&mut mutated, &original, &["/spec/template"]));
        assert_eq!(
            mutated,
            json!({"metadata": {}, "spec": {"replicas": 2}}),
            "only the frozen part goes"
        );
        let mut mutated = json!({"metadata": {}, "spec": {"template": {}}});
        assert!(restore(&mut mutated, &original, &["/spec"]));
        assert_eq!(mutated, original);
    }
}
