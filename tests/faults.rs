//! Hostile and broken policies: every fault becomes a decision with an exact message, within a
//! time bound, and leaves the server serving the next review; configurations that cannot work
//! are refused at start-up with an error naming the file, the policy and the problem.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, pod, prepare_error, review, wat_fixture};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// Upper bound for any fault's answer, generous for a loaded 2-core CI (timeouts are 100 ms).
const FAULT_BOUND: Duration = Duration::from_secs(2);

const CONFIG: &str = r#"
policies:
  - name: allow-all
    module: allow_all.wasm
  - name: infinite-loop
    module: infinite_loop.wasm
    timeout_ms: 100
  - name: memory-grow
    module: memory_grow.wasm
    memory_mib: 8
  - name: trap
    module: trap.wasm
  - name: output-outside-memory
    module: output_outside_memory.wasm
  - name: invalid-json
    module: invalid_json.wasm
  - name: validating-mutates
    module: validating_mutates.wasm
  - name: allocate-outside-memory
    module: allocate_outside_memory.wasm
  - name: proc-exit
    module: proc_exit.wasm
  - name: stack-overflow
    module: stack_overflow.wasm
  - name: loop-fail-open
    module: infinite_loop.wasm
    timeout_ms: 100
    failure: allow
  - name: trap-fail-open
    module: trap.wasm
    failure: allow
  - name: loop-monitored
    module: infinite_loop.wasm
    timeout_ms: 100
    mode: monitor
  - name: memory-grow-monitored
    module: memory_grow.wasm
    memory_mib: 8
    mode: monitor
"#;

static SERVER: OnceCell<TestServer> = OnceCell::const_new();

async fn server() -> &'static TestServer {
    SERVER
        .get_or_init(|| async {
            let modules: Vec<(&str, Vec<u8>)> = [
                "allow_all",
                "infinite_loop",
                "memory_grow",
                "trap",
                "output_outside_memory",
                "invalid_json",
                "validating_mutates",
                "allocate_outside_memory",
                "proc_exit",
                "stack_overflow",
            ]
            .iter()
            .map(|name| (wasm_name(name), wat_fixture(name)))
            .collect();
            TestServer::start(CONFIG, &modules).await
        })
        .await
}

fn wasm_name(stem: &str) -> &'static str {
    Box::leak(format!("{stem}.wasm").into_boxed_str())
}

/// POSTs a Pod review to `/validate/<policy>` and returns the response and how long it took.
async fn judge(policy: &str) -> (Value, Duration) {
    let server = server().await;
    let mut client = server.h1().await;
    let r = review("Pod", pod("p"), "CREATE", "ml", &format!("fault-{policy}"), false);
    let started = Instant::now();
    let response = client.review(&format!("/validate/{policy}"), &r).await;
    (response, started.elapsed())
}

/// Asserts the fault denial `message` for `policy`, the time bound, and that the next good
/// review on the same server is allowed.
async fn assert_fault_denies(policy: &str, message: &str) {
    let (response, elapsed) = judge(policy).await;
    assert_eq!(
        response,
        json!({
            "uid": format!("fault-{policy}"),
            "allowed": false,
            "status": {"status": "Failure", "code": 500, "message": message}
        })
    );
    assert!(elapsed < FAULT_BOUND, "{policy} took {elapsed:?}");
    assert_next_review_succeeds().await;
}

