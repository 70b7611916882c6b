//! A stored object judged as if it were submitted today, and each policy's verdict turned into
//! a finding in the words a PolicyReport uses (`pass`, `fail`, `error`, `skip`).
//!
//! The object goes through [`crate::check::judge`] as a CREATE, never as an UPDATE whose old
//! object is itself: that would waive every violation the object already has
//! ([`crate::policy::existing`]). Its submitter is who would submit it again: the controller
//! manager for the copies it makes from an owner's template, so that the policies' own
//! `controller_created` rule decides, exactly as when the webhook serves them. A monitor-mode
//! rejection is a violation here like an enforcing one; only its severity differs.

use serde::Serialize;
use serde_json::Value;

use crate::check;
use crate::policy::PolicySet;
use crate::policy::matching::Subject;
use crate::policy::spec::{FailurePolicy, Mode};
use crate::policy::verdict::Label;
use crate::review::Operation;
use crate::review::synthetic::Submitter;

/// The kinds whose controllers run in kube-controller-manager
/// (`cmd/kube-controller-manager/app/controllermanager.go`, `NewControllerDescriptors`), as
/// (group, kind): their Pods, ReplicaSets and Jobs are created by the controller manager.
const CONTROLLER_MANAGER_OWNERS: &[(&str, &str)] = &[
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("", "ReplicationController"),
];

/// Metadata the API server sets itself, which no submission carries.
const SERVER_FIELDS: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
];

/// One policy's finding on one object: the PolicyReport `result` values Portcullis produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The policy did not judge it: a controller's copy, judged through its owner.
    Skip,
    /// The policy accepts it (possibly with a patch).
    Pass,
    /// The policy could not decide (trap, timeout, bad output).
    Error,
    /// The policy rejects it, in enforce or monitor mode.
    Fail,
}

/// How bad a failing finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Submitting the object today would be denied.
    High,
    /// Submitting it today would only warn (monitor mode, or a fault that fails open).
    Medium,
}

/// One policy's verdict on one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The policy.
    pub policy: String,
    /// What it found.
    pub result: Status,
    /// Whether the policy enforces or monitors.
    #[serde(serialize_with = "mode_word")]
    pub mode: Mode,
    /// How bad a `fail` or `error` is; none for `pass` and `skip`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// The policy's rejection message, the fault, or why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Finding {
    /// `enforce` or `monitor`, as the configuration writes it.
    pub fn mode_word(&self) -> &'static str {
        word(self.mode)
    }
}

fn word(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Monitor => "monitor",
    }
}

fn mode_word<S: serde::Serializer>(mode: &Mode, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(word(*mode))
}

/// Which stored object: the fields of an `ObjectReference`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`, when the API server gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl ObjectRef {
    /// The reference to a stored object.
    pub fn of(object: &Value) -> Self {
        let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
        Self {
            api_version: text("/apiVersion").unwrap_or_default(),
            kind: text("/kind").unwrap_or_default(),
            namespace: text("/metadata/namespace").unwrap_or_default(),
            name: text("/metadata/name").unwrap_or_default(),
            uid: text("/metadata/uid"),
        }
    }

    /// The API group, from `apiVersion`.
    pub fn group(&self) -> &str {
        self.api_version.split_once('/').map_or("", |(group, _)| group)
    }
}

/// The verdict on one stored object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Audited {
    /// The object.
    #[serde(flatten)]
    pub object: ObjectRef,
    /// The worst finding (`skip` when none).
    pub result: Status,
    /// One finding per policy that judged or skipped it, mutating policies first.
    pub findings: Vec<Finding>,
}

/// A stored object that could not be judged at all.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unjudged {
    /// The object.
    #[serde(flatten)]
    pub object: ObjectRef,
    /// Why.
    pub problem: String,
}

/// What became of one stored object.
#[derive(Debug, Clone, PartialEq)]
pub enum Judged {
    /// The policies' verdict.
    Audited(Audited),
    /// Why there is none.
    Unjudged(Unjudged),
}

/// Who would submit `stored` again: the controller manager when its controller is one of the
/// manager's kinds, else a user.
pub fn submitter(stored: &Value) -> Submitter {
    let controller = stored
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|owner| owner.get("controller").and_then(Value::as_bool) == Some(true));
    let Some(owner) = controller else {
        return Submitter::User;
    };
    let text = |field: &str| owner.get(field).and_then(Value::as_str).unwrap_or("");
    let group = text("apiVersion").split_once('/').map_or("", |(group, _)| group);
    if CONTROLLER_MANAGER_OWNERS.contains(&(group, text("kind"))) {
        Submitter::ControllerManager
    } else {
        Submitter::User
    }
}

/// `stored` as a submission would carry it: without status and the metadata the API server
/// sets itself. Policies ignore those fields; leaving them out keeps each review small.
pub fn submission(stored: &Value) -> Value {
    let mut object = stored.clone();
    if let Some(fields) = object.as_object_mut() {
        fields.remove("status");
        if let Some(meta) = fields.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in SERVER_FIELDS {
                meta.remove(*field);
            }
        }
    }
    object
}

