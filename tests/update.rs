//! Install day in a real cluster: UPDATEs of objects that existed before Portcullis, subresources
//! and `kubectl debug`, through the real server with the built-in policy set. Each test is one
//! thing a user did against a real kube-apiserver, on a review recorded from one
//! (`tests/fixtures/apiserver/`) or built in its exact shape.
//!
//! Upstream behaviour these encode:
//! - a Job's pod template is immutable, and most of a Pod's spec
//!   (`pkg/apis/batch/validation/validation.go` `ValidateJobSpecUpdate`,
//!   `pkg/apis/core/validation/validation.go` `ValidatePodUpdate`);
//! - a Deployment whose pod template changes rolls out every replica
//!   (`pkg/controller/deployment/sync.go`), and one whose ReplicaSet template differs from its own
//!   creates a new ReplicaSet (`pkg/controller/deployment/util/deployment_util.go` `EqualIgnoreHash`);
//! - `kubectl debug` writes `pods/ephemeralcontainers`, which only rules naming that
//!   subresource see (`staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/predicates/rules/rules.go`);
//! - a Pod whose finalizer cannot be removed stays Terminating.

mod common;

use common::{TestServer, before_and_after, recorded, update_review};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

static SERVER: OnceCell<TestServer> = OnceCell::const_new();

async fn server() -> &'static TestServer {
    SERVER.get_or_init(TestServer::builtin).await
}

/// The first pod spec of a recorded object: a Pod's own, or a workload's template's.
fn pod_spec(object: &mut Value) -> &mut Value {
    if object.pointer("/spec/template/spec").is_some() {
        &mut object["spec"]["template"]["spec"]
    } else {
        &mut object["spec"]
    }
}

fn set_image(object: &mut Value, image: &str) {
    pod_spec(object)["containers"][0]["image"] = json!(image);
}

fn strip_resources(object: &mut Value) {
    if let Some(c) = pod_spec(object)["containers"][0].as_object_mut() {
        c.remove("resources");
    }
}

fn warnings(response: &Value) -> Vec<String> {
    response["warnings"]
        .as_array()
        .map(|w| w.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn assert_unpatched(response: &Value, what: &str) {
    assert_eq!(response["allowed"], true, "{what}: {response}");
    assert!(
        response.get("patch").is_none(),
        "{what} must not be patched: {response}"
    );
    assert!(response.get("patchType").is_none(), "{what}: {response}");
}

/// `kubectl label job old-trainer team=ml`: the recorded Job has a GPU limit and no requests,
/// so a CREATE would be mutated; on this UPDATE its immutable template must not be touched, or
/// the API server refuses the label with "field is immutable".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelling_an_old_job_gets_no_template_mutation() {
    let s = server().await;
    let review = recorded("job-update-label.json");
    let response = s.review("/mutate", &review).await;
    assert_unpatched(&response, "a label on a Job");
    // The same Job created today is mutated: the restraint is the UPDATE's, not the policies'.
    let mut create = review.clone();
    create["request"]["operation"] = json!("CREATE");
    create["request"]["oldObject"] = Value::Null;
    let created = s.review("/mutate", &create).await;
    assert_eq!(created["patchType"], "JSONPatch", "{created}");
    assert_eq!(s.review("/validate", &review).await["allowed"], true);
}

/// `kubectl annotate job old-trainer note=x`: the same as a label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotating_an_old_job_gets_no_template_mutation() {
    let mut review = recorded("job-update-label.json");
    let request = &mut review["request"];
    request["object"]["metadata"]["labels"] = request["oldObject"]["metadata"]["labels"].clone();
    request["object"]["metadata"]["annotations"] = json!({"note": "x"});
    request["uid"] = json!("annotate-old-job");
    let response = server().await.review("/mutate", &review).await;
    assert_unpatched(&response, "an annotation on a Job");
}

/// `kubectl label deploy old-server team=ml` on a Deployment without resources: a patch would
/// change the template, bump `metadata.generation` and roll out every replica. This is also the
/// "metadata-only UPDATE of a Deployment yields no patch" case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelling_an_old_deployment_starts_no_rollout() {
    let s = server().await;
    let review = before_and_after(recorded("deployment-update-label.json"), strip_resources);
    assert_unpatched(&s.review("/mutate", &review).await, "a label on a Deployment");
    assert_eq!(s.review("/validate", &review).await["allowed"], true);
}

/// An UPDATE that changes a mutable template (a new image in a Deployment) is mutated as a
/// CREATE would be: the rollout happens anyway, so it gets the defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_a_deployment_template_is_mutated_like_a_create() {
    let review = before_and_after(recorded("deployment-update-set-image.json"), strip_resources);
    // The template now differs from the old one only by the image the user set.
    let response = server().await.review("/mutate", &review).await;
    let patched = common::apply_patch(&response, &review["request"]["object"]);
    let resources = &patched["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(
        resources["requests"],
        json!({"cpu": "250m", "memory": "512Mi"}),
        "{patched}"
    );
}

