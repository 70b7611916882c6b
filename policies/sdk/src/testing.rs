//! The fixture harness: runs a policy over `fixtures/*.json` under `cargo test`.
//!
//! A fixture is one admission scenario and its expected verdict (format in policies/README.md):
//!
//! ```json
//! { "description": "why this case exists",
//!   "object": { "apiVersion": "apps/v1", "kind": "Deployment", ... },
//!   "operation": "CREATE", "namespace": "ml-prod", "settings": { },
//!   "expect": { "accepted": false, "message_contains": ["..."], "warnings_contain": ["..."],
//!               "mutated_object": { ... } } }
//! ```
//!
//! The harness goes through the same JSON path a Wasm module does ([`crate::abi::run_validate`]),
//! so serde attributes on settings and responses are exercised too; only the raw pointer handling
//! is left to the wasm32 build. The webhook's integration tests read the very same files and build
//! the same request (see [`request_json_from_fixture`]), so the format is a contract: fields are
//! closed (`deny_unknown_fields`) to catch typos such as `message_contain` silently asserting
//! nothing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::abi::{run_validate, run_validate_settings};
use crate::request::{AdmissionRequest, Operation, ValidationRequest};
use crate::response::{SettingsValidation, ValidationResponse};
use crate::settings::Settings;

/// One fixture file.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// Why the case exists; required so that a failing case explains itself.
    pub description: String,
    /// The full Kubernetes object under review (must carry `apiVersion` and `kind`).
    pub object: Value,
    /// The admission operation; CREATE when absent.
    #[serde(default)]
    pub operation: Option<Operation>,
    /// Request namespace; else `object.metadata.namespace`; else `default`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Policy settings; absent means the policy's defaults (sent as `null`).
    #[serde(default)]
    pub settings: Option<Value>,
    /// The expected verdict.
    pub expect: Expectation,
}

/// What the policy must answer for a fixture.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The expected verdict.
    pub accepted: bool,
    /// Substrings that must all occur in the response message.
    #[serde(default)]
    pub message_contains: Vec<String>,
    /// Substrings that must each occur in at least one warning.
    #[serde(default)]
    pub warnings_contain: Vec<String>,
    /// The full object after mutation; absent means the policy must not mutate.
    #[serde(default)]
    pub mutated_object: Option<Value>,
}

/// Reads and parses one fixture file.
pub fn load_fixture(path: &Path) -> Result<Fixture, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("not a valid fixture: {e}"))
}

/// The `*.json` files in `<crate_dir>/fixtures`, sorted. Missing or empty is an error: a policy
/// with zero fixtures is untested.
pub fn fixture_paths(crate_dir: &str) -> Result<Vec<PathBuf>, String> {
    let dir = Path::new(crate_dir).join("fixtures");
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(format!("{} holds no *.json fixtures", dir.display()));
    }
    Ok(paths)
}

/// The `request` member of the AdmissionReview a fixture stands for, exactly as the webhook's
/// integration tests build it:
///
/// - `uid`: `case` (the file stem);
/// - `kind` and `requestKind`: group and version from `object.apiVersion` (`"v1"` → core group
///   `""`), kind from `object.kind`;
/// - `resource` and `requestResource`: same group/version, resource = the kind lower-cased and
///   naively pluralised (`Deployment` → `deployments`, `NetworkPolicy` → `networkpolicies`);
/// - `name`: `object.metadata.name` or `""`; `namespace`: see [`Fixture::namespace`];
/// - `operation`: the fixture's or CREATE; `object`: the fixture's object; `oldObject`: the same
///   object for UPDATE and DELETE (with `object` null for DELETE), absent for CREATE/CONNECT;
/// - `dryRun`: false; `userInfo`: `{"username": "portcullis-fixtures"}`.
pub fn request_json_from_fixture(case: &str, fixture: &Fixture) -> Result<Value, String> {
    let object = &fixture.object;
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or("object has no apiVersion")?;
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("object has no kind")?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let meta = |field: &str| {
        object
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
    };
    let namespace = fixture
        .namespace
        .as_deref()
        .or(meta("namespace"))
        .unwrap_or("default");
    let operation = fixture.operation.unwrap_or(Operation::Create);
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": plural(kind)});
    let mut request = json!({
        "uid": case,
        "kind": gvk, "requestKind": gvk,
        "resource": gvr, "requestResource": gvr,
        "name": meta("name").unwrap_or(""),
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "portcullis-fixtures"},
        "dryRun": false,
    });
    match operation {
        Operation::Create | Operation::Connect => request["object"] = object.clone(),
        Operation::Update => {
            request["object"] = object.clone();
            request["oldObject"] = object.clone();
        }
        Operation::Delete => {
            request["object"] = Value::Null;
            request["oldObject"] = object.clone();
        }
    }
    Ok(request)
}

