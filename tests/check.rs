//! `portcullis check`, the real binary on real manifests: the policy set's own fixtures (each
//! policy's verdict on each fixture's object must match the fixture's expectation), a
//! multi-document release with a `List`, a broken file, standard input, every output format,
//! `--show-patches`, and the exit codes (0 nothing denied, 1 denied or unreadable, 2 usage or
//! configuration errors).

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn manifests(name: &str) -> PathBuf {
    common::fixture_path("manifests").join(name)
}

fn check(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("check")
        .args(args)
        .env(common::CACHE_DIR_ENV, common::artifact_cache_dir())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run portcullis check");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("portcullis check finishes")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[test]
fn a_release_is_judged_object_by_object_in_the_servers_order() {
    let path = manifests("app.yaml");
    let out = check(&[path.to_str().expect("utf-8")], None);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    let shown = path.display().to_string();
    for line in [
        format!("allowed  Service ml-prod/fraud-model           {shown}:4"),
        format!("denied   Deployment ml-prod/fraud-model        {shown}:13"),
        format!("patched  Deployment ml-prod/recommender        {shown}:33"),
        format!("allowed  ConfigMap ml-prod/recommender-config  {shown}:55 (item 0)"),
        "4 objects: 1 denied, 0 warned, 1 patched, 2 allowed; 0 unreadable documents".to_owned(),
    ] {
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
    for policy in ["pinned-images", "readiness-probe", "no-plaintext-secrets"] {
        assert!(
            text.contains(&format!("denied by {policy}: Deployment fraud-model")),
            "{policy}:\n{text}"
        );
    }
    // The secret's value is never printed.
    assert!(!text.contains("sk-live"), "{text}");

    let out = check(&["-o", "json", path.to_str().expect("utf-8")], None);
    assert_eq!(out.status.code(), Some(1));
    let report = json(&out);
    let fraud = &report["objects"][1];
    assert_eq!(
        (fraud["kind"].as_str(), fraud["outcome"].as_str()),
        (Some("Deployment"), Some("denied"))
    );
    // Mutating policies run first: default-resources patched the object the validating ones saw.
    assert_eq!(
        fraud["policies"][0],
        serde_json::json!({"policy": "default-resources", "outcome": "patched"})
    );
    let recommender = &report["objects"][2];
    assert_eq!(recommender["outcome"], "patched");
    let patch = recommender["patch"].as_array().expect("a JSON Patch");
    assert!(
        patch
            .iter()
            .any(|op| op["path"] == "/spec/template/spec/tolerations"),
        "{recommender}"
    );
}

#[test]
fn a_broken_document_is_reported_and_the_others_still_checked() {
    let path = manifests("broken.yaml");
    let out = check(&["-o", "json", path.to_str().expect("utf-8")], None);
    assert_eq!(out.status.code(), Some(1), "unreadable documents fail the check");
    let report = json(&out);
    let shown = path.display().to_string();
    let objects: Vec<_> = report["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| o["name"].clone())
        .collect();
    assert_eq!(objects, ["fine", "nightly-eval"]);
    assert_eq!(report["errors"][0]["source"], format!("{shown}:6"));
    assert!(
        report["errors"][0]["problem"]
            .as_str()
            .is_some_and(|p| p.starts_with("invalid YAML at line 9: ")),
        "{report}"
    );
    assert_eq!(
        report["errors"][1],
        serde_json::json!({"source": format!("{shown}:11"), "problem": "the document has no kind"})
    );
}

#[test]
fn junit_fails_denied_objects_and_errors_unreadable_ones() {
    let out = check(
        &[
            "-o",
            "junit",
            manifests("app.yaml").to_str().expect("utf-8"),
            manifests("broken.yaml").to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let xml = stdout(&out);
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert_eq!(
        xml.matches("<testcase ").count(),
        8,
        "6 objects and 2 unreadable documents:\n{xml}"
    );
    assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
    assert_eq!(xml.matches("<error ").count(), 2, "{xml}");
    assert!(xml.contains("pinned-images: Deployment fraud-model"), "{xml}");
}

#[test]
fn standard_input_show_patches_and_a_clean_exit() {
    let yaml = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: eval}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: eval, image: registry.company.com/eval:1.4.2}]\n";
    let out = check(&["--show-patches", "-n", "ml", "-"], Some(yaml));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("patched  Job ml/eval  -:1"), "{text}");
    assert!(text.contains("           +        resources:\n"), "{text}");
    assert!(text.contains("           +            cpu: 250m\n"), "{text}");
    let clean = check(&[manifests("clean.json").to_str().expect("utf-8")], None);
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));
}

#[test]
fn usage_and_configuration_errors_exit_2() {
    let out = check(&["/no/such/manifest.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: cannot read /no/such/manifest.yaml\n  caused by: No such file or directory (os error 2)"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("policies.yaml");
    std::fs::write(&config, "policies: [{name: x, module: missing.wasm}]").expect("write");
    let out = check(
        &[
            "--config",
            config.to_str().expect("utf-8"),
            manifests("clean.json").to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("policy `x`: cannot read module"),
        "{out:?}"
    );
    let out = check(&[], None);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
}

/// Every validating policy's fixtures with default settings, checked as plain manifests: the
/// offline verdict must be the fixture's (the same module, the same request shape as the server).
#[test]
fn the_policy_fixtures_get_their_expected_verdicts_offline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let validating = [
        ("pinned-images", "pinned_images.wasm"),
        ("gpu-request-limit", "gpu_request_limit.wasm"),
        ("readiness-probe", "readiness_probe.wasm"),
        ("no-plaintext-secrets", "no_plaintext_secrets.wasm"),
        ("gpu-node-isolation", "gpu_node_isolation.wasm"),
    ];
    let mut compared = 0;
    for (policy, module) in validating {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("policies.yaml");
        let module_path = root.join("wasm").join(module);
        std::fs::write(
            &config,
            format!(
                "policies: [{{name: {policy}, module: {}}}]\n",
                module_path.display()
            ),
        )
        .expect("write config");
        let mut expected = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(root.join(policy).join("fixtures"))
            .expect("fixtures")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let fixture: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
            // Only what a manifest can express: a CREATE, the default settings, its own namespace.
            if ["settings", "operation", "namespace"]
                .iter()
                .any(|k| !fixture[k].is_null())
            {
                continue;
            }
            let name = path.file_name().expect("name").to_owned();
            std::fs::write(dir.path().join(&name), fixture["object"].to_string()).expect("write object");
            expected.push((
                name.to_string_lossy().into_owned(),
                fixture["expect"]["accepted"] == true,
            ));
        }
        let out = check(
            &[
                "--config",
                config.to_str().expect("utf-8"),
                "-o",
                "json",
                dir.path().to_str().expect("utf-8"),
            ],
            None,
        );
        let report = json(&out);
        let objects = report["objects"].as_array().expect("objects");
        assert_eq!(objects.len(), expected.len(), "{policy}: {report}");
        for (object, (file, accepted)) in objects.iter().zip(&expected) {
            assert!(
                object["source"]
                    .as_str()
                    .is_some_and(|s| s.contains(file.as_str())),
                "{object}"
            );
            let denied = object["outcome"] == "denied";
            assert_eq!(denied, !accepted, "{policy} {file}: {object}");
            compared += 1;
        }
    }
    assert!(compared >= 30, "only {compared} fixtures compared");
}