/// The Deployment controller's ReplicaSets are copies of an already mutated template:
/// mutating one makes the controller create ReplicaSets forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_owned_replicasets_are_not_mutated() {
    let s = server().await;
    let mut rs = common::deployment("churn");
    rs["kind"] = json!("ReplicaSet");
    rs["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "churn",
        "uid": "5d3c0d0e-0d39-4f4b-9a8e-2f0b1f6a1c11", "controller": true, "blockOwnerDeletion": true
    }]);
    let owned = common::review("ReplicaSet", rs.clone(), "CREATE", "ml", "rs-owned", false);
    assert_unpatched(
        &s.review("/mutate", &owned).await,
        "a controller-owned ReplicaSet",
    );
    // A bare ReplicaSet is a user's object: it is mutated.
    rs["metadata"]
        .as_object_mut()
        .map(|m| m.remove("ownerReferences"));
    let bare = common::review("ReplicaSet", rs, "CREATE", "ml", "rs-bare", false);
    assert_eq!(s.review("/mutate", &bare).await["patchType"], "JSONPatch");
}

/// `kubectl label pod old-pod team=ml` on a Pod that ran a `:latest` image before install: the
/// violation is not the label's doing, so the UPDATE is admitted with a warning naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelling_an_old_violating_pod_is_allowed_with_a_warning() {
    let s = server().await;
    let review = before_and_after(recorded("pod-update-label.json"), |o| {
        set_image(o, "registry.company.com/fraud-model:latest")
    });
    let response = s.review("/validate", &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    let w = warnings(&response);
    assert!(
        w.iter()
            .any(|w| w.starts_with("[existing] pinned-images: ") && w.contains(":latest")),
        "{w:?}"
    );
    assert_unpatched(&s.review("/mutate", &review).await, "a label on a Pod");
    // The same Pod submitted today is denied.
    let mut create = review.clone();
    create["request"]["operation"] = json!("CREATE");
    create["request"]["oldObject"] = Value::Null;
    assert_eq!(s.review("/validate", &create).await["allowed"], false);
}

/// Removing the finalizer of a terminating Pod that violates policies must go through, or the
/// Pod stays Terminating forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_violating_pod_can_lose_its_finalizer() {
    let review = before_and_after(
        recorded("pod-update-remove-finalizer-while-terminating.json"),
        |o| set_image(o, "registry.company.com/fraud-model:latest"),
    );
    let response = server().await.review("/validate", &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(
        warnings(&response)
            .iter()
            .any(|w| w.starts_with("[existing] pinned-images: "))
    );
}

/// `kubectl set image deploy/x model=...:latest` is a new violation: still denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_a_latest_image_is_still_denied() {
    let mut review = recorded("deployment-update-set-image.json");
    set_image(
        &mut review["request"]["object"],
        "registry.company.com/churn-predictor:latest",
    );
    let response = server().await.review("/validate", &review).await;
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("pinned-images: ") && message.contains(":latest"),
        "{message}"
    );
}

/// An old violation plus a new one is denied: only violations the old object had are waived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_violation_next_to_an_old_one_is_denied() {
    let mut review = before_and_after(recorded("deployment-update-set-image.json"), |o| {
        let spec = pod_spec(o);
        let second = json!({"name": "sidecar", "image": "registry.company.com/proxy:latest"});
        if let Some(containers) = spec["containers"].as_array_mut() {
            containers.push(second);
        }
    });
    // The user now also moves the model to :latest.
    set_image(
        &mut review["request"]["object"],
        "registry.company.com/churn-predictor:latest",
    );
    let response = server().await.review("/validate", &review).await;
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("churn-predictor:latest") && message.contains("proxy:latest"),
        "{message}"
    );
}

/// `kubectl debug --image=busybox:1.36`: the debug container is judged (pinned tag: allowed),
/// and one with `:latest` is denied, though the review is an UPDATE of a subresource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_debug_is_judged() {
    let s = server().await;
    let review = recorded("pod-update-ephemeralcontainers-kubectl-debug.json");
    let response = s.review("/validate", &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    let mut latest = review.clone();
    latest["request"]["object"]["spec"]["ephemeralContainers"][0]["image"] = json!("busybox:latest");
    let response = s.review("/validate", &latest).await;
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("pinned-images: ") && message.contains("busybox:latest"),
        "{message}"
    );
    // Plain-text secrets in a debug container's env are caught the same way.
    let mut secret = review.clone();
    secret["request"]["object"]["spec"]["ephemeralContainers"][0]["env"] =
        json!([{"name": "DB_PASSWORD", "value": "hunter2"}]);
    let response = s.review("/validate", &secret).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no-plaintext-secrets"),
        "{response}"
    );
}

