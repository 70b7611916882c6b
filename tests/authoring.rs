//! The policy author's tools, the real binary on real modules: `portcullis policy test` (cases
//! in the fixture format, from a manifest or a recorded review, JSON or YAML, settings from a
//! file, pass and fail) and `portcullis policy inspect`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .env(common::CACHE_DIR_ENV, common::artifact_cache_dir())
        .output()
        .expect("run portcullis")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn module(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies/wasm")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn a_policys_own_fixtures_all_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/pinned-images/fixtures");
    let mut cases: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path().display().to_string())
        .collect();
    cases.sort();
    let mut args = vec!["policy", "test", "--timeout-ms", "2000"];
    let m = module("pinned_images.wasm");
    args.push(&m);
    args.extend(cases.iter().map(String::as_str));
    let out = portcullis(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).ends_with(&format!("\n{} passed, 0 failed\n", cases.len())),
        "{}",
        text(&out)
    );
    assert_eq!(text(&out).matches("PASS  ").count(), cases.len());
}

#[test]
fn failing_cases_say_exactly_what_differs() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A manifest case in YAML, expected (wrongly) to be accepted.
    std::fs::write(
        dir.path().join("latest.yaml"),
        "description: the model tracks latest\n\
         object:\n  apiVersion: v1\n  kind: Pod\n  metadata: {name: m}\n  spec:\n    containers: [{name: m, image: 'registry.example.com/m:latest'}]\n\
         expect: {accepted: true}\n",
    )
    .expect("write");
    // A recorded review case, expecting a mutation that differs from the real one.
    let recorded = common::recorded("job-create.json");
    let mut wrong = recorded["request"]["object"].clone();
    wrong["spec"]["template"]["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "1"}});
    std::fs::write(
        dir.path().join("job.json"),
        json!({"description": "recorded Job", "review": recorded, "expect": {"accepted": true, "mutated_object": wrong}}).to_string(),
    )
    .expect("write");
    let settings = dir.path().join("settings.yaml");
    std::fs::write(&settings, "default_request: {cpu: 250m, memory: 512Mi}\n").expect("write");
    let pinned = module("pinned_images.wasm");
    let out = portcullis(&[
        "policy",
        "test",
        &pinned,
        dir.path().join("latest.yaml").to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("FAIL  "), "{t}");
    assert!(t.contains("      - expected accepted, got rejected: Pod m, container \"m\": image \"registry.example.com/m:latest\" uses the mutable tag :latest"), "{t}");
    assert!(t.ends_with("\n0 passed, 1 failed\n"), "{t}");

    let defaults = module("default_resources.wasm");
    let out = portcullis(&[
        "policy",
        "test",
        "--settings",
        settings.to_str().expect("utf-8"),
        &defaults,
        dir.path().join("job.json").to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains("      - the mutated object differs from the expected one: ["),
        "{t}"
    );
    assert!(t.contains("{\"op\":\"replace\",\"path\":\"/spec/template/spec/containers/0/resources/requests/cpu\",\"value\":\"250m\"}"), "{t}");
}

#[test]
fn invalid_settings_and_broken_cases_fail_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let case = dir.path().join("c.json");
    std::fs::write(
        &case,
        json!({"description": "d", "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}, "settings": {"require_digests": true}, "expect": {"accepted": true}}).to_string(),
    )
    .expect("write");
    let typo = dir.path().join("typo.json");
    std::fs::write(
        &typo,
        json!({"description": "d", "object": {}, "expect": {"accepted": true, "message_contain": []}})
            .to_string(),
    )
    .expect("write");
    let pinned = module("pinned_images.wasm");
    let out = portcullis(&[
        "policy",
        "test",
        &pinned,
        case.to_str().expect("utf-8"),
        typo.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("      - settings rejected: "), "{t}");
    assert!(t.contains("require_digests"), "{t}");
    assert!(
        t.contains("      - not a valid case file: expect: unknown field `message_contain`"),
        "{t}"
    );
    let out = portcullis(&["policy", "test", "/no/such.wasm", case.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn inspect_shows_what_a_module_is_and_why_it_does_not_load() {
    let out = portcullis(&["policy", "inspect", &module("pinned_images.wasm")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    for line in [
        "transport: core (ABI v1), validate_settings",
        "links:     yes",
        "imports:   0",
        "loads as a policy: yes",
    ] {
        assert!(t.contains(line), "{line:?} in\n{t}");
    }
    assert!(
        t.contains(
            "  validate                                 func (type (func (param i32 i32) (result i64)))"
        ),
        "{t}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.wasm");
    std::fs::write(&missing, common::wat_fixture("missing_validate")).expect("write");
    let out = portcullis(&["policy", "inspect", missing.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out)
            .contains("transport: none: policy ABI v1: missing export `validate(ptr: i32, len: i32) -> i64`"),
        "{}",
        text(&out)
    );
    let importing = dir.path().join("imports.wasm");
    std::fs::write(
        &importing,
        common::wat(r#"(module (import "env" "host_fetch" (func)) (memory (export "memory") 1))"#),
    )
    .expect("write");
    let t = text(&portcullis(&[
        "policy",
        "inspect",
        importing.to_str().expect("utf-8"),
    ]));
    assert!(
        t.contains("  env::host_fetch ") && t.contains(" func (type (func))"),
        "{t}"
    );
    assert!(t.contains("links:     no: "), "{t}");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm").expect("write");
    let out = portcullis(&["policy", "inspect", garbage.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("compiles:  no: "), "{}", text(&out));
}

/// The Python and JavaScript examples are components: `policy test` runs them on the shared
/// cases like any module, and `policy inspect` names the transport and the world's exports.
#[test]
fn components_are_tested_and_inspected_like_modules() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/examples");
    let mut cases: Vec<String> = std::fs::read_dir(examples.join("fixtures"))
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| p.to_str().expect("utf-8").to_owned())
        .collect();
    cases.sort();
    for language in ["python", "javascript"] {
        let wasm = examples.join("build").join(format!("{language}.wasm"));
        let wasm = wasm.to_str().expect("utf-8");
        let mut args = vec!["policy", "test", "--timeout-ms", "2000", wasm];
        args.extend(cases.iter().map(String::as_str));
        let out = portcullis(&args);
        assert!(
            text(&out).ends_with(&format!("\n{} passed, 0 failed\n", cases.len())),
            "{language}: {}{}",
            text(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{language}");

        let out = portcullis(&["policy", "inspect", wasm]);
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(0), "{language}: {shown}");
        for line in [
            "transport: component (WIT world portcullis:policy), validate-settings\n",
            "links:     yes\n",
            "  validate                                 func(request: String) -> (String)\n",
            "  validate-settings                        func(settings: String) -> (String)\n",
            "loads as a policy: yes\n",
        ] {
            assert!(shown.contains(line), "{language}: no {line:?} in\n{shown}");
        }
    }
}
