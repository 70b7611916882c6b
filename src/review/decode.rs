//! Decoding an `admission.k8s.io/v1` AdmissionReview into a [`Review`].
//!
//! The request is kept verbatim as raw JSON, because policies get it exactly as the API server
//! sent it (no field dropped or renamed by a round trip through typed structs). Alongside, a
//! borrowed typed view reads the fields Portcullis matches on, with kube's and k8s-openapi's
//! types for the parts that have them. The view is lenient where real API servers are: `name`,
//! `namespace`, `object` and `oldObject` may be `null` or absent (`generateName` CREATEs reach the
//! mutating webhook without a name; DELETEs carry no `object`), and `options` is whatever
//! `CreateOptions`/`UpdateOptions`/`DeleteOptions` the request had
//! (`staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/request/admissionreview.go`).

use std::fmt;

use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::{GroupVersionKind, GroupVersionResource};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// The only AdmissionReview version Portcullis speaks (the API server's v1beta1 is gone).
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// The kind of the envelope.
pub const KIND: &str = "AdmissionReview";

/// An admission operation, as the kube-apiserver names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// Object creation.
    Create,
    /// Object update (subresource updates such as `status`, `scale` and `ephemeralcontainers`
    /// included).
    Update,
    /// Object deletion.
    Delete,
    /// Connect (exec, attach, port-forward, proxy).
    Connect,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        })
    }
}

/// Why a body is not an AdmissionReview v1. Each becomes a 400 with this text.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all.
    #[error("body is not a JSON AdmissionReview: {0}")]
    NotJson(#[source] serde_json::Error),
    /// `apiVersion` is missing or not `admission.k8s.io/v1`.
    #[error("apiVersion must be \"{API_VERSION}\", got {0}")]
    ApiVersion(String),
    /// `kind` is missing or not `AdmissionReview`.
    #[error("kind must be \"{KIND}\", got {0}")]
    Kind(String),
    /// No `request` field.
    #[error("AdmissionReview has no request")]
    NoRequest,
    /// `request` does not have the AdmissionRequest shape.
    #[error("request is not a valid AdmissionRequest: {0}")]
    InvalidRequest(#[source] serde_json::Error),
    /// `request.uid` is empty, so no response could be matched to it.
    #[error("request.uid must not be empty")]
    EmptyUid,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<Box<RawValue>>,
}

/// The fields of an AdmissionRequest Portcullis reads; everything else is skipped unparsed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest {
    uid: String,
    kind: GroupVersionKind,
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[serde(default)]
    user_info: Option<UserInfo>,
    #[serde(default)]
    object: Option<WireObject>,
    #[serde(default)]
    old_object: Option<IgnoredAny>,
    #[serde(default)]
    dry_run: Option<bool>,
}

