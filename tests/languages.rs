//! One policy in every language and transport (`policies/examples/`): through the real server,
//! every language's module gives every shared case the same decision and the same message, and
//! both are the case's, whichever transport (core, wasi, wapc) carries it; their `validate_settings` agree on the same settings documents; and each answers
//! malformed input with a rejection, never a trap.
//!
//! The WAT module is assembled here with the `wat` crate; the others are built from source by
//! `policies/examples/build.sh`, which `scripts/test` runs before these tests. Python and
//! JavaScript are components (`policies/wit/`); the test engines share an artifact cache under
//! the target directory, so only the first run pays their compilation.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::TestServer;
use portcullis::engine::limits::Limits;
use portcullis::engine::{CompiledModule, Engine, EngineOptions, Export};
use portcullis_policy_sdk::testing;
use serde_json::{Value, json};

/// Every language of `policies/examples/`, by module name (`build/<name>.wasm`): Go twice, as a
/// reactor (core transport) and as a WASI command (`go-wasi`, wasi transport); Rust with
/// Kubewarden's SDK speaks waPC; Python and JavaScript are components; the others the core
/// transport.
const LANGUAGES: &[&str] = &[
    "wat",
    "go",
    "go-wasi",
    "rust",
    "c",
    "assemblyscript",
    "python",
    "javascript",
];

/// Generous per-evaluation bound: these tests are about decisions, not deadlines, and CI machines
/// are loaded.
const TIMEOUT_MS: u64 = 2000;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/examples")
}

/// The module of `language`: WAT assembled from source, the others as `build.sh` built them.
fn module(language: &str) -> Vec<u8> {
    if language == "wat" {
        let path = examples_dir().join("wat/policy.wat");
        return wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let path = examples_dir().join("build").join(format!("{language}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run policies/examples/build.sh first (scripts/test does)",
            path.display()
        )
    })
}

/// One shared case.
struct Case {
    /// The file stem: the request's uid.
    stem: String,
    fixture: Value,
}

impl Case {
    /// Absent settings are sent as null, as the policy harness does.
    fn settings(&self) -> Value {
        self.fixture.get("settings").cloned().unwrap_or(Value::Null)
    }
}

/// Every `policies/examples/fixtures/*.json`, sorted.
fn cases() -> Vec<Case> {
    let dir = examples_dir().join("fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).expect("read fixture");
            Case {
                stem: file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .expect("UTF-8 stem")
                    .to_owned(),
                fixture: serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display())),
            }
        })
        .collect()
}

/// The AdmissionReview for a case, its request built by the policies' own fixture contract.
fn review(case: &Case) -> Value {
    let fixture: testing::Fixture = serde_json::from_value(case.fixture.clone())
        .unwrap_or_else(|e| panic!("{}: not a fixture: {e}", case.stem));
    let request = testing::request_json_from_fixture(&case.stem, &fixture)
        .unwrap_or_else(|e| panic!("{}: {e}", case.stem));
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// What a case must get: the decision, and for a rejection the whole message (the fixtures
/// README makes each rejecting case's `message_contains` the one complete message).
fn expected(case: &Case) -> (bool, String) {
    let expect = &case.fixture["expect"];
    let accepted = expect["accepted"].as_bool().expect("expect.accepted");
    let messages: Vec<&str> = expect["message_contains"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m.as_str().expect("message_contains entries are strings"))
        .collect();
    assert!(
        accepted == messages.is_empty() && messages.len() <= 1,
        "{}: a rejecting case gives exactly its whole message, an accepting one none",
        case.stem
    );
    (accepted, messages.concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_language_gives_every_case_the_same_decision_and_message() {
    let cases = cases();
    assert!(cases.len() >= 10, "only {} shared cases", cases.len());

    // An instance `<language>-<n>` per language and distinct settings, each on its own route.
    let mut settings: Vec<Value> = Vec::new();
    for case in &cases {
        if !settings.contains(&case.settings()) {
            settings.push(case.settings());
        }
    }
    let mut policies = Vec::new();
    for language in LANGUAGES {
        for (n, s) in settings.iter().enumerate() {
            policies.push(json!({
                "name": format!("{language}-{n}"),
                "module": format!("{language}.wasm"),
                "mode": "enforce",
                "timeout_ms": TIMEOUT_MS,
                "settings": s,
            }));
        }
    }
    let modules: Vec<(String, Vec<u8>)> = LANGUAGES
        .iter()
        .map(|l| (format!("{l}.wasm"), module(l)))
        .collect();
    let modules: Vec<(&str, Vec<u8>)> = modules.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    // JSON is YAML.
    let config = json!({"policies": policies}).to_string();
    let server = TestServer::start(&config, &modules).await;
    let mut client = server.h2().await;

    let mut report = String::new();
    let mut failed = 0;
    for case in &cases {
        let n = settings
            .iter()
            .position(|s| *s == case.settings())
            .expect("settings indexed");
        let review = review(case);
        let mut answers: BTreeMap<&str, (bool, String)> = BTreeMap::new();
        let mut problems = Vec::new();
        for language in LANGUAGES {
            let instance = format!("{language}-{n}");
            let response = client.review(&format!("/validate/{instance}"), &review).await;
            let allowed = response["allowed"].as_bool().expect("allowed is a bool");
            let message = response["status"]["message"].as_str().unwrap_or("");
            // The webhook names the policy before its message.
            let message = match (allowed, message.strip_prefix(&format!("{instance}: "))) {
                (true, _) if message.is_empty() => String::new(),
                (false, Some(own)) => own.to_owned(),
                _ => {
                    problems.push(format!("{language}: unexpected answer {response}"));
                    continue;
                }
            };
            answers.insert(language, (allowed, message));
        }
        let want = expected(case);
        for (language, got) in &answers {
            if *got != want {
                problems.push(format!("{language}: got {got:?}, expected {want:?}"));
            }
        }
        if !problems.is_empty() {
            failed += 1;
            let _ = writeln!(report, "\n{}:", case.stem);
            for p in problems {
                let _ = writeln!(report, "  - {p}");
            }
        }
    }
    assert!(failed == 0, "{failed} of {} cases differ:{report}", cases.len());
}

/// The modules compiled once for the engine-level tests of this file.
fn compiled() -> &'static (Engine, Vec<(&'static str, CompiledModule)>) {
    static COMPILED: OnceLock<(Engine, Vec<(&'static str, CompiledModule)>)> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let engine = Engine::new(EngineOptions {
            cache: common::artifact_cache(),
            ..EngineOptions::default()
        })
        .expect("engine");
        let modules = LANGUAGES
            .iter()
            .map(|l| {
                let m = engine.compile(&module(l)).unwrap_or_else(|e| panic!("{l}: {e}"));
                (*l, m)
            })
            .collect();
        (engine, modules)
    })
}