/// [`request_json_from_fixture`], typed.
pub fn request_from_fixture(case: &str, fixture: &Fixture) -> Result<AdmissionRequest, String> {
    serde_json::from_value(request_json_from_fixture(case, fixture)?)
        .map_err(|e| format!("fixture request does not deserialise: {e}"))
}

/// Naive English plural of a lower-cased kind, enough for resource names in fixtures (and in
/// the webhook's own test reviews, which use this function too).
pub fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
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

/// Runs one fixture through the policy and lists every way the answer differs from the
/// expectation (empty when it passes).
pub fn check_fixture<S: Settings>(
    case: &str,
    fixture: &Fixture,
    validate: fn(&ValidationRequest<S>) -> ValidationResponse,
) -> Vec<String> {
    let mut failures = Vec::new();
    if fixture.description.trim().is_empty() {
        failures.push("description is empty".to_string());
    }
    let settings = fixture.settings.clone().unwrap_or(Value::Null);
    let settings_bytes = settings.to_string();
    match serde_json::from_slice::<SettingsValidation>(&run_validate_settings::<S>(settings_bytes.as_bytes()))
    {
        Ok(answer) if answer.valid => {}
        Ok(answer) => failures.push(format!(
            "validate_settings rejected the settings: {}",
            answer.message.unwrap_or_default()
        )),
        Err(e) => failures.push(format!("validate_settings answered non-JSON: {e}")),
    }
    let request = match request_json_from_fixture(case, fixture) {
        Ok(request) => request,
        Err(e) => {
            failures.push(e);
            return failures;
        }
    };
    let input = json!({"request": request, "settings": settings}).to_string();
    let response: ValidationResponse = match serde_json::from_slice(&run_validate(input.as_bytes(), validate))
    {
        Ok(response) => response,
        Err(e) => {
            failures.push(format!("policy answered something that is not a response: {e}"));
            return failures;
        }
    };
    compare(&fixture.expect, &response, &mut failures);
    failures
}

fn compare(expect: &Expectation, got: &ValidationResponse, failures: &mut Vec<String>) {
    let message = got.message.as_deref().unwrap_or("");
    if got.accepted != expect.accepted {
        failures.push(format!(
            "expected accepted={}, got accepted={} (message: {message:?})",
            expect.accepted, got.accepted
        ));
    }
    if !got.accepted && message.is_empty() {
        failures.push("a rejection must carry a message".to_string());
    }
    for needle in &expect.message_contains {
        if !message.contains(needle.as_str()) {
            failures.push(format!("message lacks {needle:?}; message was {message:?}"));
        }
    }
    for needle in &expect.warnings_contain {
        if !got.warnings.iter().any(|w| w.contains(needle.as_str())) {
            failures.push(format!(
                "no warning contains {needle:?}; warnings were {:?}",
                got.warnings
            ));
        }
    }
    match (&expect.mutated_object, &got.mutated_object) {
        (None, None) => {}
        (None, Some(_)) => failures.push("the policy mutated but the fixture expects no mutation".into()),
        (Some(_), None) => {
            failures.push("the fixture expects a mutation but the policy did not mutate".into())
        }
        (Some(want), Some(have)) if want != have => failures.push(format!(
            "mutated object differs\n--- expected\n{}\n--- got\n{}",
            pretty(want),
            pretty(have)
        )),
        (Some(_), Some(_)) => {}
    }
}

/// Pretty JSON for failure reports only: a human diffs the expected and actual mutated objects,
/// far from any request path, so the project-wide ban on pretty output does not apply here.
#[allow(clippy::disallowed_methods)]
fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Runs every fixture of the policy crate at `crate_dir` (pass `env!("CARGO_MANIFEST_DIR")`) and
/// panics listing every failure of every fixture, each under its file name. Also fails when the
/// crate has no fixtures.
pub fn check_fixtures<S: Settings>(
    crate_dir: &str,
    validate: fn(&ValidationRequest<S>) -> ValidationResponse,
) {
    let paths = match fixture_paths(crate_dir) {
        Ok(paths) => paths,
        Err(e) => panic!("{e}"),
    };
    let mut report = String::new();
    let mut failed = 0;
    for path in &paths {
        let case = path.file_stem().and_then(|s| s.to_str()).unwrap_or("fixture");
        let failures = match load_fixture(path) {
            Ok(fixture) => check_fixture(case, &fixture, validate),
            Err(e) => vec![e],
        };
        if !failures.is_empty() {
            failed += 1;
            let _ = writeln!(report, "\n{}:", path.display());
            for failure in failures {
                let _ = writeln!(report, "  - {failure}");
            }
        }
    }
    assert!(
        failed == 0,
        "{failed} of {} fixtures failed:{report}",
        paths.len()
    );
}