/// After a debug container with `:latest` got in (before install), every later UPDATE of the
/// Pod is not denied because of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_an_old_debug_container_can_still_be_labelled() {
    let review = before_and_after(recorded("pod-update-label.json"), |o| {
        o["spec"]["ephemeralContainers"] = json!([{
            "name": "dbg", "image": "busybox:latest", "imagePullPolicy": "Always",
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
            "stdin": true, "tty": true
        }]);
    });
    let response = server().await.review("/validate", &review).await;
    assert_eq!(response["allowed"], true, "{response}");
}

/// `kubectl scale`: a `scale` subresource UPDATE of a Scale object is never denied, even for a
/// Deployment that violates every policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_and_status_subresources_are_not_judged() {
    let s = server().await;
    let review = recorded("deployment-update-scale-subresource.json");
    let response = s.review("/validate", &review).await;
    assert_eq!(
        response,
        json!({"uid": review["request"]["uid"], "allowed": true})
    );
    assert_unpatched(&s.review("/mutate", &review).await, "a scale");
    // A status write of a violating Pod (the kubelet's, reporting readiness).
    let mut old = common::pod("fraud-model");
    set_image(&mut old, "registry.company.com/fraud-model:latest");
    let mut new = old.clone();
    new["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
    let status = update_review("Pod", new, old, "ml", "pod-status", Some("status"));
    let response = s.review("/validate", &status).await;
    assert_eq!(response, json!({"uid": "pod-status", "allowed": true}));
}

/// A policy configured with `existing_violations: deny` denies the old violation too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_violations_deny_is_strict() {
    let config = r#"
policies:
  - name: pinned-images
    module: pinned_images.wasm
    existing_violations: deny
    match: {kinds: [Pod], operations: [UPDATE]}
"#;
    let server = TestServer::start(
        config,
        &[("pinned_images.wasm", common::policy_module("pinned_images.wasm"))],
    )
    .await;
    let review = before_and_after(recorded("pod-update-label.json"), |o| {
        set_image(o, "registry.company.com/fraud-model:latest")
    });
    let response = server.review("/validate", &review).await;
    assert_eq!(response["allowed"], false, "{response}");
    server.shutdown().await;
}

/// A ~1 MiB Deployment (hundreds of env vars, its last-applied copy and managedFields) gets a
/// label: the UPDATE review carries it twice, well over 3 MiB, and must still be judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelling_a_large_deployment_is_judged() {
    let review = before_and_after(recorded("deployment-update-label.json"), |o| {
        let env: Vec<Value> = (0..2500)
            .map(|i| json!({"name": format!("FEATURE_FLAG_{i:05}"), "value": "x".repeat(300)}))
            .collect();
        let fields: serde_json::Map<String, Value> = (0..2500)
            .map(|i| {
                (
                    format!("k:{{\"name\":\"FEATURE_FLAG_{i:05}\"}}"),
                    json!({".": {}, "f:name": {}, "f:value": {}}),
                )
            })
            .collect();
        pod_spec(o)["containers"][0]["env"] = Value::Array(env);
        let manifest = o.to_string();
        o["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json!(manifest);
        o["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"model\"}"]
            ["f:env"] = Value::Object(fields);
    });
    let body = serde_json::to_vec(&review).expect("json");
    let object = serde_json::to_vec(&review["request"]["object"]).expect("json");
    assert!(object.len() > 1 << 20, "the object is {} bytes", object.len());
    assert!(body.len() > 3 << 20, "the review is {} bytes", body.len());
    let s = server().await;
    let response = s.review("/validate", &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_unpatched(
        &s.review("/mutate", &review).await,
        "a label on a large Deployment",
    );
}

/// An HPA scale-up of a Deployment that predates the policies: the ReplicaSet controller creates
/// a Pod from the old `:latest` template. It is not denied (the Deployment is judged at its own
/// admission), but it is still given default resources. The same Pod with a forged
/// ownerReference from a user is judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_the_controller_manager_creates_are_not_judged_again() {
    let s = server().await;
    let mut review = recorded("pod-create-generatename.validating.json");
    set_image(
        &mut review["request"]["object"],
        "registry.company.com/fraud-model:latest",
    );
    review["request"]["object"]["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "fraud-model-5d8f",
        "uid": "0b7f3b9e-3f0c-4f8e-9a3e-6c1d2e4f5a60", "controller": true, "blockOwnerDeletion": true
    }]);
    review["request"]["userInfo"] = json!({
        "username": "system:serviceaccount:kube-system:replicaset-controller",
        "uid": "b2c9d4e1-7a3f-4c55-8d1e-2f6a9b0c3d47",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
    });
    let response = s.review("/validate", &review).await;
    assert_eq!(
        response,
        json!({"uid": review["request"]["uid"], "allowed": true})
    );
    let mutated = s.review("/mutate", &review).await;
    assert_eq!(mutated["patchType"], "JSONPatch", "{mutated}");
    let mut forged = review.clone();
    forged["request"]["userInfo"] = json!({"username": "alice", "groups": ["system:authenticated"]});
    let response = s.review("/validate", &forged).await;
    assert_eq!(response["allowed"], false, "{response}");
}
