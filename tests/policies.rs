//! Every policy crate's fixtures (`policies/<name>/fixtures/*.json`), run as Wasm through the real
//! server: the policy harness proves the logic natively, this proves the built module, the ABI,
//! settings delivery, the AdmissionReview round trip and the JSON Patch agree with it.
//!
//! One server holds an instance `<policy>-<n>` of each policy for every distinct settings value
//! its fixtures use; each fixture is wrapped into an AdmissionReview by
//! `portcullis_policy_sdk::testing::request_json_from_fixture` itself (policies/README.md) and
//! POSTed to `/validate/<instance>` or `/mutate/<instance>`. Every failure of every fixture is
//! reported at once, under its file name.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use common::{TestServer, apply_patch, review_fixture};
use portcullis_policy_sdk::testing;
use serde_json::{Value, json};

/// Policies that change objects, so are configured `mutating: true` and served on `/mutate`.
const MUTATING: &[&str] = &["default-resources", "gpu-tolerations", "secret-references"];

/// Policies whose fixtures must be there. secret-references joins when its fixtures land.
const REQUIRED: &[&str] = &[
    "default-resources",
    "gpu-node-isolation",
    "gpu-request-limit",
    "gpu-tolerations",
    "no-plaintext-secrets",
    "pinned-images",
    "readiness-probe",
];

/// Generous per-evaluation bound: these tests are about policy logic, not deadlines, and CI
/// machines are loaded.
const TIMEOUT_MS: u64 = 2000;

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// One fixture file, parsed.
struct Case {
    /// `<policy>/fixtures/<file>`, for reports.
    label: String,
    /// The file stem: the request's uid.
    stem: String,
    policy: String,
    fixture: Value,
}

/// Every `policies/*/fixtures/*.json`, sorted.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(policies_dir())
        .expect("policies/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        // Policy crates only: policies/examples/ has fixtures too, run by tests/languages.rs.
        .filter(|p| p.join("Cargo.toml").is_file() && p.join("fixtures").is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let policy = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 name")
            .to_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("fixtures"))
            .expect("fixtures/")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for file in files {
            let stem = file
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("UTF-8 stem")
                .to_owned();
            let text = std::fs::read_to_string(&file).expect("read fixture");
            let fixture: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            cases.push(Case {
                label: format!("{policy}/fixtures/{stem}.json"),
                stem,
                policy: policy.clone(),
                fixture,
            });
        }
    }
    cases
}