/// A tiny deterministic pseudo-random generator (xorshift64*) for property-style tests: the
/// workspace keeps its dependencies to serde, so no proptest. Same seed, same cases, so a failure
/// always reproduces.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (0 is replaced by a fixed non-zero seed).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound.max(1) as u64) as usize
    }

    /// A string of up to `max_len` characters drawn from `alphabet`.
    pub fn string(&mut self, alphabet: &str, max_len: usize) -> String {
        let chars: Vec<char> = alphabet.chars().collect();
        let len = self.below(max_len + 1);
        (0..len).map(|_| chars[self.below(chars.len())]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct NoKnobs {}
    impl Settings for NoKnobs {}

    fn deny_pods(r: &ValidationRequest<NoKnobs>) -> ValidationResponse {
        if r.request.kind.kind == "Pod" {
            ValidationResponse::reject(format!("no pods in {:?}", r.request.namespace))
                .with_warning("pods are cattle")
        } else {
            ValidationResponse::accept()
        }
    }

    fn fixture(value: Value) -> Fixture {
        serde_json::from_value(value).expect("valid fixture")
    }

    #[test]
    fn builds_the_request_from_the_object() {
        let f = fixture(json!({
            "description": "d",
            "object": {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                       "metadata": {"name": "bert-ft", "namespace": "research"}},
            "expect": {"accepted": true}
        }));
        let r = request_from_fixture("case-1", &f).expect("request");
        assert_eq!(r.uid, "case-1");
        assert_eq!(r.kind.group, "kubeflow.org");
        assert_eq!(r.kind.version, "v1");
        assert_eq!(r.name, "bert-ft");
        assert_eq!(r.namespace.as_deref(), Some("research"));
        assert_eq!(r.operation, Operation::Create);
        let raw = request_json_from_fixture("case-1", &f).expect("request");
        assert_eq!(raw["resource"]["resource"], "pytorchjobs");
        assert!(raw.get("oldObject").is_none());
    }

    #[test]
    fn core_group_default_namespace_and_delete() {
        let f = fixture(json!({
            "description": "d", "operation": "DELETE",
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "x-"}},
            "expect": {"accepted": true}
        }));
        let r = request_from_fixture("c", &f).expect("request");
        assert_eq!(r.kind.group, "");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.name, "");
        assert_eq!(r.object, Value::Null);
        assert_eq!(r.old_object["kind"], "Pod");
    }

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
            assert_eq!(a.below(5), b.below(5));
            let s = a.string("xy", 4);
            assert_eq!(s, b.string("xy", 4));
            assert!(s.len() <= 4 && s.chars().all(|c| c == 'x' || c == 'y'));
        }
        assert!((0..100).all(|_| a.below(3) < 3));
    }

    #[test]
    fn plurals() {
        assert_eq!(plural("Deployment"), "deployments");
        assert_eq!(plural("NetworkPolicy"), "networkpolicies");
        assert_eq!(plural("Ingress"), "ingresses");
        assert_eq!(plural("Gateway"), "gateways");
    }

    #[test]
    fn compares_every_expectation() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ml"}});
        let pass = fixture(json!({"description": "d", "object": pod, "expect": {
            "accepted": false, "message_contains": ["no pods", "ml"], "warnings_contain": ["cattle"]}}));
        assert_eq!(check_fixture("c", &pass, deny_pods), Vec::<String>::new());

        let fail = fixture(json!({"description": "", "object": pod, "expect": {
            "accepted": true, "message_contains": ["absent"], "warnings_contain": ["nope"],
            "mutated_object": {}}}));
        let failures = check_fixture("c", &fail, deny_pods);
        assert_eq!(failures.len(), 5, "{failures:#?}");
    }

    #[test]
    fn rejected_settings_are_a_failure() {
        let f = fixture(json!({"description": "d", "settings": {"unknown": 1},
            "object": {"apiVersion": "apps/v1", "kind": "Deployment"}, "expect": {"accepted": true}}));
        let failures = check_fixture("c", &f, deny_pods);
        assert!(
            failures.iter().any(|f| f.contains("validate_settings rejected")),
            "{failures:?}"
        );
    }

    #[test]
    fn unknown_fixture_fields_are_rejected() {
        let typo =
            json!({"description": "d", "object": {}, "expect": {"accepted": true, "message_contain": ["x"]}});
        assert!(serde_json::from_value::<Fixture>(typo).is_err());
    }

    #[test]
    fn an_empty_fixture_dir_is_an_error() {
        let dir = std::env::temp_dir().join(format!("portcullis-empty-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("fixtures")).expect("temp dir");
        let result = fixture_paths(dir.to_str().expect("utf-8 path"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            result
                .expect_err("empty must fail")
                .contains("no *.json fixtures")
        );
    }
}
