//! What a policy is asked: the Kubernetes admission request plus the policy's settings.
//!
//! The request is the `request` member of an `admission.k8s.io/v1` AdmissionReview, passed on
//! verbatim by the webhook, so field names are Kubernetes' camelCase. Unknown fields (resource,
//! requestKind, options, ...) are ignored rather than rejected: the API server adds fields over
//! time and a policy must not break when it does.

use serde::de::{Deserialize, Deserializer};
use serde::{Deserialize as DeriveDeserialize, Serialize};
use serde_json::Value;

use crate::settings::Settings;

/// The admission request as the API server sent it.
#[derive(DeriveDeserialize, Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Identifies this review; echoed back by the webhook, not by the policy.
    pub uid: String,
    /// Kind of the object under review (not of the subresource).
    pub kind: GroupVersionKind,
    /// What is being done to the object.
    pub operation: Operation,
    /// Object name; empty on CREATE when the client relies on `generateName`.
    #[serde(default)]
    pub name: String,
    /// Namespace; `None` for cluster-scoped objects.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The object after the operation; `Null` on DELETE.
    #[serde(default)]
    pub object: Value,
    /// The object before the operation; `Null` on CREATE.
    #[serde(default)]
    pub old_object: Value,
    /// True when the request will not be persisted (`kubectl --dry-run=server`).
    #[serde(default)]
    pub dry_run: bool,
    /// Who is asking (username, groups, ...), kept untyped because few policies need it.
    #[serde(default)]
    pub user_info: Value,
}

impl AdmissionRequest {
    /// Whether a mutating policy may still change the pod specs in this request: always on
    /// CREATE; on UPDATE only where the API server lets the pod spec change, so never for a
    /// core Pod (its containers are immutable once created: `ValidatePodUpdate` in
    /// kubernetes/kubernetes pkg/apis/core/validation/validation.go) nor for a `batch` Job
    /// (`spec.template` is immutable: `ValidateJobSpecUpdate` in
    /// pkg/apis/batch/validation/validation.go; only a suspended Job that never ran may change
    /// scheduling directives, which is not worth a patch the API server could refuse), but for
    /// other templates (Deployments, CronJobs, CRDs ...); never on DELETE or CONNECT. The group
    /// matters: a CRD kind named `Pod` or `Job` in another group is a template like any other.
    pub fn pod_specs_mutable(&self) -> bool {
        match self.operation {
            Operation::Create => true,
            Operation::Update => !self.kind.is("", "Pod") && !self.kind.is("batch", "Job"),
            Operation::Delete | Operation::Connect => false,
        }
    }

    /// The namespace the object lands in: the request's, else the object's `metadata.namespace`.
    pub fn effective_namespace(&self) -> Option<&str> {
        self.namespace
            .as_deref()
            .or_else(|| self.object.pointer("/metadata/namespace").and_then(Value::as_str))
    }
}

/// A Kubernetes group/version/kind. The core group is the empty string.
#[derive(DeriveDeserialize, Serialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupVersionKind {
    /// API group, `""` for core (`v1`) kinds.
    #[serde(default)]
    pub group: String,
    /// API version within the group, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
}

impl GroupVersionKind {
    /// Whether this is `kind` in API `group` (any version; `""` is the core group).
    pub fn is(&self, group: &str, kind: &str) -> bool {
        self.group == group && self.kind == kind
    }
}

/// The admission operation.
#[derive(DeriveDeserialize, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// The object is being created.
    Create,
    /// The object is being replaced or patched.
    Update,
    /// The object is being deleted.
    Delete,
    /// A connect subresource (exec, attach, port-forward) is being opened.
    Connect,
}

/// ABI v1 input: `{"request": <AdmissionRequest>, "settings": <S>}`.
///
/// Missing or `null` settings mean "the policy's defaults", so a policy configured with no settings
/// block behaves exactly like one configured with `{}`.
#[derive(DeriveDeserialize, Debug, Clone)]
#[serde(bound(deserialize = "S: Settings"))]
pub struct ValidationRequest<S> {
    /// The admission request, verbatim.
    pub request: AdmissionRequest,
    /// The policy's settings, already deserialised.
    #[serde(default, deserialize_with = "null_as_default")]
    pub settings: S,
}

