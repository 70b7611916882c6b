//! The AdmissionReview v1 protocol over HTTPS, as the kube-apiserver speaks it, over HTTP/1.1
//! and HTTP/2 alike: decisions, merged denials, warnings, audit annotations, JSON Patches from
//! real policy modules, per-policy routes, and every way a request is refused before a decision.
//!
//! One server serves the whole file. Each scenario has its own namespace, and the policies are
//! matched to namespaces, so that `/validate` in namespace `deny` runs exactly the deny policy.

mod common;

use common::{Alpn, Knobs, TestServer, apply_patch, deployment, pod, review, review_fixture, wat_fixture};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// The body limit of the shared server.
const BODY_LIMIT: usize = 16 * 1024;

const CONFIG: &str = r#"
policies:
  - name: allow-all
    module: allow_all.wasm
    match: {namespaces: {include: [allow]}}
  - name: deny-all
    module: deny_all.wasm
    match: {namespaces: {include: [deny]}}
  - name: deny-a
    module: deny_all.wasm
    match: {namespaces: {include: [two-denials]}}
  - name: deny-b
    module: deny_all.wasm
    match: {namespaces: {include: [two-denials]}}
  - name: deny-monitored
    module: deny_all.wasm
    mode: monitor
    match: {namespaces: {include: [monitor]}}
  - name: trap-fail-open
    module: trap.wasm
    failure: allow
    match: {namespaces: {include: [fail-open]}}
  - name: warn-and-annotate
    module: warn_and_annotate.wasm
    match: {namespaces: {include: [annotate]}}
  - name: warnings-flood
    module: warnings_flood.wasm
    match: {namespaces: {include: [flood]}}
  - name: deny-deployments
    module: deny_all.wasm
    match: {kinds: [Deployment], namespaces: {include: [kinds]}}
  - name: gpu-tolerations-monitored
    module: gpu_tolerations.wasm
    mutating: true
    mode: monitor
    match: {namespaces: {include: [monitor-mutate]}}
  # Mutating, in chain order.
  - name: default-resources
    module: default_resources.wasm
    mutating: true
    match: {namespaces: {include: [chain]}}
  - name: gpu-tolerations
    module: gpu_tolerations.wasm
    mutating: true
    match: {namespaces: {include: [gpu, chain]}}
"#;

static SERVER: OnceCell<TestServer> = OnceCell::const_new();

async fn server() -> &'static TestServer {
    SERVER
        .get_or_init(|| async {
            let modules = [
                ("allow_all.wasm", wat_fixture("allow_all")),
                ("deny_all.wasm", wat_fixture("deny_all")),
                ("trap.wasm", wat_fixture("trap")),
                ("warn_and_annotate.wasm", wat_fixture("warn_and_annotate")),
                ("warnings_flood.wasm", wat_fixture("warnings_flood")),
                (
                    "default_resources.wasm",
                    common::policy_module("default_resources.wasm"),
                ),
                (
                    "gpu_tolerations.wasm",
                    common::policy_module("gpu_tolerations.wasm"),
                ),
            ];
            let knobs = Knobs {
                body_limit: BODY_LIMIT,
                ..Knobs::default()
            };
            TestServer::start_with(Some(CONFIG), &modules, knobs).await
        })
        .await
}

/// A Pod review in `namespace`, with a uid naming the scenario and protocol.
fn pod_review(namespace: &str, alpn: Alpn) -> Value {
    let uid = format!("{namespace}-{alpn:?}");
    review("Pod", pod("model-server"), "CREATE", namespace, &uid, false)
}

