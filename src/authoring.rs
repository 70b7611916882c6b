//! `portcullis policy test`: a policy author's inner loop, like `kwctl run` or `gator verify`.
//! One module, its settings, and case files, each with the outcome it must have; a pass/fail
//! line per case.
//!
//! A case file is the fixture format of `policies/README.md` (the SDK's harness reads the same
//! files natively): `description`, the `object` under review (or, instead, a whole `review` as
//! the API server sends it), optional `operation`, `namespace` and `settings`, and `expect` with
//! `accepted`, `message_contains`, `warnings_contain` and `mutated_object`. The module runs in the
//! same engine and sandbox as in `serve`, through the same ABI and output decoding.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::engine::limits::Limits;
use crate::engine::{CompiledModule, Engine, EngineError, Export};
use crate::policy::evaluate::input;
use crate::policy::spec::{PolicyKind, Settings};
use crate::policy::verdict::Verdict;
use crate::review::Operation;
use crate::review::synthetic::resource_name;

/// Why a run could not start (a case that fails is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum AuthoringError {
    /// The module file could not be read.
    #[error("cannot read module {path}")]
    Module {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The module does not load as a policy.
    #[error("module {path} does not load")]
    Load {
        /// The path.
        path: String,
        /// What the engine said.
        #[source]
        source: EngineError,
    },
    /// The settings file could not be read or parsed.
    #[error("cannot read settings {path}: {problem}")]
    Settings {
        /// The path.
        path: String,
        /// Why.
        problem: String,
    },
}

/// One case file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    description: String,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    review: Option<Value>,
    #[serde(default)]
    operation: Option<Operation>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    settings: Option<Value>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    accepted: bool,
    #[serde(default)]
    message_contains: Vec<String>,
    #[serde(default)]
    warnings_contain: Vec<String>,
    #[serde(default)]
    mutated_object: Option<Value>,
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// The case file.
    pub case: String,
    /// Its description.
    pub description: String,
    /// Every way the answer differed from the expectation; empty when it passed.
    pub failures: Vec<String>,
}

/// Runs `cases` against the module at `module` with `settings` (a JSON or YAML file; a case's own
/// `settings` win), each evaluation under `limits` (use the policy's production bounds: a case
/// that only passes with more time would fail in the cluster). Blocking.
pub fn run(
    engine: &Engine,
    module: &Path,
    settings: Option<&Path>,
    cases: &[PathBuf],
    limits: Limits,
) -> Result<Vec<CaseResult>, AuthoringError> {
    let shown = module.display().to_string();
    let bytes = std::fs::read(module).map_err(|source| AuthoringError::Module {
        path: shown.clone(),
        source,
    })?;
    let compiled = engine
        .compile(&bytes)
        .map_err(|source| AuthoringError::Load { path: shown, source })?;
    let default_settings = match settings {
        None => Value::Null,
        Some(path) => {
            let fail = |problem: String| AuthoringError::Settings {
                path: path.display().to_string(),
                problem,
            };
            let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
            serde_yaml_ng::from_str(&text).map_err(|e| fail(e.to_string()))?
        }
    };
    let mut checked_settings: BTreeMap<String, Option<String>> = BTreeMap::new();
    Ok(cases
        .iter()
        .map(|case| run_case(&compiled, case, &default_settings, &mut checked_settings, limits))
        .collect())
}

fn run_case(
    module: &CompiledModule,
    path: &Path,
    default_settings: &Value,
    checked: &mut BTreeMap<String, Option<String>>,
    limits: Limits,
) -> CaseResult {
    let name = path.display().to_string();
    let fail = |description: String, problem: String| CaseResult {
        case: name.clone(),
        description,
        failures: vec![problem],
    };
    let file: CaseFile = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_yaml_ng::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(f) => f,
        Err(e) => return fail(String::new(), format!("not a valid case file: {e}")),
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let request = match request_of(&file, &stem) {
        Ok(r) => r,
        Err(e) => return fail(file.description, e),
    };
    let settings_value = file.settings.clone().unwrap_or_else(|| default_settings.clone());
    let settings = Settings::new(&settings_value);
    // The settings must be valid, as `serve` would refuse to start otherwise.
    let refusal = checked
        .entry(settings.json().to_owned())
        .or_insert_with(|| settings_refusal(module, &settings, limits))
        .clone();
    if let Some(problem) = refusal {
        return fail(file.description, format!("settings rejected: {problem}"));
    }
    let result = module.call(Export::Validate, &input(&request.to_string(), &settings), limits);
    // Decoded as a mutating policy's output, the general case: whether a mutation was expected
    // is the case's to say.
    let verdict = Verdict::from_call(result.map(|o| o.bytes), PolicyKind::Mutating);
    CaseResult {
        case: name,
        failures: compare(&file.expect, verdict),
        description: file.description,
    }
}

