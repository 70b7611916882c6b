//! Decoding an `admission.k8s.io/v1` AdmissionReview into a [`Review`].
//!
//! The request is decoded twice on purpose: into kube's typed `AdmissionRequest` to check its
//! shape and read the fields Portcullis matches on, and kept verbatim as raw JSON, because
//! policies get the request exactly as the API server sent it (no field dropped or renamed
//! by a round trip through typed structs).

use kube::core::DynamicObject;
use kube::core::admission::AdmissionRequest;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::policy::matching::{Operation, Subject};

/// The only AdmissionReview version Portcullis speaks (the API server's v1beta1 is gone).
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// The kind of the envelope.
pub const KIND: &str = "AdmissionReview";

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

/// A decoded admission request.
#[derive(Debug)]
pub struct Review {
    /// Echoed in the response.
    pub uid: String,
    /// `request.kind.kind`.
    pub kind: String,
    /// `request.operation`.
    pub operation: Operation,
    /// `request.namespace`, `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// `request.name` (may be empty on CREATE with generateName).
    pub name: String,
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
        let typed: AdmissionRequest<DynamicObject> =
            serde_json::from_str(raw_request.get()).map_err(DecodeError::InvalidRequest)?;
        if typed.uid.is_empty() {
            return Err(DecodeError::EmptyUid);
        }
        Ok(Self {
            operation: Operation::from(&typed.operation),
            kind: typed.kind.kind,
            namespace: typed.namespace.filter(|ns| !ns.is_empty()),
            name: typed.name,
            dry_run: typed.dry_run,
            uid: typed.uid,
            raw_request,
        })
    }

    /// The facts policy matching looks at.
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            kind: &self.kind,
            operation: self.operation,
            namespace: self.namespace.as_deref(),
        }
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
            e(review(req)).starts_with("request is not a valid AdmissionRequest: unknown variant `PATCH`")
        );
        let mut req = pod_request();
        req["uid"] = json!("");
        assert_eq!(e(review(req)), "request.uid must not be empty");
    }

    #[test]
    fn cluster_scoped_requests_have_no_namespace() {
        let mut req = pod_request();
        req["namespace"] = json!("");
        assert_eq!(decode(review(req)).expect("valid").namespace, None);
    }
}
