//! AdmissionReviews for objects that no API server is sending: manifests checked offline
//! (`portcullis check`) and objects already stored in a cluster (`portcullis audit`).
//!
//! They are built in the exact shape kube-apiserver gives a CREATE
//! (`staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/request/admissionreview.go`):
//! GVK and GVR of the object, `requestKind`/`requestResource` equal to them, `oldObject: null`,
//! `options` a `CreateOptions`, and `dryRun: true`, because nothing will be persisted. Then they go
//! through [`super::Review::decode`] like any review, so the policies see exactly what a real
//! submission of the object would show them.

use serde_json::{Value, json};

use super::decode::{API_VERSION, KIND};

/// Why an object cannot be wrapped into a review.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntheticError {
    /// The document is not a mapping.
    #[error("not a Kubernetes object (a mapping with apiVersion and kind)")]
    NotAnObject,
    /// No `apiVersion`.
    #[error("the object has no apiVersion")]
    NoApiVersion,
    /// No `kind`.
    #[error("the object has no kind")]
    NoKind,
}

/// Who a synthetic review says is asking, when a person or a pipeline submits the object.
pub const USERNAME: &str = "portcullis";

/// Who submits the object a synthetic review carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitter {
    /// A person or a pipeline ([`USERNAME`]): a manifest, or a stored object no built-in
    /// controller made.
    User,
    /// The controller manager (`system:kube-controller-manager`): a stored object it made from
    /// its owner's template (a ReplicaSet's Pod, a Deployment's ReplicaSet), since that is who
    /// would submit it again. Policies that skip controllers' copies skip it, as in a cluster.
    ControllerManager,
}

impl Submitter {
    /// The `userInfo.username` the API server would send.
    pub fn username(self) -> &'static str {
        match self {
            Self::User => USERNAME,
            Self::ControllerManager => "system:kube-controller-manager",
        }
    }
}

/// The body of an AdmissionReview asking to CREATE `object` in `namespace` (the object's own
/// `metadata.namespace` wins), with request uid `uid`, submitted by [`Submitter::User`].
pub fn create_review(object: &Value, namespace: &str, uid: &str) -> Result<Vec<u8>, SyntheticError> {
    create_review_by(object, namespace, uid, Submitter::User)
}

/// [`create_review`], submitted by `submitter`.
pub fn create_review_by(
    object: &Value,
    namespace: &str,
    uid: &str,
    submitter: Submitter,
) -> Result<Vec<u8>, SyntheticError> {
    let fields = object.as_object().ok_or(SyntheticError::NotAnObject)?;
    let api_version = fields
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(SyntheticError::NoApiVersion)?;
    let kind = fields
        .get("kind")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(SyntheticError::NoKind)?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let meta = |field: &str| {
        object
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
    };
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource_name(kind)});
    let mut review = json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "request": {
            "uid": uid,
            "kind": gvk, "requestKind": gvk,
            "resource": gvr, "requestResource": gvr,
            "name": meta("name").unwrap_or(""),
            "operation": "CREATE",
            "userInfo": {"username": submitter.username()},
            "object": object,
            "oldObject": null,
            "dryRun": true,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        }
    });
    // The API server leaves `namespace` out for cluster-scoped objects (`omitempty` on the
    // request's Namespace, admission.k8s.io/v1 types.go).
    if !is_cluster_scoped(group, kind) {
        review["request"]["namespace"] = json!(meta("namespace").unwrap_or(namespace));
    }
    // A Value of strings and the caller's object: serialisation cannot fail.
    Ok(serde_json::to_vec(&review).unwrap_or_default())
}