/// The AdmissionReview for a fixture, its request built by the very function the policies'
/// native harness uses, so both halves of the fixture contract are one piece of code.
fn fixture_review(case: &Case) -> Value {
    let fixture: testing::Fixture = serde_json::from_value(case.fixture.clone())
        .unwrap_or_else(|e| panic!("{}: not a fixture: {e}", case.label));
    let request = testing::request_json_from_fixture(&case.stem, &fixture)
        .unwrap_or_else(|e| panic!("{}: {e}", case.label));
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// Instances per (policy, settings), named `<policy>-<n>`, and the configuration holding them.
fn instances(cases: &[Case]) -> (BTreeMap<(String, String), String>, String) {
    let mut names = BTreeMap::new();
    let mut policies = Vec::new();
    let mut per_policy: BTreeMap<&str, usize> = BTreeMap::new();
    for case in cases {
        // Absent settings are sent as null, as the policy harness does.
        let settings = case.fixture.get("settings").cloned().unwrap_or(Value::Null);
        let key = (case.policy.clone(), settings.to_string());
        if names.contains_key(&key) {
            continue;
        }
        let n = per_policy.entry(case.policy.as_str()).or_insert(0);
        let name = format!("{}-{n}", case.policy);
        *n += 1;
        let module = policies_dir()
            .join("wasm")
            .join(format!("{}.wasm", case.policy.replace('-', "_")));
        policies.push(json!({
            "name": name,
            "module": module,
            "mutating": MUTATING.contains(&case.policy.as_str()),
            "mode": "enforce",
            "timeout_ms": TIMEOUT_MS,
            "settings": settings,
        }));
        names.insert(key, name);
    }
    // JSON is YAML.
    (names, json!({"policies": policies}).to_string())
}

/// Every way the server's answer differs from the fixture's expectation.
fn compare(case: &Case, mutating: bool, response: &Value) -> Vec<String> {
    let mut failures = Vec::new();
    let expect = &case.fixture["expect"];
    let accepted = expect["accepted"].as_bool().expect("expect.accepted");
    let allowed = response["allowed"].as_bool();
    let message = response["status"]["message"].as_str().unwrap_or("");
    if allowed != Some(accepted) {
        failures.push(format!(
            "expected allowed={accepted}, got {:?} (message: {message:?})",
            response["allowed"]
        ));
    }
    for needle in expect["message_contains"].as_array().into_iter().flatten() {
        let needle = needle.as_str().expect("message_contains entries are strings");
        if !message.contains(needle) {
            failures.push(format!("status.message lacks {needle:?}; it was {message:?}"));
        }
    }
    let warnings: Vec<&str> = response["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for needle in expect["warnings_contain"].as_array().into_iter().flatten() {
        let needle = needle.as_str().expect("warnings_contain entries are strings");
        if !warnings.iter().any(|w| w.contains(needle)) {
            failures.push(format!(
                "no warning contains {needle:?}; warnings were {warnings:?}"
            ));
        }
    }
    let object = &case.fixture["object"];
    let has_patch = response.get("patch").is_some();
    match expect.get("mutated_object") {
        Some(want) if mutating && want != object => {
            if has_patch {
                match common::try_apply_patch(response, object) {
                    Ok(got) if &got == want => {}
                    Ok(got) => failures.push(format!(
                        "patched object differs\n--- expected\n{}\n--- got\n{}",
                        pretty(want),
                        pretty(&got)
                    )),
                    Err(e) => failures.push(e),
                }
            } else {
                failures.push("the fixture expects a mutation but the response has no patch".into());
            }
        }
        // A mutation to the very same object is no patch at all.
        Some(_) | None => {
            if has_patch || response.get("patchType").is_some() {
                failures.push(format!("unexpected patch: {response}"));
            }
        }
    }
    failures
}

#[expect(
    clippy::disallowed_methods,
    reason = "failure reports are read by people, not sent on the hot path"
)]
fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_fixture_passes_through_the_real_server() {
    let cases = cases();
    for policy in REQUIRED {
        assert!(
            cases.iter().any(|c| c.policy == *policy),
            "policies/{policy}/fixtures holds no fixture"
        );
    }
    let (names, config) = instances(&cases);
    let server = TestServer::start(&config, &[]).await;
    let mut client = server.h2().await;

    let mut report = String::new();
    let mut failed = 0;
    let mut patches = 0;
    for case in &cases {
        let settings = case.fixture.get("settings").cloned().unwrap_or(Value::Null);
        let instance = &names[&(case.policy.clone(), settings.to_string())];
        let mutating = MUTATING.contains(&case.policy.as_str());
        let route = if mutating { "mutate" } else { "validate" };
        let review = fixture_review(case);
        let reply = client
            .post(
                &format!("/{route}/{instance}"),
                serde_json::to_vec(&review).expect("JSON"),
            )
            .await;
        let failures = if reply.status != hyper::StatusCode::OK {
            vec![format!("HTTP {}: {}", reply.status, reply.text())]
        } else {
            let body = reply.json();
            let response = &body["response"];
            patches += usize::from(response.get("patch").is_some());
            let mut failures = compare(case, mutating, response);
            if response["uid"] != case.stem.as_str() {
                failures.push(format!("uid not echoed: {response}"));
            }
            failures
        };
        if !failures.is_empty() {
            failed += 1;
            let _ = writeln!(report, "\n{} (via /{route}/{instance}):", case.label);
            for failure in failures {
                let _ = writeln!(report, "  - {failure}");
            }
        }
    }
    assert!(
        failed == 0,
        "{failed} of {} fixtures failed:{report}",
        cases.len()
    );
    // The mutating fixtures really went through patches.
    let expected_patches = cases
        .iter()
        .filter(|c| {
            c.fixture["expect"]
                .get("mutated_object")
                .is_some_and(|m| m != &c.fixture["object"])
        })
        .count();
    assert!(expected_patches > 0);
    assert_eq!(patches, expected_patches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_set_denies_latest_and_tolerates_gpus() {
    let server = TestServer::builtin().await;
    let mut client = server.h2().await;

    let latest = review_fixture("deployment_latest");
    let response = client.review("/validate", &latest).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["status"], "Failure");
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().expect("message");
    assert!(
        message.contains(
            "pinned-images: Deployment ranking-api, container \"api\": image \
             \"ghcr.io/example/ranking-api:latest\" uses the mutable tag :latest"
        ),
        "{message}"
    );

    // kube-system is excluded from every policy of the default set.
    let mut system = latest.clone();
    system["request"]["namespace"] = json!("kube-system");
    system["request"]["object"]["metadata"]["namespace"] = json!("kube-system");
    assert_eq!(
        client.review("/validate", &system).await,
        json!({"uid": latest["request"]["uid"], "allowed": true})
    );

    let gpu = review_fixture("pod_gpu");
    let object = &gpu["request"]["object"];
    let response = client.review("/mutate", &gpu).await;
    assert_eq!(response["allowed"], true, "{response}");
    let patched = apply_patch(&response, object);
    assert_eq!(
        patched["spec"]["tolerations"],
        json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]),
        "{patched}"
    );
    // default-resources ran first, with default.yaml's settings.
    let resources = &patched["spec"]["containers"][0]["resources"];
    assert_eq!(resources["requests"]["cpu"], "250m", "{resources}");
    assert_eq!(resources["requests"]["memory"], "512Mi", "{resources}");
    assert_eq!(resources["limits"]["memory"], "1Gi", "{resources}");
    // The GPU pod itself passes validation.
    let response = client.review("/validate", &gpu).await;
    assert_eq!(response["allowed"], true, "{response}");
}