fn settings_refusal(module: &CompiledModule, settings: &Settings, limits: Limits) -> Option<String> {
    if !module.validates_settings() {
        return None;
    }
    match module.call(Export::ValidateSettings, settings.json().as_bytes(), limits) {
        Err(e) => Some(format!("validate_settings failed: {e}")),
        Ok(out) => match serde_json::from_slice::<Value>(&out.bytes) {
            Ok(v) if v["valid"] == true => None,
            Ok(v) => Some(v["message"].as_str().unwrap_or("no reason given").to_owned()),
            Err(e) => Some(format!("validate_settings returned invalid output: {e}")),
        },
    }
}

/// The `request` the case stands for: the review's, or one built from `object` exactly as the
/// fixture contract says.
fn request_of(file: &CaseFile, stem: &str) -> Result<Value, String> {
    match (&file.review, &file.object) {
        (Some(review), None) => review
            .get("request")
            .cloned()
            .ok_or_else(|| "`review` has no request".to_owned()),
        (None, Some(object)) => {
            let api_version = object["apiVersion"].as_str().ok_or("object has no apiVersion")?;
            let kind = object["kind"].as_str().ok_or("object has no kind")?;
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            let meta = |f: &str| object.pointer(&format!("/metadata/{f}")).and_then(Value::as_str);
            let operation = file.operation.unwrap_or(Operation::Create);
            let gvk = json!({"group": group, "version": version, "kind": kind});
            let gvr = json!({"group": group, "version": version, "resource": resource_name(kind)});
            let (object, old) = match operation {
                Operation::Create | Operation::Connect => (object.clone(), Value::Null),
                Operation::Update => (object.clone(), object.clone()),
                Operation::Delete => (Value::Null, object.clone()),
            };
            Ok(json!({
                "uid": stem,
                "kind": gvk, "requestKind": gvk,
                "resource": gvr, "requestResource": gvr,
                "name": meta("name").unwrap_or(""),
                "namespace": file.namespace.as_deref().or(meta("namespace")).unwrap_or("default"),
                "operation": operation.to_string(),
                "userInfo": {"username": "portcullis-fixtures"},
                "object": object,
                "oldObject": old,
                "dryRun": false,
            }))
        }
        _ => Err("a case needs exactly one of `object` and `review`".to_owned()),
    }
}

fn compare(expect: &Expect, verdict: Verdict) -> Vec<String> {
    let mut failures = Vec::new();
    let (accepted, message, warnings, mutated) = match verdict {
        Verdict::Accept {
            mutated, warnings, ..
        } => (true, String::new(), warnings, mutated),
        Verdict::Reject {
            message, warnings, ..
        }
        | Verdict::Existing {
            message, warnings, ..
        } => (false, message, warnings, None),
        Verdict::Fault(fault) => return vec![format!("the policy failed: {fault}")],
    };
    if accepted != expect.accepted {
        failures.push(format!(
            "expected {}, got {}{}",
            if expect.accepted { "accepted" } else { "rejected" },
            if accepted { "accepted" } else { "rejected" },
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        ));
    }
    for needle in &expect.message_contains {
        if !message.contains(needle.as_str()) {
            failures.push(format!("message does not contain {needle:?}; it is {message:?}"));
        }
    }
    for needle in &expect.warnings_contain {
        if !warnings.iter().any(|w| w.contains(needle.as_str())) {
            failures.push(format!(
                "no warning contains {needle:?}; warnings are {warnings:?}"
            ));
        }
    }
    match (&expect.mutated_object, &mutated) {
        (None, Some(_)) => {
            failures.push("the policy mutated the object; the case expects no mutation".to_owned())
        }
        (Some(_), None) => failures.push("expected a mutation, got none".to_owned()),
        (Some(want), Some(got)) if want != got => {
            let patch = json_patch::diff(want, got);
            failures.push(format!(
                "the mutated object differs from the expected one: {}",
                serde_json::to_string(&patch).unwrap_or_default()
            ));
        }
        _ => {}
    }
    failures
}

/// Renders the results as one line per case (`PASS`/`FAIL`), the failures beneath, and a total.
pub fn render(results: &[CaseResult]) -> String {
    let mut out = String::new();
    for r in results {
        let status = if r.failures.is_empty() { "PASS" } else { "FAIL" };
        out.push_str(&format!("{status}  {}  {}\n", r.case, r.description));
        for f in &r.failures {
            out.push_str(&format!("      - {f}\n"));
        }
    }
    let failed = results.iter().filter(|r| !r.failures.is_empty()).count();
    out.push_str(&format!(
        "\n{} passed, {} failed\n",
        results.len() - failed,
        failed
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_needs_an_object_or_a_review() {
        let file: CaseFile = serde_json::from_value(json!({
            "description": "d", "expect": {"accepted": true}
        }))
        .expect("shape");
        assert_eq!(
            request_of(&file, "x"),
            Err("a case needs exactly one of `object` and `review`".to_owned())
        );
    }
}
