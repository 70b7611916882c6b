//! The metrics listener as a scraper meets it: the real server with its metrics on
//! 127.0.0.1:0, known traffic sent over HTTPS, then `/metrics` scraped over plain HTTP, parsed,
//! and every count checked exactly: requests by endpoint and decision, evaluations by policy,
//! mode and outcome, faults by kind, the latency histograms, the policy set generation, the
//! certificate's expiry and the build.

mod common;

use common::prometheus::{Scrape, plain, scrape};
use common::{Knobs, TestServer, Workspace, pod, review, wat_fixture};
use hyper::{Method, StatusCode};
use tokio::sync::OnceCell;

/// The serving certificate's notAfter: 2031-07-14T00:00:00Z, in seconds since the epoch.
const NOT_AFTER: i64 = 1_941_753_600;

/// Each policy evaluates what its name says; `looping` never returns and times out.
const CONFIG: &str = "policies:
  - {name: allow-all, module: allow_all.wasm}
  - {name: deny-all, module: deny_all.wasm}
  - {name: deny-all-monitored, module: deny_all.wasm, mode: monitor}
  - {name: trapping, module: trap.wasm}
  - {name: looping, module: infinite_loop.wasm, timeout_ms: 50}
  - {name: renamer, module: validating_mutates.wasm, mutating: true}
  - {name: mutates-unasked, module: validating_mutates.wasm}
";

fn modules() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("allow_all.wasm", wat_fixture("allow_all")),
        ("deny_all.wasm", wat_fixture("deny_all")),
        ("trap.wasm", wat_fixture("trap")),
        ("infinite_loop.wasm", wat_fixture("infinite_loop")),
        ("validating_mutates.wasm", wat_fixture("validating_mutates")),
    ]
}

/// A workspace whose serving certificate (for localhost and 127.0.0.1) expires at
/// [`NOT_AFTER`], signed by a CA of its own.
fn workspace() -> Workspace {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ws = Workspace::new(Some(CONFIG), &modules());
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "metrics test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut leaf =
        CertificateParams::new(vec![common::SERVER_NAME.to_owned(), "127.0.0.1".to_owned()]).expect("params");
    leaf.not_after = rcgen::date_time_ymd(2031, 7, 14);
    let cert = leaf.signed_by(&key, &issuer).expect("serving certificate");
    std::fs::write(&ws.cert, cert.pem()).expect("write the certificate");
    std::fs::write(&ws.key, key.serialize_pem()).expect("write the key");
    ws.ca_pem = ca_cert.pem();
    ws
}

/// The server, after the known traffic of [`traffic`].
static SERVER: OnceCell<TestServer> = OnceCell::const_new();

async fn server() -> &'static TestServer {
    SERVER
        .get_or_init(|| async {
            let server = TestServer::start_in(workspace(), Knobs::default(), None).await;
            traffic(&server).await;
            server
        })
        .await
}