/// The GPU pod fixture, moved to `namespace`.
fn gpu_pod_review(namespace: &str, uid: &str) -> Value {
    let mut r = review_fixture("pod_gpu");
    r["request"]["namespace"] = json!(namespace);
    r["request"]["object"]["metadata"]["namespace"] = json!(namespace);
    r["request"]["uid"] = json!(uid);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepting_policy_allows_with_a_minimal_response() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        let r = pod_review("allow", alpn);
        let response = client.review("/validate", &r).await;
        assert_eq!(
            response,
            json!({"uid": r["request"]["uid"], "allowed": true}),
            "{alpn:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejecting_policy_denies_with_its_code_and_a_message_naming_it() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        let r = pod_review("deny", alpn);
        let response = client.review("/validate", &r).await;
        assert_eq!(
            response,
            json!({
                "uid": r["request"]["uid"],
                "allowed": false,
                "status": {"status": "Failure", "code": 422, "message": "deny-all: deny-all refuses everything"}
            }),
            "{alpn:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rejections_are_merged_into_one_message_naming_both() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        let response = client.review("/validate", &pod_review("two-denials", alpn)).await;
        assert_eq!(response["allowed"], false, "{alpn:?}");
        assert_eq!(
            response["status"],
            json!({
                "status": "Failure",
                "code": 422,
                "message": "denied by 2 policies: deny-a: deny-all refuses everything; deny-b: deny-all refuses everything"
            }),
            "{alpn:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitored_rejection_allows_with_a_warning() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        let r = pod_review("monitor", alpn);
        let response = client.review("/validate", &r).await;
        assert_eq!(
            response,
            json!({
                "uid": r["request"]["uid"],
                "allowed": true,
                "warnings": ["[monitor] deny-monitored: deny-all refuses everything"],
                // Recorded in the API server's audit log as validate.portcullis.dev/deny-monitored.
                "auditAnnotations": {"deny-monitored": "monitor: would deny: deny-all refuses everything"}
            }),
            "{alpn:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_under_failure_allow_allows_with_a_warning() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        let r = pod_review("fail-open", alpn);
        let response = client.review("/validate", &r).await;
        assert_eq!(
            response,
            json!({
                "uid": r["request"]["uid"],
                "allowed": true,
                "warnings": ["policy trap-fail-open failed: trapped: wasm `unreachable` instruction executed; allowed by its failure policy"]
            }),
            "{alpn:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_and_audit_annotations_pass_through() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        let r = pod_review("annotate", alpn);
        let response = client.review("/validate", &r).await;
        assert_eq!(
            response,
            json!({
                "uid": r["request"]["uid"],
                "allowed": true,
                "warnings": ["first warning", "second warning"],
                "auditAnnotations": {"reviewed-by": "warn-and-annotate"}
            }),
            "{alpn:?}"
        );
    }
}

/// What the API server does with warnings and audit annotations
/// (`staging/src/k8s.io/apimachinery/pkg/util/net/http.go` `NewWarningHeader` drops a warning with
/// a control character; `staging/src/k8s.io/apiserver/pkg/endpoints/filters/warning.go` cuts each
/// to 256 characters once they pass 4096 in all; `staging/src/k8s.io/apiserver/pkg/admission/attributes.go`
/// `checkKeyFormat` drops a key that is not a qualified name under `<webhook>/`): the response
/// never relies on it, so nothing is cut or dropped after it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_and_annotations_fit_the_api_servers_limits() {
    let server = server().await;
    let r = pod_review("flood", Alpn::Http1);
    let response = server.review("/validate", &r).await;
    assert_eq!(response["allowed"], true, "{response}");
    let warnings: Vec<&str> = response["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| w.as_str().expect("string"))
        .collect();
    assert_eq!(warnings[0], "line one line two  bell");
    assert!(
        warnings
            .iter()
            .all(|w| w.chars().count() <= 256 && !w.chars().any(char::is_control))
    );
    let total: usize = warnings.iter().map(|w| w.chars().count()).sum();
    assert!(total <= 4096, "{total} characters");
    let kept = warnings.len() - 1;
    assert!((10..40).contains(&kept), "{kept} kept");
    assert_eq!(
        warnings.last().copied(),
        Some(
            format!(
                "{} more warnings left out to stay within the API server's limits; see the Portcullis log",
                40 - kept
            )
            .as_str()
        )
    );
    assert_eq!(response["auditAnnotations"], json!({"kept": "yes"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_tolerations_patch_applies_to_the_exact_expected_object() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        let r = gpu_pod_review("gpu", &format!("gpu-{alpn:?}"));
        let object = &r["request"]["object"];
        let response = client.review("/mutate", &r).await;
        assert_eq!(response["allowed"], true, "{response}");
        assert!(response.get("status").is_none(), "{response}");
        let mut expected = object.clone();
        expected["spec"]["tolerations"] =
            json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]);
        assert_eq!(apply_patch(&response, object), expected, "{alpn:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_mutations_produce_one_patch_with_every_change() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        let r = gpu_pod_review("chain", &format!("chain-{alpn:?}"));
        let object = r["request"]["object"].clone();
        let response = client.review("/mutate", &r).await;
        assert_eq!(response["allowed"], true, "{response}");
        let chained = apply_patch(&response, &object);

        // Both policies' changes are in the one patch.
        assert_eq!(
            chained["spec"]["tolerations"],
            json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]),
            "{chained}"
        );
        let resources = &chained["spec"]["containers"][0]["resources"];
        assert_eq!(resources["requests"]["cpu"], "250m", "{resources}");
        assert_eq!(resources["requests"]["memory"], "512Mi", "{resources}");
        assert_eq!(resources["limits"]["memory"], "1Gi", "{resources}");
        assert_eq!(resources["limits"]["nvidia.com/gpu"], 1, "{resources}");

        // And the result is exactly the two policies applied one after the other.
        let step1 = client.review("/mutate/default-resources", &r).await;
        let defaulted = apply_patch(&step1, &object);
        assert!(defaulted["spec"].get("tolerations").is_none(), "{defaulted}");
        let mut r2 = r.clone();
        r2["request"]["object"] = defaulted.clone();
        let step2 = client.review("/mutate/gpu-tolerations", &r2).await;
        assert_eq!(apply_patch(&step2, &defaulted), chained, "{alpn:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uid_is_echoed_for_every_review_on_a_connection() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        for uid in [
            "705ab4f5-6393-11e8-b7cc-42010a800002",
            "x",
            "ÜID with spaces/and\"quotes\"",
        ] {
            let r = review("Pod", pod("p"), "CREATE", "deny", uid, false);
            let response = client.review("/validate", &r).await;
            assert_eq!(response["uid"], uid, "{alpn:?}");
            assert_eq!(response["allowed"], false);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reviews_are_evaluated_the_same() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        let wet = review("Pod", pod("p"), "CREATE", "deny", "wet", false);
        let dry = review("Pod", pod("p"), "CREATE", "deny", "dry", true);
        let mut wet_response = client.review("/validate", &wet).await;
        let mut dry_response = client.review("/validate", &dry).await;
        wet_response["uid"] = json!("-");
        dry_response["uid"] = json!("-");
        assert_eq!(dry_response, wet_response, "{alpn:?}");

        let wet = gpu_pod_review("gpu", "wet");
        let mut dry = gpu_pod_review("gpu", "dry");
        dry["request"]["dryRun"] = json!(true);
        let wet_response = client.review("/mutate", &wet).await;
        let dry_response = client.review("/mutate", &dry).await;
        assert_eq!(dry_response["patch"], wet_response["patch"], "{alpn:?}");
        assert_eq!(dry_response["allowed"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_matching_only_deployments_does_not_run_for_a_pod() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        let pod_review = review("Pod", pod("p"), "CREATE", "kinds", "pod", false);
        assert_eq!(
            client.review("/validate", &pod_review).await,
            json!({"uid": "pod", "allowed": true}),
            "{alpn:?}"
        );
        let deployment_review = review(
            "Deployment",
            deployment("d"),
            "CREATE",
            "kinds",
            "deployment",
            false,
        );
        let response = client.review("/validate", &deployment_review).await;
        assert_eq!(response["allowed"], false, "{alpn:?}");
        assert_eq!(
            response["status"]["message"],
            "deny-deployments: deny-all refuses everything"
        );
        // Nor is a policy run outside its namespaces.
        let elsewhere = review(
            "Deployment",
            deployment("d"),
            "CREATE",
            "allow",
            "elsewhere",
            false,
        );
        assert_eq!(client.review("/validate", &elsewhere).await["allowed"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_policy_routes_run_only_the_named_policy() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        let in_deny = review("Pod", pod("p"), "CREATE", "deny", "one", false);
        // deny-all matches namespace `deny`, and is the only policy run.
        let response = client.review("/validate/deny-all", &in_deny).await;
        assert_eq!(
            response["status"]["message"], "deny-all: deny-all refuses everything",
            "{alpn:?}"
        );
        // allow-all is named, deny-all is not run, and allow-all does not match `deny` either.
        assert_eq!(
            client.review("/validate/allow-all", &in_deny).await,
            json!({"uid": "one", "allowed": true}),
            "{alpn:?}"
        );
        // The targeted mutating route runs gpu-tolerations alone.
        let r = gpu_pod_review("chain", "mutate-one");
        let response = client.review("/mutate/gpu-tolerations", &r).await;
        let patched = apply_patch(&response, &r["request"]["object"]);
        assert!(
            patched["spec"]["containers"][0]["resources"]
                .get("requests")
                .is_none(),
            "default-resources must not have run: {patched}"
        );
        assert_eq!(patched["spec"]["tolerations"][0]["key"], "nvidia.com/gpu");
    }
}

/// Asserts a plain-text refusal.
fn assert_refused(reply: &common::Reply, status: StatusCode, text: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.text(), text);
    assert_eq!(reply.content_type(), "text/plain; charset=utf-8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_reviews_are_400_with_a_specific_message() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        let reply = client.post("/validate", "{oops").await;
        assert_refused(
            &reply,
            StatusCode::BAD_REQUEST,
            "body is not a JSON AdmissionReview: key must be a string at line 1 column 2\n",
        );

        let mut v1beta1 = pod_review("allow", alpn);
        v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let reply = client.post("/validate", v1beta1.to_string()).await;
        assert_refused(
            &reply,
            StatusCode::BAD_REQUEST,
            "apiVersion must be \"admission.k8s.io/v1\", got \"admission.k8s.io/v1beta1\"\n",
        );

        let no_request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
        let reply = client.post("/mutate", no_request.to_string()).await;
        assert_refused(
            &reply,
            StatusCode::BAD_REQUEST,
            "AdmissionReview has no request\n",
        );

        let mut empty_uid = pod_review("allow", alpn);
        empty_uid["request"]["uid"] = json!("");
        let reply = client.post("/validate", empty_uid.to_string()).await;
        assert_refused(&reply, StatusCode::BAD_REQUEST, "request.uid must not be empty\n");

        // The connection is still good for a real review.
        assert_eq!(
            client.review("/validate", &pod_review("allow", alpn)).await["allowed"],
            true
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_policies_are_404() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        let body = pod_review("allow", alpn).to_string();
        let reply = client.post("/validate/no-such-policy", body.clone()).await;
        assert_refused(
            &reply,
            StatusCode::NOT_FOUND,
            "no validating policy named `no-such-policy`\n",
        );
        // A validating policy is not a mutating one, and the other way round.
        let reply = client.post("/mutate/deny-all", body.clone()).await;
        assert_refused(
            &reply,
            StatusCode::NOT_FOUND,
            "no mutating policy named `deny-all`\n",
        );
        let reply = client.post("/validate/gpu-tolerations", body).await;
        assert_refused(
            &reply,
            StatusCode::NOT_FOUND,
            "no validating policy named `gpu-tolerations`\n",
        );
        // The URL is wrong whatever the body: 404 before the body is judged.
        let reply = client.post("/validate/no-such-policy", "{oops").await;
        assert_refused(
            &reply,
            StatusCode::NOT_FOUND,
            "no validating policy named `no-such-policy`\n",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_405() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        for path in ["/validate", "/mutate", "/validate/allow-all"] {
            let reply = client.get(path).await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "GET {path} over {alpn:?}"
            );
            assert_eq!(
                reply.headers.get("allow").map(|v| v.to_str().unwrap_or("")),
                Some("POST")
            );
        }
        let reply = client.request(Method::POST, "/healthz", Vec::new()).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        // A syntactically fine review, padded past the limit with a long label.
        let mut big = pod_review("allow", alpn);
        big["request"]["object"]["metadata"]["labels"]["padding"] = json!("x".repeat(BODY_LIMIT));
        let reply = client.post("/validate", big.to_string()).await;
        assert_refused(
            &reply,
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body exceeds the limit of {BODY_LIMIT} bytes\n"),
        );
    }
    // The server still serves.
    let mut client = server.h1().await;
    assert_eq!(
        client
            .review("/validate", &pod_review("allow", Alpn::Http1))
            .await["allowed"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_are_200() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        let reply = client.get("/healthz").await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::OK, "ok"),
            "{alpn:?}"
        );
        let reply = client.get("/readyz").await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::OK, "ready"),
            "{alpn:?}"
        );
        let reply = client.get("/no-such-route").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitored_mutation_is_not_applied_but_warned() {
    let server = server().await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        let r = gpu_pod_review("monitor-mutate", &format!("monitor-mutate-{alpn:?}"));
        assert_eq!(
            client.review("/mutate", &r).await,
            json!({
                "uid": r["request"]["uid"],
                "allowed": true,
                "warnings": ["[monitor] gpu-tolerations-monitored: would mutate the object (not applied in monitor mode)"]
            }),
            "{alpn:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_on_one_h2_connection_each_get_their_own_answer() {
    let server = server().await;
    let client = server.h2().await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let mut stream = client.stream().expect("HTTP/2 multiplexes");
        tasks.push(tokio::spawn(async move {
            // Alternate scenarios so that answers differ, not just uids.
            let namespace = ["allow", "deny", "annotate", "gpu"][i % 4];
            let uid = format!("stream-{i}");
            let r = if namespace == "gpu" {
                gpu_pod_review(namespace, &uid)
            } else {
                review("Pod", pod("p"), "CREATE", namespace, &uid, false)
            };
            let path = if namespace == "gpu" {
                "/mutate"
            } else {
                "/validate"
            };
            (namespace, stream.review(path, &r).await)
        }));
    }
    for task in tasks {
        let (namespace, response) = task.await.expect("task");
        match namespace {
            "allow" => assert_eq!(response["allowed"], true),
            "deny" => assert_eq!(response["status"]["code"], 422),
            "annotate" => assert_eq!(response["warnings"], json!(["first warning", "second warning"])),
            _ => assert_eq!(response["patchType"], "JSONPatch"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_serving_turns_every_denial_into_a_warning() {
    let config = "policies:\n  - {name: deny-all, module: deny_all.wasm}\n";
    let knobs = Knobs {
        dry_run: true,
        ..Knobs::default()
    };
    let server =
        TestServer::start_with(Some(config), &[("deny_all.wasm", wat_fixture("deny_all"))], knobs).await;
    for alpn in Alpn::BOTH {
        let mut client = server.client(alpn).await;
        let r = review("Pod", pod("p"), "CREATE", "ml", "dry-run-serve", false);
        assert_eq!(
            client.review("/validate", &r).await,
            json!({
                "uid": "dry-run-serve",
                "allowed": true,
                "warnings": ["[monitor] deny-all: deny-all refuses everything"],
                "auditAnnotations": {"deny-all": "monitor: would deny: deny-all refuses everything"}
            }),
            "{alpn:?}"
        );
    }
}