/// Judges one stored object against `set`. Blocking: runs Wasm.
pub fn judge(set: &PolicySet, stored: &Value) -> Judged {
    let object = ObjectRef::of(stored);
    let submitter = submitter(stored);
    let uid = format!("audit-{}", object.uid.as_deref().unwrap_or(&object.name));
    let judgement = match check::judge(set, &submission(stored), &object.namespace, &uid, submitter) {
        Ok(judgement) => judgement,
        Err(e) => {
            return Judged::Unjudged(Unjudged {
                object,
                problem: e.to_string(),
            });
        }
    };
    let mut findings: Vec<Finding> = judgement
        .runs()
        .map(|run| {
            let spec = set.get(&run.name).map(|p| &p.spec);
            let mode = spec.map_or(Mode::Enforce, |s| s.mode);
            let fails_closed = spec.is_none_or(|s| s.failure == FailurePolicy::Deny);
            let (result, message) = match run.verdict {
                Label::Accepted => (Status::Pass, None),
                Label::Mutated => (Status::Pass, Some("patched on submission".to_owned())),
                Label::Rejected | Label::Existing => (Status::Fail, run.message.clone()),
                Label::Fault => (Status::Error, run.message.clone()),
            };
            let denies = mode == Mode::Enforce && (result == Status::Fail || fails_closed);
            let severity = match result {
                Status::Fail | Status::Error if denies => Some(Severity::High),
                Status::Fail | Status::Error => Some(Severity::Medium),
                Status::Pass | Status::Skip => None,
            };
            Finding {
                policy: run.name.clone(),
                result,
                mode,
                severity,
                message,
            }
        })
        .collect();
    if submitter == Submitter::ControllerManager {
        findings.extend(skipped(set, &judgement, &findings));
    }
    let result = findings.iter().map(|f| f.result).max().unwrap_or(Status::Skip);
    Judged::Audited(Audited {
        object,
        result,
        findings,
    })
}

/// The policies that would judge the object if a user submitted it, but skip the controller
/// manager's copy: it was judged through its owner's template.
fn skipped(set: &PolicySet, judgement: &check::Judgement, ran: &[Finding]) -> Vec<Finding> {
    let as_user = Subject {
        kind: &judgement.kind,
        subresource: None,
        operation: Operation::Create,
        namespace: Some(judgement.namespace.as_str()).filter(|ns| !ns.is_empty()),
        controller_created: false,
    };
    set.iter()
        .filter(|p| !ran.iter().any(|f| f.policy == p.spec.name.as_str()))
        .filter(|p| p.spec.matcher.matches(&as_user))
        .map(|p| Finding {
            policy: p.spec.name.to_string(),
            result: Status::Skip,
            mode: p.spec.mode,
            severity: None,
            message: Some("made by its controller from the owner's template, which is judged instead".into()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn owned_by(api_version: &str, kind: &str, controller: bool) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "ownerReferences": [
            {"apiVersion": api_version, "kind": kind, "name": "o", "uid": "1", "controller": controller}
        ]}})
    }

    #[test]
    fn the_controller_manager_submits_only_its_own_copies() {
        assert_eq!(
            submitter(&owned_by("apps/v1", "ReplicaSet", true)),
            Submitter::ControllerManager
        );
        assert_eq!(
            submitter(&owned_by("batch/v1", "Job", true)),
            Submitter::ControllerManager
        );
        assert_eq!(
            submitter(&owned_by("v1", "ReplicationController", true)),
            Submitter::ControllerManager
        );
        // An operator's copies are submitted by the operator's service account: judged.
        assert_eq!(
            submitter(&owned_by("kubeflow.org/v1", "PyTorchJob", true)),
            Submitter::User
        );
        // An owner that is not the controller changes nothing.
        assert_eq!(
            submitter(&owned_by("apps/v1", "ReplicaSet", false)),
            Submitter::User
        );
        // A kind name alone is not enough: the group must be the built-in one.
        assert_eq!(
            submitter(&owned_by("example.com/v1", "ReplicaSet", true)),
            Submitter::User
        );
    }

    #[test]
    fn a_submission_carries_no_server_fields() {
        let stored = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ml", "uid": "u", "resourceVersion": "7",
                         "generation": 2, "creationTimestamp": "2025-01-01T00:00:00Z",
                         "managedFields": [{"manager": "kubectl"}], "labels": {"app": "a"}},
            "spec": {"containers": []}, "status": {"phase": "Running"}});
        assert_eq!(
            submission(&stored),
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "p", "namespace": "ml", "labels": {"app": "a"}},
                   "spec": {"containers": []}})
        );
        let reference = ObjectRef::of(&stored);
        assert_eq!(reference.uid.as_deref(), Some("u"));
        assert_eq!(reference.group(), "");
    }

    #[test]
    fn failing_outranks_everything() {
        let mut all = [Status::Pass, Status::Fail, Status::Skip, Status::Error];
        all.sort();
        assert_eq!(all, [Status::Skip, Status::Pass, Status::Error, Status::Fail]);
    }
}
