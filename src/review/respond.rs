//! Encoding an [`Answer`] as the `admission.k8s.io/v1` AdmissionReview response.
//!
//! The response is Portcullis's own wire struct rather than kube-core's `AdmissionResponse`,
//! because kube-core 5 serialises `patch` (a `Vec<u8>`) as a JSON array of numbers, while the
//! API server decodes it as Go `[]byte`, i.e. a base64 string. Field names and omissions follow
//! `k8s.io/api/admission/v1` exactly.

use serde::Serialize;

use super::answer::{Admission, Answer, AuditAnnotations, Warnings};
use super::decode::{API_VERSION, KIND};
use super::patch;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireReview<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: WireResponse<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<WireStatus<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "AuditAnnotations::is_empty")]
    audit_annotations: &'a AuditAnnotations,
    #[serde(skip_serializing_if = "Warnings::is_empty")]
    warnings: &'a Warnings,
}

/// The subset of `metav1.Status` the API server reads from a webhook's denial.
#[derive(Serialize)]
struct WireStatus<'a> {
    status: &'static str,
    code: u16,
    message: &'a str,
}

/// The response body for `answer` on the request with `uid`.
pub fn respond(uid: &str, answer: &Answer) -> Vec<u8> {
    let (allowed, status, patch) = match &answer.admission {
        Admission::Allow { patch } => (true, None, patch.as_ref().map(patch::encode)),
        Admission::Deny { code, message } => (
            false,
            Some(WireStatus {
                status: "Failure",
                code: *code,
                message,
            }),
            None,
        ),
    };
    let review = WireReview {
        api_version: API_VERSION,
        kind: KIND,
        response: WireResponse {
            uid,
            allowed,
            status,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            audit_annotations: &answer.audit_annotations,
            warnings: &answer.warnings,
        },
    };
    // Only strings, numbers and maps of strings: serialisation cannot fail.
    serde_json::to_vec(&review).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn body(d: &Answer) -> Value {
        serde_json::from_slice(&respond("u-1", d)).expect("json")
    }

    #[test]
    fn allow_is_minimal() {
        let d = Answer::default();
        assert_eq!(
            body(&d),
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "u-1", "allowed": true}})
        );
    }

    #[test]
    fn deny_carries_status_warnings_and_annotations() {
        let mut d = Answer {
            admission: Admission::Deny {
                code: 403,
                message: "pinned-images: no".into(),
            },
            ..Answer::default()
        };
        d.warnings.push("[monitor] x: y");
        d.audit_annotations
            .insert("k".into(), "v".into())
            .expect("valid key");
        assert_eq!(
            body(&d)["response"],
            json!({"uid": "u-1", "allowed": false, "status": {"status": "Failure", "code": 403, "message": "pinned-images: no"},
                   "warnings": ["[monitor] x: y"], "auditAnnotations": {"k": "v"}})
        );
    }

    #[test]
    fn patch_is_a_base64_string_with_its_type() {
        let patch: json_patch::Patch =
            serde_json::from_value(json!([{"op": "add", "path": "/a", "value": 1}])).expect("patch");
        let d = Answer {
            admission: Admission::Allow { patch: Some(patch) },
            ..Answer::default()
        };
        let r = &body(&d)["response"];
        assert_eq!(r["patchType"], "JSONPatch");
        assert!(
            r["patch"].is_string(),
            "the API server decodes []byte from base64 text: {r}"
        );
    }

    #[test]
    fn kube_core_would_have_sent_the_patch_as_numbers() {
        // Why this module has its own wire struct; if kube-core fixes it, switch back.
        let req: kube::core::admission::AdmissionRequest<kube::core::DynamicObject> =
            serde_json::from_value(json!({
                "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE", "userInfo": {}, "name": "p"
            }))
            .expect("request");
        let patch: json_patch::Patch = serde_json::from_value(json!([])).expect("patch");
        let resp = kube::core::admission::AdmissionResponse::from(&req)
            .with_patch(patch)
            .expect("patch");
        let v = serde_json::to_value(&resp).expect("json");
        assert!(v["patch"].is_array(), "{v}");
    }
}