/// Of the object, only who controls it.
#[derive(Deserialize)]
struct WireObject {
    #[serde(default)]
    metadata: Option<WireMetadata>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMetadata {
    #[serde(default)]
    owner_references: Option<Vec<WireOwner>>,
}

#[derive(Deserialize)]
struct WireOwner {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    controller: Option<bool>,
}

/// A decoded admission request.
#[derive(Debug)]
pub struct Review {
    /// Echoed in the response.
    pub uid: String,
    /// `request.kind.group` (`""` for the core group).
    pub group: String,
    /// `request.kind.kind`.
    pub kind: String,
    /// `request.resource.resource`, e.g. `deployments` (still `deployments` for `scale`).
    pub resource: String,
    /// `request.subResource`, e.g. `status`, `scale` or `ephemeralcontainers`; `None` for the
    /// main resource.
    pub subresource: Option<String>,
    /// `request.operation`.
    pub operation: Operation,
    /// `request.namespace`, `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// `request.name`; empty on a `generateName` CREATE seen by a mutating webhook.
    pub name: String,
    /// `request.userInfo.username`, as the API server authenticated it.
    pub username: String,
    /// The kind of the object's controller (the ownerReference with `controller: true`).
    pub controller: Option<String>,
    /// Whether the request carries an `oldObject` (UPDATE and DELETE).
    pub has_old_object: bool,
    /// `request.dryRun`: evaluated exactly the same, since policies have no side effects.
    pub dry_run: bool,
    /// The request as sent, handed to policies verbatim.
    pub raw_request: Box<RawValue>,
}

impl Review {
    /// Decodes a request body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let envelope: Envelope = serde_json::from_slice(body).map_err(DecodeError::NotJson)?;
        let shown = |v: Option<String>| v.map_or_else(|| "nothing".to_owned(), |s| format!("{s:?}"));
        if envelope.api_version.as_deref() != Some(API_VERSION) {
            return Err(DecodeError::ApiVersion(shown(envelope.api_version)));
        }
        if envelope.kind.as_deref() != Some(KIND) {
            return Err(DecodeError::Kind(shown(envelope.kind)));
        }
        let raw_request = envelope.request.ok_or(DecodeError::NoRequest)?;
        let wire: WireRequest =
            serde_json::from_str(raw_request.get()).map_err(DecodeError::InvalidRequest)?;
        if wire.uid.is_empty() {
            return Err(DecodeError::EmptyUid);
        }
        let controller = wire
            .object
            .and_then(|o| o.metadata)
            .and_then(|m| m.owner_references)
            .and_then(|owners| owners.into_iter().find(|o| o.controller == Some(true)))
            .map(|o| o.kind);
        Ok(Self {
            uid: wire.uid,
            group: wire.kind.group,
            kind: wire.kind.kind,
            resource: wire.resource.resource,
            subresource: wire.sub_resource.filter(|s| !s.is_empty()),
            operation: wire.operation,
            namespace: wire.namespace.filter(|ns| !ns.is_empty()),
            name: wire.name.unwrap_or_default(),
            username: wire.user_info.and_then(|u| u.username).unwrap_or_default(),
            controller,
            has_old_object: wire.old_object.is_some(),
            dry_run: wire.dry_run.unwrap_or(false),
            raw_request,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(request: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": API_VERSION, "kind": KIND, "request": request})
    }

    fn pod_request() -> serde_json::Value {
        json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "fraud-model", "namespace": "ml-prod", "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fraud-model", "x-unknown": 1}, "spec": {}},
            "dryRun": true
        })
    }

    fn decode(v: serde_json::Value) -> Result<Review, DecodeError> {
        Review::decode(v.to_string().as_bytes())
    }

    #[test]
    fn decodes_the_fields_matching_needs_and_keeps_the_request_verbatim() {
        let r = decode(review(pod_request())).expect("valid review");
        assert_eq!(r.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!((r.kind.as_str(), r.operation), ("Pod", Operation::Create));
        assert_eq!(r.namespace.as_deref(), Some("ml-prod"));
        assert!(r.dry_run);
        let raw: serde_json::Value = serde_json::from_str(r.raw_request.get()).expect("raw is JSON");
        assert_eq!(
            raw,
            pod_request(),
            "the request reaches policies unchanged, unknown fields included"
        );
    }

    #[test]
    fn each_malformation_has_its_own_message() {
        let e = |v| decode(v).expect_err("must fail").to_string();
        assert!(
            Review::decode(b"{oops")
                .expect_err("not json")
                .to_string()
                .starts_with("body is not a JSON AdmissionReview")
        );
        let mut v = review(pod_request());
        v["apiVersion"] = json!("admission.k8s.io/v1beta1");
        assert_eq!(
            e(v),
            "apiVersion must be \"admission.k8s.io/v1\", got \"admission.k8s.io/v1beta1\""
        );
        let mut v = review(pod_request());
        v["kind"] = json!("Pod");
        assert_eq!(e(v), "kind must be \"AdmissionReview\", got \"Pod\"");
        assert_eq!(
            e(json!({"apiVersion": API_VERSION, "kind": KIND})),
            "AdmissionReview has no request"
        );
        let mut req = pod_request();
        req["operation"] = json!("PATCH");
        assert!(
            e(review(req)).starts_with("request is not a valid AdmissionRequest: unknown variant `PATCH`"),
        );
        let mut req = pod_request();
        req.as_object_mut().expect("object").remove("kind");
        assert!(e(review(req)).starts_with("request is not a valid AdmissionRequest: missing field `kind`"));
        let mut req = pod_request();
        req["uid"] = json!("");
        assert_eq!(e(review(req)), "request.uid must not be empty");
    }

    /// Nulls real API servers send: `name` on a generateName CREATE to a mutating webhook (absent
    /// in the recording, `null` from older servers and other clients), `object` on DELETE,
    /// `oldObject` on CREATE, `dryRun` left out.
    #[test]
    fn nulls_and_absences_are_accepted() {
        let mut req = pod_request();
        req["name"] = json!(null);
        req["namespace"] = json!(null);
        req["oldObject"] = json!(null);
        req["dryRun"] = json!(null);
        req["object"]["metadata"]["creationTimestamp"] = json!(null);
        req["options"] = json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"});
        let r = decode(review(req)).expect("valid");
        assert_eq!(
            (r.name.as_str(), r.namespace, r.dry_run, r.has_old_object),
            ("", None, false, false)
        );
        let mut req = pod_request();
        req["operation"] = json!("DELETE");
        req["object"] = json!(null);
        req["oldObject"] = json!({"metadata": {"name": "fraud-model"}});
        let r = decode(review(req)).expect("valid");
        assert!(r.has_old_object);
        assert_eq!(r.controller, None);
    }

    #[test]
    fn the_controller_is_the_owner_marked_controller() {
        let mut req = pod_request();
        req["object"]["metadata"]["ownerReferences"] = json!([
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "1"},
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "2", "controller": true}
        ]);
        assert_eq!(
            decode(review(req)).expect("valid").controller.as_deref(),
            Some("Deployment")
        );
    }

    /// Every review recorded from kube-apiserver v1.28 decodes, with the facts matching reads.
    #[test]
    fn recorded_api_server_reviews_decode() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apiserver");
        let read = |name: &str| {
            let body = std::fs::read(dir.join(name)).expect("recorded review");
            Review::decode(&body).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).expect("fixture dir") {
            let name = entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8 name");
            if name.ends_with(".json") {
                read(&name);
                count += 1;
            }
        }
        assert_eq!(count, 17, "every recorded review was read");
        let generated = read("pod-create-generatename.mutating.json");
        assert_eq!(
            (generated.name.as_str(), generated.operation),
            ("", Operation::Create)
        );
        let scale = read("deployment-update-scale-subresource.json");
        assert_eq!(
            (
                scale.kind.as_str(),
                scale.resource.as_str(),
                scale.subresource.as_deref()
            ),
            ("Scale", "deployments", Some("scale"))
        );
        let debug = read("pod-update-ephemeralcontainers-kubectl-debug.json");
        assert_eq!(
            (
                debug.kind.as_str(),
                debug.subresource.as_deref(),
                debug.has_old_object
            ),
            ("Pod", Some("ephemeralcontainers"), true)
        );
        let delete = read("job-delete-orphan.json");
        assert_eq!(
            (delete.operation, delete.group.as_str()),
            (Operation::Delete, "batch")
        );
        assert!(read("deployment-update-dry-run.json").dry_run);
        assert_eq!(read("pod-update-label.json").username, "admin");
    }

    #[test]
    fn cluster_scoped_requests_have_no_namespace() {
        let mut req = pod_request();
        req["namespace"] = json!("");
        assert_eq!(decode(review(req)).expect("valid").namespace, None);
    }
}