const LIMITS: Limits = Limits {
    timeout: Duration::from_millis(TIMEOUT_MS),
    memory_bytes: 64 << 20,
};

/// `export` of every language on `input`, parsed as JSON.
fn call_all(export: Export, input: &[u8]) -> Vec<(&'static str, Value)> {
    let shown = String::from_utf8_lossy(&input[..input.len().min(60)]).into_owned();
    compiled()
        .1
        .iter()
        .map(|(language, module)| {
            let output = module
                .call(export, input, LIMITS)
                .unwrap_or_else(|e| panic!("{language} on {shown:?}: {e}"));
            let value = serde_json::from_slice(&output.bytes).unwrap_or_else(|e| {
                panic!(
                    "{language}: output is not JSON ({e}): {}",
                    String::from_utf8_lossy(&output.bytes)
                )
            });
            (*language, value)
        })
        .collect()
}

#[test]
fn every_language_judges_settings_alike() {
    // Sent as written, so the order of keys is the document order the message depends on.
    let table: &[(&str, Value)] = &[
        ("null", json!({"valid": true})),
        ("{}", json!({"valid": true})),
        (
            r#"{"denied_registries": ["docker.io", "registry.local:5000", "localhost"]}"#,
            json!({"valid": true}),
        ),
        (
            "[]",
            json!({"valid": false, "message": "settings must be an object"}),
        ),
        (
            r#""docker.io""#,
            json!({"valid": false, "message": "settings must be an object"}),
        ),
        (
            r#"{"denied_registry": ["docker.io"]}"#,
            json!({"valid": false, "message": "unknown setting \"denied_registry\""}),
        ),
        (
            r#"{"denied_registries": "docker.io"}"#,
            json!({"valid": false, "message": "denied_registries must be a list of strings"}),
        ),
        (
            r#"{"denied_registries": ["docker.io", 5]}"#,
            json!({"valid": false, "message": "denied_registries must be a list of strings"}),
        ),
        (
            r#"{"denied_registries": ["docker.io", "https://quay.io/"]}"#,
            json!({"valid": false, "message": "denied_registries: \"https://quay.io/\" is not a registry host"}),
        ),
        (
            r#"{"denied_registries": [""]}"#,
            json!({"valid": false, "message": "denied_registries: \"\" is not a registry host"}),
        ),
        (
            r#"{"denied_registries": ["quay.io/acme"], "extra": 1}"#,
            json!({"valid": false, "message": "denied_registries: \"quay.io/acme\" is not a registry host"}),
        ),
        (
            r#"{"extra": 1, "denied_registries": ["quay.io/acme"]}"#,
            json!({"valid": false, "message": "unknown setting \"extra\""}),
        ),
        (
            r#"{"denied_registries": ["#,
            json!({"valid": false, "message": "settings are not valid JSON"}),
        ),
    ];
    let mut failures = Vec::new();
    for (settings, want) in table {
        for (language, got) in call_all(Export::ValidateSettings, settings.as_bytes()) {
            if &got != want {
                failures.push(format!("{language} on {settings}: got {got}, expected {want}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_language_rejects_malformed_input_without_trapping() {
    // Deeper than any reader recurses safely: each language bounds nesting at 128 levels.
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let deep_inside = format!(
        r#"{{"request": {{"kind": {{"kind": "Pod"}}, "object": {{"metadata": {}1{}}}}}}}"#,
        r#"{"a":"#.repeat(200),
        "}".repeat(200)
    );
    let inputs: &[&[u8]] = &[
        b"",
        b"not json",
        b"[1, 2]",
        br#"{"request": {"kind": {"kind": "Pod"}"#,
        br#"{"request": {}} trailing"#,
        br#"{"request": "unterminated}"#,
        deep.as_bytes(),
        deep_inside.as_bytes(),
    ];
    let mut failures = Vec::new();
    for input in inputs {
        let shown = String::from_utf8_lossy(&input[..input.len().min(40)]).into_owned();
        for (language, got) in call_all(Export::Validate, input) {
            let rejected = got["accepted"] == false
                && got["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("policy input was malformed"));
            if !rejected {
                failures.push(format!("{language} on {shown:?}: {got}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