/// Deserialises `null` as `T::default()`; together with `#[serde(default)]` this also covers a
/// missing field.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(DeriveDeserialize, Default, Debug, PartialEq)]
    #[serde(default)]
    struct Knobs {
        limit: u32,
    }
    impl Settings for Knobs {}

    fn request_json() -> Value {
        json!({
            "uid": "abc", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "operation": "CREATE", "namespace": "ml-prod", "name": "fraud-model",
            "object": {"kind": "Deployment"}, "dryRun": true, "userInfo": {"username": "ci"}
        })
    }

    #[test]
    fn parses_a_full_request_and_ignores_unknown_fields() {
        let r: ValidationRequest<Knobs> =
            serde_json::from_value(json!({"request": request_json(), "settings": {"limit": 3}}))
                .expect("valid input");
        assert_eq!(r.request.kind.kind, "Deployment");
        assert_eq!(r.request.operation, Operation::Create);
        assert_eq!(r.request.namespace.as_deref(), Some("ml-prod"));
        assert!(r.request.dry_run);
        assert_eq!(r.request.old_object, Value::Null);
        assert_eq!(r.settings, Knobs { limit: 3 });
    }

    #[test]
    fn missing_or_null_settings_are_the_defaults() {
        for input in [
            json!({"request": request_json()}),
            json!({"request": request_json(), "settings": null}),
            json!({"request": request_json(), "settings": {}}),
        ] {
            let r: ValidationRequest<Knobs> = serde_json::from_value(input).expect("valid input");
            assert_eq!(r.settings, Knobs::default());
        }
    }

    /// Pod specs may change on CREATE, and on UPDATE except where the API server refuses it:
    /// a core Pod (ValidatePodUpdate) and a batch Job's template (ValidateJobSpecUpdate,
    /// pkg/apis/batch/validation/validation.go).
    #[test]
    fn pod_specs_are_mutable_where_the_api_server_allows_it() {
        let cases = [
            ("", "Pod", "CREATE", true),
            ("", "Pod", "UPDATE", false),
            ("batch", "Job", "CREATE", true),
            ("batch", "Job", "UPDATE", false),
            ("batch", "CronJob", "UPDATE", true),
            ("apps", "Deployment", "UPDATE", true),
            ("apps", "StatefulSet", "UPDATE", true),
            ("", "PodTemplate", "UPDATE", true),
            ("kubeflow.org", "PyTorchJob", "UPDATE", true),
            // Same kind name, another group: a template like any other.
            ("batch.volcano.sh", "Job", "UPDATE", true),
            ("example.com", "Pod", "UPDATE", true),
            ("apps", "Deployment", "DELETE", false),
            ("", "Pod", "CONNECT", false),
        ];
        for (group, kind, operation, mutable) in cases {
            let mut req = request_json();
            req["kind"] = json!({"group": group, "version": "v1", "kind": kind});
            req["operation"] = json!(operation);
            let r: AdmissionRequest = serde_json::from_value(req).expect("valid request");
            assert_eq!(r.pod_specs_mutable(), mutable, "{group}/{kind} {operation}");
        }
    }

    #[test]
    fn core_group_may_be_omitted_and_operations_are_uppercase() {
        let mut req = request_json();
        req["kind"] = json!({"version": "v1", "kind": "Pod"});
        req["operation"] = json!("DELETE");
        let r: AdmissionRequest = serde_json::from_value(req).expect("valid request");
        assert_eq!(r.kind.group, "");
        assert_eq!(r.operation, Operation::Delete);
        let mut bad = request_json();
        bad["operation"] = json!("delete");
        assert!(serde_json::from_value::<AdmissionRequest>(bad).is_err());
    }
}