/// 3 allowed, 2 denied, 1 allowed by a monitored denial, 1 mutated; 3 denied by faults (a trap,
/// a timeout, output a validating policy may not give); 1 unknown policy (404) and 1 unreadable
/// body (400) on `/validate`, none of which reaches a policy.
async fn traffic(server: &TestServer) {
    let mut client = server.h2().await;
    let pod_review = |uid: &str| review("Pod", pod("web"), "CREATE", "default", uid, false);
    let allowed = |r: &serde_json::Value| r["allowed"].as_bool().expect("allowed is a bool");
    for i in 0..3 {
        let r = client
            .review("/validate/allow-all", &pod_review(&format!("allow-{i}")))
            .await;
        assert!(allowed(&r), "{r}");
    }
    for i in 0..2 {
        let r = client
            .review("/validate/deny-all", &pod_review(&format!("deny-{i}")))
            .await;
        assert!(!allowed(&r), "{r}");
    }
    let r = client
        .review("/validate/deny-all-monitored", &pod_review("monitored"))
        .await;
    assert!(allowed(&r), "{r}");
    let r = client.review("/mutate/renamer", &pod_review("mutate")).await;
    assert_eq!(r["patchType"], "JSONPatch", "{r}");
    for policy in ["trapping", "looping", "mutates-unasked"] {
        let r = client
            .review(&format!("/validate/{policy}"), &pod_review(policy))
            .await;
        assert_eq!(r["status"]["code"], 500, "{policy}: {r}");
    }
    let reply = client
        .post(
            "/validate/no-such-policy",
            serde_json::to_vec(&pod_review("unknown")).expect("json"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = client.post("/validate/allow-all", b"{not json".to_vec()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_endpoint_and_decision() {
    let scrape = scrape(server().await).await;
    let requests = "portcullis_requests_total";
    // The Prometheus text format names a counter's family with its `_total`.
    assert_eq!(scrape.types.get(requests).map(String::as_str), Some("counter"));
    for (endpoint, decision, count) in [
        ("validate", "allowed", 4.0),
        ("validate", "denied", 5.0),
        ("validate", "4xx", 2.0),
        ("mutate", "mutated", 1.0),
    ] {
        assert_eq!(
            scrape.value(requests, &[("endpoint", endpoint), ("decision", decision)]),
            count,
            "{endpoint} {decision}"
        );
    }
    // Nothing else on the review routes; `other` holds the harness's `/readyz` polls.
    let review_sets: Vec<_> = scrape
        .label_sets(requests)
        .into_iter()
        .filter(|l| l["endpoint"] != "other")
        .collect();
    assert_eq!(review_sets.len(), 4, "{review_sets:?}");
    let duration = "portcullis_request_duration_seconds";
    assert_eq!(scrape.types.get(duration).map(String::as_str), Some("histogram"));
    assert_eq!(
        scrape.value(&format!("{duration}_count"), &[("endpoint", "validate")]),
        11.0
    );
    assert_eq!(
        scrape.value(&format!("{duration}_count"), &[("endpoint", "mutate")]),
        1.0
    );
    assert_eq!(
        scrape.value(
            &format!("{duration}_bucket"),
            &[("endpoint", "validate"), ("le", "+Inf")]
        ),
        11.0
    );
    // The timed-out evaluation alone took 50 ms.
    assert!(scrape.value(&format!("{duration}_sum"), &[("endpoint", "validate")]) >= 0.05);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_counts_as_other() {
    let server = server().await;
    let before = scrape(server).await;
    let other = [("endpoint", "other"), ("decision", "2xx")];
    let reply = server.h1().await.get("/healthz").await;
    assert_eq!(reply.status, StatusCode::OK);
    let after = scrape(server).await;
    assert_eq!(
        after.value("portcullis_requests_total", &other) - before.value("portcullis_requests_total", &other),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluations_are_counted_by_policy_mode_and_outcome() {
    let scrape = scrape(server().await).await;
    let name = "portcullis_policy_evaluations_total";
    let expected: &[(&str, &str, &str, f64)] = &[
        ("allow-all", "enforce", "accepted", 3.0),
        ("deny-all", "enforce", "rejected", 2.0),
        ("deny-all-monitored", "monitor", "rejected", 1.0),
        ("renamer", "enforce", "mutated", 1.0),
        ("trapping", "enforce", "fault", 1.0),
        ("looping", "enforce", "fault", 1.0),
        ("mutates-unasked", "enforce", "fault", 1.0),
    ];
    let mut sets = scrape.label_sets(name);
    // Every policy has a series per outcome from the start (zero until it happens).
    assert_eq!(sets.len(), 7 * 5, "{sets:?}");
    sets.sort();
    sets.dedup();
    assert_eq!(sets.len(), 7 * 5, "one series per label set");
    for sample in scrape.samples.iter().filter(|s| s.name == name) {
        let (policy, mode, outcome) = (
            sample.labels["policy"].as_str(),
            sample.labels["mode"].as_str(),
            sample.labels["outcome"].as_str(),
        );
        let want = expected
            .iter()
            .find(|(p, m, o, _)| (*p, *m, *o) == (policy, mode, outcome))
            .map_or(0.0, |e| e.3);
        assert_eq!(sample.value, want, "{policy} {mode} {outcome}");
        assert_eq!(sample.labels.len(), 3, "{sample:?}");
    }
    let latency = "portcullis_policy_evaluation_duration_seconds";
    assert_eq!(scrape.types.get(latency).map(String::as_str), Some("histogram"));
    for (policy, count) in [
        ("allow-all", 3.0),
        ("deny-all", 2.0),
        ("looping", 1.0),
        ("renamer", 1.0),
    ] {
        assert_eq!(
            scrape.value(&format!("{latency}_count"), &[("policy", policy)]),
            count,
            "{policy}"
        );
        assert_eq!(
            scrape.value(
                &format!("{latency}_bucket"),
                &[("policy", policy), ("le", "+Inf")]
            ),
            count,
            "{policy}"
        );
    }
    // The timeout is 50 ms; the call ends at the first epoch tick past it.
    let looped = scrape.value(&format!("{latency}_sum"), &[("policy", "looping")]);
    assert!((0.05..2.0).contains(&looped), "{looped}");
    assert_eq!(
        scrape.value(
            &format!("{latency}_bucket"),
            &[("policy", "looping"), ("le", "0.025")]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_counted_by_kind() {
    let scrape = scrape(server().await).await;
    let name = "portcullis_policy_faults_total";
    let kinds = ["timeout", "memory", "trap", "abi", "output", "instantiate"];
    for policy in ["allow-all", "trapping", "looping", "mutates-unasked"] {
        for kind in kinds {
            let want = match (policy, kind) {
                ("trapping", "trap") | ("looping", "timeout") | ("mutates-unasked", "output") => 1.0,
                _ => 0.0,
            };
            assert_eq!(
                scrape.value(name, &[("policy", policy), ("kind", kind)]),
                want,
                "{policy} {kind}"
            );
        }
    }
    assert_eq!(scrape.label_sets(name).len(), 7 * kinds.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_certificate_and_build_are_exported() {
    let server = server().await;
    let scrape = scrape(server).await;
    assert_eq!(scrape.value("portcullis_policy_set_generation", &[]), 1.0);
    assert_eq!(scrape.value("portcullis_policy_reload_failures_total", &[]), 0.0);
    assert_eq!(
        scrape.value("portcullis_tls_certificate_expiry_timestamp_seconds", &[]),
        NOT_AFTER as f64
    );
    assert_eq!(
        scrape.value("portcullis_tls_certificate_reload_failures_total", &[]),
        0.0
    );
    assert_eq!(
        scrape.value("portcullis_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    assert_eq!(scrape.value("portcullis_requests_in_flight", &[]), 0.0);
    assert!(scrape.value("portcullis_open_connections_peak", &[]) >= 1.0);
    assert_eq!(scrape.value("portcullis_request_body_reserved_bytes", &[]), 0.0);
    assert!(scrape.value("portcullis_request_body_reserved_peak_bytes", &[]) > 0.0);
    // No label anywhere names a request.
    for sample in &scrape.samples {
        for key in sample.labels.keys() {
            assert!(
                [
                    "endpoint", "decision", "policy", "mode", "outcome", "kind", "le", "version"
                ]
                .contains(&key.as_str()),
                "{sample:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_is_served_to_scrapers_that_ask_for_it() {
    let server = server().await;
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let (status, content_type, text) =
        plain(server.metrics_addr, Method::GET, "/metrics", Some(accept)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    let scrape = Scrape::parse(&text);
    // OpenMetrics names a counter's family without its `_total`, and has an info type.
    assert_eq!(
        scrape.types.get("portcullis_requests").map(String::as_str),
        Some("counter")
    );
    assert_eq!(
        scrape.types.get("portcullis_build").map(String::as_str),
        Some("info")
    );
    assert_eq!(
        scrape.value(
            "portcullis_policy_evaluations_total",
            &[
                ("policy", "allow-all"),
                ("mode", "enforce"),
                ("outcome", "accepted")
            ]
        ),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_serves_get_metrics_only() {
    let server = server().await;
    let (status, _, _) = plain(server.metrics_addr, Method::GET, "/", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = plain(server.metrics_addr, Method::POST, "/metrics", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, _) = plain(server.metrics_addr, Method::GET, "/validate", None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the webhook's routes are not on the metrics port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_stops_with_the_server() {
    let server = TestServer::start(
        "policies:\n  - {name: allow-all, module: allow_all.wasm}\n",
        &[("allow_all.wasm", wat_fixture("allow_all"))],
    )
    .await;
    let addr = server.metrics_addr;
    let (status, _, _) = plain(addr, Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    server.shutdown().await;
    let error = tokio::net::TcpStream::connect(addr)
        .await
        .expect_err("the metrics port is closed once the server has stopped");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused, "{error}");
}