/// Whether `kind` of API `group` is one of Kubernetes' built-in cluster-scoped kinds, which
/// are never placed in a namespace. Custom resources are taken as namespaced (offline there is
/// no discovery to ask; the ML CRDs Portcullis knows all are).
pub fn is_cluster_scoped(group: &str, kind: &str) -> bool {
    const CLUSTER_SCOPED: &[(&str, &str)] = &[
        ("", "Namespace"),
        ("", "Node"),
        ("", "PersistentVolume"),
        ("", "ComponentStatus"),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
        ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
        ("admissionregistration.k8s.io", "MutatingAdmissionPolicyBinding"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ("apiregistration.k8s.io", "APIService"),
        ("certificates.k8s.io", "CertificateSigningRequest"),
        ("certificates.k8s.io", "ClusterTrustBundle"),
        ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
        ("networking.k8s.io", "IngressClass"),
        ("networking.k8s.io", "IPAddress"),
        ("networking.k8s.io", "ServiceCIDR"),
        ("node.k8s.io", "RuntimeClass"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("resource.k8s.io", "DeviceClass"),
        ("resource.k8s.io", "ResourceSlice"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("storage.k8s.io", "CSIDriver"),
        ("storage.k8s.io", "CSINode"),
        ("storage.k8s.io", "StorageClass"),
        ("storage.k8s.io", "VolumeAttachment"),
        ("storage.k8s.io", "VolumeAttributesClass"),
    ];
    CLUSTER_SCOPED.contains(&(group, kind))
}

/// The resource (plural) name the API server uses for `kind`: lower case, English plural, as
/// every built-in kind and the ML CRDs Portcullis knows follow.
pub fn resource_name(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower == "endpoints" {
        return lower;
    }
    if let Some(stem) = lower
        .strip_suffix('y')
        .filter(|s| !s.ends_with(['a', 'e', 'o', 'u']))
    {
        format!("{stem}ies")
    } else if lower.ends_with('s') || lower.ends_with('x') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::{Operation, Review};

    #[test]
    fn a_manifest_becomes_a_create_review() {
        let object =
            json!({"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "train"}});
        let body = create_review(&object, "ml", "check-1").expect("valid");
        let review = Review::decode(&body).expect("decodes like a real review");
        assert_eq!(review.operation, Operation::Create);
        assert_eq!(
            (
                review.group.as_str(),
                review.kind.as_str(),
                review.resource.as_str()
            ),
            ("kubeflow.org", "PyTorchJob", "pytorchjobs")
        );
        assert_eq!(
            (review.namespace.as_deref(), review.name.as_str(), review.dry_run),
            (Some("ml"), "train", true)
        );
        let raw: Value = serde_json::from_str(review.raw_request.get()).expect("json");
        assert_eq!(raw["object"], object);
        assert_eq!(raw["oldObject"], Value::Null);
        let placed =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "prod"}});
        let review =
            Review::decode(&create_review(&placed, "default", "u").expect("valid")).expect("decodes");
        assert_eq!(review.namespace.as_deref(), Some("prod"));
    }

    #[test]
    fn a_cluster_scoped_object_gets_no_namespace() {
        let object = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "reader"}});
        let body = create_review(&object, "ml", "u").expect("valid");
        let raw: Value = serde_json::from_slice(&body).expect("json");
        assert!(raw["request"].get("namespace").is_none(), "{}", raw["request"]);
        let review = Review::decode(&body).expect("decodes");
        assert_eq!(review.namespace, None);
        // The same kind name in another group is a namespaced custom resource.
        let custom =
            json!({"apiVersion": "example.com/v1", "kind": "ClusterRole", "metadata": {"name": "r"}});
        let review = Review::decode(&create_review(&custom, "ml", "u").expect("valid")).expect("decodes");
        assert_eq!(review.namespace.as_deref(), Some("ml"));
    }

    #[test]
    fn the_controller_manager_submits_what_it_made() {
        let owned = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "1", "controller": true}
        ]}});
        let body = create_review_by(&owned, "ml", "u", Submitter::ControllerManager).expect("valid");
        let review = Review::decode(&body).expect("decodes");
        assert_eq!(review.username, "system:kube-controller-manager");
        assert!(crate::policy::matching::is_controller_manager(&review.username));
        assert_eq!(review.controller.as_deref(), Some("ReplicaSet"));
        let review = Review::decode(&create_review(&owned, "ml", "u").expect("valid")).expect("decodes");
        assert_eq!(review.username, USERNAME);
    }

    #[test]
    fn what_is_missing_is_named() {
        assert_eq!(
            create_review(&json!([1]), "d", "u"),
            Err(SyntheticError::NotAnObject)
        );
        assert_eq!(
            create_review(&json!({"kind": "Pod"}), "d", "u"),
            Err(SyntheticError::NoApiVersion)
        );
        assert_eq!(
            create_review(&json!({"apiVersion": "v1"}), "d", "u"),
            Err(SyntheticError::NoKind)
        );
    }

    #[test]
    fn resource_names_are_the_api_servers() {
        for (kind, resource) in [
            ("Pod", "pods"),
            ("Deployment", "deployments"),
            ("NetworkPolicy", "networkpolicies"),
            ("Ingress", "ingresses"),
            ("Gateway", "gateways"),
            ("Endpoints", "endpoints"),
            ("InferenceService", "inferenceservices"),
            ("RayCluster", "rayclusters"),
        ] {
            assert_eq!(resource_name(kind), resource);
        }
    }
}