async fn assert_next_review_succeeds() {
    let (response, _) = judge("allow-all").await;
    assert_eq!(response, json!({"uid": "fault-allow-all", "allowed": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_times_out() {
    assert_fault_denies(
        "infinite-loop",
        "policy infinite-loop failed: timed out after 100 ms",
    )
    .await;
    let (_, elapsed) = judge("infinite-loop").await;
    assert!(
        elapsed >= Duration::from_millis(100),
        "deadline fired early: {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_memory_growth_hits_the_cap() {
    assert_fault_denies(
        "memory-grow",
        "policy memory-grow failed: exceeded its memory limit of 8 MiB",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_is_a_fault() {
    assert_fault_denies(
        "trap",
        "policy trap failed: trapped: wasm `unreachable` instruction executed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_outside_linear_memory_breaks_the_abi() {
    assert_fault_denies(
        "output-outside-memory",
        "policy output-outside-memory failed: broke policy ABI v1: output at 0xffff0000 with length 16 \
         lies outside linear memory of 65536 bytes",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_is_not_json_is_invalid() {
    assert_fault_denies(
        "invalid-json",
        "policy invalid-json failed: returned invalid output: expected value at line 1 column 1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validating_policy_that_mutates_is_a_fault() {
    assert_fault_denies(
        "validating-mutates",
        "policy validating-mutates failed: returned mutated_object but is not configured as mutating",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_outside_memory_breaks_the_abi() {
    // The host writes `{"request":<request as sent>,"settings":{}}`: its length is exact.
    let r = review(
        "Pod",
        pod("p"),
        "CREATE",
        "ml",
        "fault-allocate-outside-memory",
        false,
    );
    let input = format!(r#"{{"request":{},"settings":{{}}}}"#, r["request"]);
    let len = input.len();
    assert_fault_denies(
        "allocate-outside-memory",
        &format!(
            "policy allocate-outside-memory failed: broke policy ABI v1: allocate({len}) returned 0xffffff00, \
             which does not leave {len} bytes inside linear memory of 65536 bytes"
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_proc_exit_is_a_fault() {
    assert_fault_denies(
        "proc-exit",
        "policy proc-exit failed: trapped: exited with status 3",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_recursion_exhausts_the_stack() {
    assert_fault_denies(
        "stack-overflow",
        "policy stack-overflow failed: trapped: call stack exhausted",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_allow_lets_the_request_in_with_a_warning() {
    for (policy, fault) in [
        ("loop-fail-open", "timed out after 100 ms"),
        (
            "trap-fail-open",
            "trapped: wasm `unreachable` instruction executed",
        ),
    ] {
        let (response, elapsed) = judge(policy).await;
        assert_eq!(
            response,
            json!({
                "uid": format!("fault-{policy}"),
                "allowed": true,
                "warnings": [format!("policy {policy} failed: {fault}; allowed by its failure policy")]
            })
        );
        assert!(elapsed < FAULT_BOUND, "{policy} took {elapsed:?}");
    }
    assert_next_review_succeeds().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitored_fault_only_warns() {
    for (policy, fault) in [
        ("loop-monitored", "timed out after 100 ms"),
        ("memory-grow-monitored", "exceeded its memory limit of 8 MiB"),
    ] {
        let (response, elapsed) = judge(policy).await;
        assert_eq!(
            response,
            json!({
                "uid": format!("fault-{policy}"),
                "allowed": true,
                "warnings": [format!("[monitor] policy {policy} failed: {fault}")]
            })
        );
        assert!(elapsed < FAULT_BOUND, "{policy} took {elapsed:?}");
    }
    assert_next_review_succeeds().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_all_routes_are_merged_like_rejections() {
    // `/validate` runs every policy: the faults deny, each named, and the monitored and
    // fail-open ones only warn.
    let server = server().await;
    let mut client = server.h2().await;
    let r = review("Pod", pod("p"), "CREATE", "ml", "all", false);
    let started = Instant::now();
    let response = client.review("/validate", &r).await;
    assert!(
        started.elapsed() < 3 * FAULT_BOUND,
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 500);
    let message = response["status"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("denied by 9 policies: policy infinite-loop failed: "),
        "{message}"
    );
    for policy in [
        "infinite-loop",
        "memory-grow",
        "trap",
        "output-outside-memory",
        "invalid-json",
        "validating-mutates",
    ] {
        assert!(
            message.contains(&format!("policy {policy} failed: ")),
            "{message}"
        );
    }
    assert_eq!(
        response["warnings"].as_array().map(Vec::len),
        Some(4),
        "{response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_faults_in_parallel_leave_the_server_healthy() {
    let server = server().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let policy = ["infinite-loop", "memory-grow", "trap", "invalid-json"][i % 4];
        tasks.push(tokio::spawn(async move {
            let mut client = server.h2().await;
            let r = review("Pod", pod("p"), "CREATE", "ml", &format!("parallel-{i}"), false);
            client.review(&format!("/validate/{policy}"), &r).await
        }));
    }
    for task in tasks {
        let response = task.await.expect("task");
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 500);
    }
    assert_next_review_succeeds().await;
}

// Start-up errors: `prepare` refuses, naming the file, the policy and the problem.

fn allow_module() -> Vec<(&'static str, Vec<u8>)> {
    vec![("allow_all.wasm", wat_fixture("allow_all"))]
}

fn config_path(ws: &common::Workspace) -> String {
    ws.config.as_ref().expect("config").display().to_string()
}

#[test]
fn an_unknown_policy_key_is_refused() {
    let (error, ws) = prepare_error(
        "policies:\n  - {name: typo, module: allow_all.wasm, timeout: 5}\n",
        &allow_module(),
    );
    let prefix = format!(
        "{}: policy `typo`: unknown field `timeout`, expected one of ",
        config_path(&ws)
    );
    assert!(error.starts_with(&prefix), "{error}");
}

#[test]
fn an_unknown_top_level_key_is_refused() {
    let (error, ws) = prepare_error(
        "policies:\n  - {name: a, module: allow_all.wasm}\npolicy-defaults: {}\n",
        &allow_module(),
    );
    assert_eq!(
        error,
        format!(
            "{}: unknown top-level key `policy-defaults` (expected `policies`, or an `x-` extension key)",
            config_path(&ws)
        )
    );
}

#[test]
fn a_duplicate_name_is_refused() {
    let (error, ws) = prepare_error(
        "policies:\n  - {name: twice, module: allow_all.wasm}\n  - {name: twice, module: allow_all.wasm}\n",
        &allow_module(),
    );
    assert_eq!(
        error,
        format!(
            "{}: policy `twice`: the name is used by another policy; names must be unique",
            config_path(&ws)
        )
    );
}

#[test]
fn a_missing_module_file_is_refused() {
    let (error, ws) = prepare_error(
        "policies:\n  - {name: ghost, module: ghost.wasm}\n",
        &allow_module(),
    );
    assert_eq!(
        error,
        format!(
            "{}: policy `ghost`: cannot read module {}: No such file or directory (os error 2)",
            config_path(&ws),
            ws.dir.path().join("ghost.wasm").display()
        )
    );
}

#[test]
fn a_module_without_validate_is_refused() {
    let (error, ws) = prepare_error(
        "policies:\n  - {name: no-validate, module: missing_validate.wasm}\n",
        &[("missing_validate.wasm", wat_fixture("missing_validate"))],
    );
    assert_eq!(
        error,
        format!(
            "{}: policy `no-validate`: module {}: the module does not implement policy ABI v1: \
             missing export `validate(ptr: i32, len: i32) -> i64`",
            config_path(&ws),
            ws.dir.path().join("missing_validate.wasm").display()
        )
    );
}

#[test]
fn bytes_that_are_not_wasm_are_refused() {
    let (error, ws) = prepare_error(
        "policies:\n  - {name: text, module: text.wasm}\n",
        &[("text.wasm", b"(module)".to_vec())],
    );
    let prefix = format!(
        "{}: policy `text`: module {}: not a valid Wasm module: ",
        config_path(&ws),
        ws.dir.path().join("text.wasm").display()
    );
    assert!(error.starts_with(&prefix), "{error}");
}

#[test]
fn settings_the_policy_rejects_are_refused() {
    let config = "policies:\n  - name: pinned\n    module: pinned_images.wasm\n    settings:\n      allowed_registries: [\"https://ghcr.io\"]\n";
    let (error, ws) = prepare_error(
        config,
        &[("pinned_images.wasm", common::policy_module("pinned_images.wasm"))],
    );
    let prefix = format!(
        "{}: policy `pinned`: settings rejected by the policy: allowed_registries: \"https://ghcr.io\" is not a registry host[:port]",
        config_path(&ws)
    );
    assert!(error.starts_with(&prefix), "{error}");
}

#[test]
fn settings_of_the_wrong_shape_are_refused() {
    let config = "policies:\n  - name: pinned\n    module: pinned_images.wasm\n    settings: {require_digests: true}\n";
    let (error, ws) = prepare_error(
        config,
        &[("pinned_images.wasm", common::policy_module("pinned_images.wasm"))],
    );
    let prefix = format!(
        "{}: policy `pinned`: settings rejected by the policy: settings do not deserialise: unknown field `require_digests`",
        config_path(&ws)
    );
    assert!(error.starts_with(&prefix), "{error}");
}

#[test]
fn the_binary_refuses_a_bad_configuration_with_one_error_line_and_status_1() {
    let ws = common::Workspace::new(Some("policies:\n  - {name: ghost, module: ghost.wasm}\n"), &[]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("serve")
        .args(["--addr", "127.0.0.1:0"])
        .arg("--cert")
        .arg(&ws.cert)
        .arg("--key")
        .arg(&ws.key)
        .arg("--config")
        .arg(ws.config.as_ref().expect("config"))
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run portcullis");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error:") || l.contains("caused by"))
        .collect();
    assert_eq!(
        errors,
        [format!(
            "error: {}: policy `ghost`: cannot read module {}: No such file or directory (os error 2)",
            config_path(&ws),
            ws.dir.path().join("ghost.wasm").display()
        )],
        "{stderr}"
    );
}
