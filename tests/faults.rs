//! Hostile and broken policies: every fault becomes a decision with an exact message, within a
//! time bound, and leaves the server serving the next review; what WASI lets a policy reach is
//! exactly what the engine documents; the server's memory returns to its baseline after hostile
//! reviews; and configurations that cannot work are refused at start-up with an error naming the
//! file, the policy and the problem. `tests/README.md` maps each threat to its test here.

mod common;

use std::time::{Duration, Instant};

use common::{ChildServer, TestServer, pod, prepare_error, review, wat_fixture};
use portcullis::engine::abi::core_v1::MAX_OUTPUT_BYTES;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// Upper bound for any fault's answer, generous for a loaded 2-core CI (timeouts are 100 ms).
const FAULT_BOUND: Duration = Duration::from_secs(2);

/// How far past its deadline a review with a timed-out policy may answer end to end: an epoch
/// tick, TLS and HTTP on a loaded two-core machine. The engine's own tests bound the call alone.
const DEADLINE_SLACK: Duration = Duration::from_millis(400);

/// The deadline of the policies that time out.
const DEADLINE: Duration = Duration::from_millis(100);

const CONFIG: &str = r#"
x-hostile: &hostile {namespaces: {include: [hostile]}}
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
  # Only in namespace `hostile`, so the review above of every policy keeps its shape.
  - name: deny-all
    module: deny_all.wasm
    match: *hostile
  - name: sleep
    module: sleep.wasm
    timeout_ms: 100
    match: *hostile
  - name: sleep-fail-open
    module: sleep.wasm
    timeout_ms: 100
    failure: allow
    match: *hostile
  - name: random-flood
    module: random_flood.wasm
    timeout_ms: 100
    match: *hostile
  - name: stdout-flood
    module: stdout_flood.wasm
    match: *hostile
  - name: claimed-1gib-output
    module: claimed_1gib_output.wasm
    match: *hostile
  - name: non-utf8-output
    module: non_utf8_output.wasm
    match: *hostile
  - name: wasi-files
    module: wasi_files.wasm
    match: *hostile
  - name: wasi-environment
    module: wasi_environment.wasm
    match: *hostile
  - name: wasi-sockets
    module: wasi_sockets.wasm
    match: *hostile
  - name: wasi-clocks
    module: wasi_clocks.wasm
    match: *hostile
  - name: previous-request
    module: previous_request.wasm
    match: *hostile
  - name: wapc-host-capability
    module: wapc_host_capability.wasm
    match: *hostile
  # The WASI probes as commands (`abi: wasi`): their `_start` runs `validate` and writes its
  # output to stdout.
  - name: wasi-files-command
    module: wasi_files_command.wasm
    abi: wasi
    match: *hostile
  - name: wasi-environment-command
    module: wasi_environment_command.wasm
    abi: wasi
    match: *hostile
  # Each in a namespace of its own: their answers are megabytes.
  - name: huge-message
    module: huge_message.wasm
    match: {namespaces: {include: [huge-message]}}
  - name: huge-warnings
    module: huge_warnings.wasm
    match: {namespaces: {include: [huge-warnings]}}
"#;

/// Every module [`CONFIG`] names.
const MODULES: &[&str] = &[
    "allow_all",
    "deny_all",
    "infinite_loop",
    "memory_grow",
    "trap",
    "output_outside_memory",
    "invalid_json",
    "validating_mutates",
    "allocate_outside_memory",
    "proc_exit",
    "stack_overflow",
    "sleep",
    "random_flood",
    "stdout_flood",
    "claimed_1gib_output",
    "non_utf8_output",
    "wasi_files",
    "wasi_environment",
    "wasi_sockets",
    "wasi_clocks",
    "previous_request",
    "huge_message",
    "huge_warnings",
    "wapc_host_capability",
];

/// The probes [`CONFIG`] also runs as WASI commands.
const COMMAND_PROBES: &[&str] = &["wasi_files", "wasi_environment"];

static SERVER: OnceCell<TestServer> = OnceCell::const_new();

async fn server() -> &'static TestServer {
    SERVER
        .get_or_init(|| async { TestServer::start(CONFIG, &modules()).await })
        .await
}

fn modules() -> Vec<(&'static str, Vec<u8>)> {
    MODULES
        .iter()
        .map(|name| (wasm_name(name), wat_fixture(name)))
        .chain(
            COMMAND_PROBES
                .iter()
                .map(|name| (wasm_name(&format!("{name}_command")), command_probe(name))),
        )
        .collect()
}

/// The ABI v1 probe `tests/fixtures/<name>.wat` as a WASI command as well: a `_start` that runs
/// its `validate` and writes the output to stdout. It keeps its ABI v1 exports, so only the
/// configuration's `abi: wasi` makes the engine run it as a command. A WASI command must answer
/// `validate-settings` too: this one accepts any settings.
fn command_probe(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}.wat", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let text = text
        .replacen(
            "(module",
            r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $command_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $command_args (param i32 i32) (result i32)))"#,
            1,
        )
        .replacen(
            r#"(func (export "validate")"#,
            r#"(func $validate (export "validate")"#,
            1,
        );
    let end = text.rfind(')').expect("a module");
    // `validate-settings` (30 bytes of arguments, where `validate` has 21) accepts.
    let start = r#"
  (data (i32.const 64000) "{\"valid\":true}")
  (func (export "_start")
    (local $packed i64)
    (drop (call $command_args (i32.const 1000) (i32.const 1004)))
    (local.set $packed
      (if (result i64) (i32.eq (i32.load (i32.const 1004)) (i32.const 30))
        (then (i64.or (i64.shl (i64.const 64000) (i64.const 32)) (i64.const 14)))
        (else (call $validate (i32.const 0) (i32.const 0)))))
    (i32.store (i32.const 1000) (i32.wrap_i64 (i64.shr_u (local.get $packed) (i64.const 32))))
    (i32.store (i32.const 1004) (i32.wrap_i64 (local.get $packed)))
    (drop (call $command_write (i32.const 1) (i32.const 1000) (i32.const 1) (i32.const 1008))))
)"#;
    wat::parse_str(format!("{}{start}", &text[..end])).unwrap_or_else(|e| panic!("{path} as a command: {e}"))
}

fn wasm_name(stem: &str) -> &'static str {
    Box::leak(format!("{stem}.wasm").into_boxed_str())
}

/// POSTs a Pod review in namespace `hostile` to `/validate/<policy>` and returns the response
/// and how long it took.
async fn judge(policy: &str) -> (Value, Duration) {
    judge_in(policy, "hostile").await
}

/// The Pod review [`judge`] sends for `policy` in `namespace`.
fn fault_review(policy: &str, namespace: &str) -> Value {
    review(
        "Pod",
        pod("p"),
        "CREATE",
        namespace,
        &format!("fault-{policy}"),
        false,
    )
}

/// [`judge`] in `namespace`.
async fn judge_in(policy: &str, namespace: &str) -> (Value, Duration) {
    let server = server().await;
    let mut client = server.h1().await;
    let r = fault_review(policy, namespace);
    let started = Instant::now();
    let response = client.review(&format!("/validate/{policy}"), &r).await;
    (response, started.elapsed())
}

/// Asserts the fault denial `message` for `policy`, the time bound, and that the next good
/// review on the same server is allowed. Returns how long the fault took to answer.
async fn assert_fault_denies(policy: &str, message: &str) -> Duration {
    assert_denies(policy, 500, message).await
}

/// Asserts that `policy`, a probe, denied with `report` (what it saw, in its own words), and
/// that the next review succeeds.
async fn assert_reports(policy: &str, report: &str) {
    assert_denies(policy, 403, &format!("{policy}: {report}")).await;
}

/// Asserts that `policy` denied with `code` and `message` within [`FAULT_BOUND`] and that the
/// next good review is allowed; returns how long the denial took.
async fn assert_denies(policy: &str, code: u16, message: &str) -> Duration {
    let (response, elapsed) = judge(policy).await;
    assert_eq!(
        response,
        json!({
            "uid": format!("fault-{policy}"),
            "allowed": false,
            "status": {"status": "Failure", "code": code, "message": message}
        })
    );
    assert!(elapsed < FAULT_BOUND, "{policy} took {elapsed:?}");
    assert_next_review_succeeds().await;
    elapsed
}

/// Asserts that a review whose policy timed out answered no earlier than [`DEADLINE`] and
/// within [`DEADLINE_SLACK`] after it, and prints the figure.
fn assert_deadline_held(policy: &str, elapsed: Duration) {
    assert!(
        elapsed >= DEADLINE && elapsed < DEADLINE + DEADLINE_SLACK,
        "{policy}: answered after {elapsed:?}, deadline {DEADLINE:?}"
    );
    eprintln!("{policy}: answered after {elapsed:?}, deadline {DEADLINE:?}");
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
        "hostile",
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
async fn a_sleep_in_a_host_call_times_out_at_the_deadline() {
    // Rust's std::thread::sleep on wasip1: poll_oneoff with a 10 s clock subscription. While
    // only the epoch bounded a call, this answered after 10 s with `allowed: true`.
    let elapsed = assert_fault_denies("sleep", "policy sleep failed: timed out after 100 ms").await;
    assert_deadline_held("sleep", elapsed);
    let (response, elapsed) = judge("sleep-fail-open").await;
    assert_eq!(
        response,
        json!({
            "uid": "fault-sleep-fail-open",
            "allowed": true,
            "warnings": ["policy sleep-fail-open failed: timed out after 100 ms; allowed by its failure policy"]
        })
    );
    assert_deadline_held("sleep-fail-open", elapsed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_work_repeated_without_end_times_out_at_the_deadline() {
    // Each random_get is bounded (64 KiB); the deadline ends the loop between two of them.
    let elapsed = assert_fault_denies(
        "random-flood",
        "policy random-flood failed: timed out after 100 ms",
    )
    .await;
    assert_deadline_held("random-flood", elapsed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_is_captured_up_to_its_cap_and_then_refused() {
    // 64 KiB are kept (and logged, in part); the write after them fails with EIO (29).
    assert_reports("stdout-flood", "stdout: wrote 65536 bytes, then errno 29").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_1gib_output_is_refused_by_its_length() {
    assert_fault_denies(
        "claimed-1gib-output",
        &format!(
            "policy claimed-1gib-output failed: broke policy ABI v1: output of 1073741824 bytes \
             exceeds the limit of {MAX_OUTPUT_BYTES} bytes"
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_is_not_utf8_is_invalid() {
    assert_fault_denies(
        "non-utf8-output",
        "policy non-utf8-output failed: returned invalid output: invalid unicode code point at line 1 column 30",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_opens_no_files() {
    // No preopened directory: the first descriptor wasi-libc would look for is not there, and no
    // path resolves, relative to it or to stdin.
    assert_reports(
        "wasi-files",
        "preopens: 0; fd_prestat_get(3): errno 8; path_open(3, etc/passwd): errno 8; \
         path_open(0, etc/passwd): errno 8; fd_read(3): errno 8",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_shows_no_environment_arguments_or_stdin() {
    assert_reports(
        "wasi-environment",
        "environ_sizes_get: errno 0, 0 variables in 0 bytes; environ_get: errno 0; \
         args_sizes_get: errno 0, 0 arguments in 0 bytes; stdin: errno 0, read 0 bytes",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_has_no_sockets() {
    // errno 8 is EBADF (no such descriptor), 57 ENOTSOCK (stdio is not a socket).
    assert_reports(
        "wasi-sockets",
        "sock_accept(3): errno 8; sock_accept(0): errno 57; sock_recv(0): errno 57; \
         sock_send(1): errno 57; sock_shutdown(2): errno 57",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasi_command_opens_no_files() {
    assert_reports(
        "wasi-files-command",
        "preopens: 0; fd_prestat_get(3): errno 8; path_open(3, etc/passwd): errno 8; \
         path_open(0, etc/passwd): errno 8; fd_read(3): errno 8",
    )
    .await;
}

/// A command sees its operation as its one argument and the request on stdin, and no
/// environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasi_command_sees_its_arguments_and_stdin_but_no_environment() {
    assert_reports(
        "wasi-environment-command",
        "environ_sizes_get: errno 0, 0 variables in 0 bytes; environ_get: errno 0; \
         args_sizes_get: errno 0, 2 arguments in 21 bytes; stdin: errno 0, read 16 bytes",
    )
    .await;
}

/// A Kubewarden policy asking for a host capability Portcullis does not offer gets an error
/// naming it, and its own error path turns it into the decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unoffered_kubewarden_host_capability_is_named_in_the_decision() {
    assert_fault_denies(
        "wapc-host-capability",
        "policy wapc-host-capability failed: reported an error: validate: host capability \
         kubewarden/oci/v1/manifest_digest is not offered by Portcullis",
    )
    .await;
}

/// The numbers in `text`, in order.
fn numbers(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("a number"))
        .collect()
}

/// `text` with each run of digits replaced by `N`.
fn shape(text: &str) -> String {
    let mut shape = String::with_capacity(text.len());
    let mut in_number = false;
    for c in text.chars() {
        match (c.is_ascii_digit(), in_number) {
            (true, true) => {}
            (true, false) => shape.push('N'),
            (false, _) => shape.push(c),
        }
        in_number = c.is_ascii_digit();
    }
    shape
}

fn unix_nanos() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    u64::try_from(since.as_nanos()).expect("fits u64")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_clocks_are_real_and_random_is_fresh_per_call() {
    // The engine's documented choice: the host's real clocks, and a fresh secure generator.
    let mut randoms = Vec::new();
    for _ in 0..2 {
        let before = unix_nanos();
        let (response, _) = judge("wasi-clocks").await;
        let after = unix_nanos();
        let message = response["status"]["message"].as_str().expect("message");
        let shape = shape(message);
        assert_eq!(
            shape,
            "wasi-clocks: realtime: errno N, N ns, resolution N ns; monotonic: errno N, N ns, \
             resolution N ns; process_cputime: errno N; random_get: errno N, N",
            "{message}"
        );
        let [
            realtime_errno,
            realtime,
            _,
            monotonic_errno,
            monotonic,
            _,
            cputime_errno,
            random_errno,
            random,
        ] = numbers(message)[..]
        else {
            panic!("{message}")
        };
        assert_eq!(
            (realtime_errno, monotonic_errno, random_errno),
            (0, 0, 0),
            "{message}"
        );
        assert!(
            (before..=after).contains(&realtime),
            "{before} <= {realtime} <= {after}"
        );
        // The monotonic clock starts with the call's own context: it tells nothing of the host.
        assert!(monotonic < 1_000_000_000, "{message}");
        assert_eq!(
            cputime_errno, 8,
            "CPU-time clocks are refused with EBADF: {message}"
        );
        randoms.push(random);
    }
    assert_ne!(randoms[0], randoms[1], "random_get repeated itself across calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_sees_nothing_of_earlier_requests() {
    // Each call copies its request into memory and counts itself in a global, and denies if a
    // call finds either left over. Sequential calls reuse the same pooled slot.
    for i in 0..20 {
        let (response, _) = judge("previous-request").await;
        assert_eq!(
            response,
            json!({"uid": "fault-previous-request", "allowed": true}),
            "call {i}"
        );
    }
}

/// POSTs a review in `namespace` to `/validate/<policy>`; returns the reply's body size and
/// its `response`.
async fn judge_sized(policy: &str, namespace: &str) -> (usize, Value) {
    let server = server().await;
    let mut client = server.h2().await;
    let r = fault_review(policy, namespace);
    let reply = client
        .post(
            &format!("/validate/{policy}"),
            serde_json::to_vec(&r).expect("JSON"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let response = reply.json()["response"].clone();
    (reply.body.len(), response)
}

/// What one policy can add to a response is bounded by the engine's output cap; the response
/// as a whole carries a few hundred bytes more. (The limits of the API server on warnings are
/// the policy layer's, and asserted with it.)
const RESPONSE_BOUND: usize = MAX_OUTPUT_BYTES as usize + 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_message_is_bounded_by_the_output_cap() {
    let (size, response) = judge_sized("huge-message", "huge-message").await;
    assert!(size <= RESPONSE_BOUND, "response of {size} bytes");
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    // The policy layer keeps 32 KiB of a message (src/policy/bounded.rs), cut with an ellipsis.
    let message = response["status"]["message"].as_str().expect("message");
    assert!(
        message.len() <= "huge-message: ".len() + 32 * 1024,
        "{} bytes",
        message.len()
    );
    assert!(
        message.starts_with("huge-message: xxx") && message.ends_with("x…"),
        "{}",
        &message[..40]
    );
    eprintln!("huge-message: response of {size} bytes (bound {RESPONSE_BOUND})");
    assert_next_review_succeeds().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_warnings_list_is_bounded_by_the_output_cap() {
    let (size, response) = judge_sized("huge-warnings", "huge-warnings").await;
    assert!(size <= RESPONSE_BOUND, "response of {size} bytes");
    assert_eq!(response["allowed"], true);
    let warnings = response["warnings"].as_array().expect("warnings");
    // 64 warnings are read (the same "w", sent once), the rest counted without being parsed.
    assert_eq!(
        warnings,
        &[
            json!("w"),
            json!("999936 more warnings from this policy were dropped")
        ]
    );
    eprintln!(
        "huge-warnings: response of {size} bytes with {} warnings (bound {RESPONSE_BOUND})",
        warnings.len()
    );
    assert_next_review_succeeds().await;
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

/// POSTs a Pod review in `namespace` to `/validate`, which runs every policy that matches it;
/// checks that faults denied it (code 500) and returns the message, the warnings and how long
/// the review took.
async fn validate_all(namespace: &str, uid: &str) -> (String, Vec<Value>, Duration) {
    let server = server().await;
    let mut client = server.h2().await;
    let r = review("Pod", pod("p"), "CREATE", namespace, uid, false);
    let started = Instant::now();
    let response = client.review("/validate", &r).await;
    let elapsed = started.elapsed();
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 500, "{response}");
    let message = response["status"]["message"].as_str().expect("message");
    let warnings = response["warnings"].as_array().cloned().unwrap_or_default();
    (message.to_owned(), warnings, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_all_routes_are_merged_like_rejections() {
    // `/validate` runs every policy: the faults deny, each named, and the monitored and
    // fail-open ones only warn.
    let (message, warnings, elapsed) = validate_all("ml", "all").await;
    assert!(elapsed < 3 * FAULT_BOUND, "took {elapsed:?}");
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
    assert_eq!(warnings.len(), 4, "{warnings:?}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_policies_still_decide_beside_every_hostile_one() {
    // Namespace `hostile` runs every policy but the two whose answers are megabytes: the
    // hostile ones fault or report, and the well-behaved ones still decide in the same review.
    let (message, warnings, elapsed) = validate_all("hostile", "hostile-all").await;
    // Policies run one after another: six of them time out.
    assert!(elapsed < 6 * (DEADLINE + DEADLINE_SLACK), "took {elapsed:?}");
    assert!(
        message.starts_with("denied by 22 policies: policy infinite-loop failed: "),
        "{message}"
    );
    for part in [
        "deny-all: deny-all refuses everything",
        "policy sleep failed: timed out after 100 ms",
        "policy random-flood failed: timed out after 100 ms",
        "policy claimed-1gib-output failed: broke policy ABI v1: ",
        "policy non-utf8-output failed: returned invalid output: ",
        "stdout-flood: stdout: wrote 65536 bytes",
        "wasi-files: preopens: 0;",
        "wasi-environment: environ_sizes_get: errno 0, 0 variables",
        "wasi-sockets: sock_accept(3): errno 8;",
        "wasi-clocks: realtime: errno 0,",
        "policy wapc-host-capability failed: reported an error: validate: host capability ",
        "wasi-files-command: preopens: 0;",
        "wasi-environment-command: environ_sizes_get: errno 0, 0 variables",
    ] {
        assert!(message.contains(part), "no {part:?} in {message}");
    }
    assert!(!message.contains("previous-request"), "{message}");
    assert!(
        warnings.contains(&json!(
            "policy sleep-fail-open failed: timed out after 100 ms; allowed by its failure policy"
        )),
        "{warnings:?}"
    );
    assert_eq!(warnings.len(), 5, "{warnings:?}");
    eprintln!("every hostile policy in one review: answered after {elapsed:?}");
}

/// Every policy that faults or probes but answers in kilobytes, and the namespace its reviews
/// are sent in.
const HOSTILE: &[(&str, &str)] = &[
    ("infinite-loop", "hostile"),
    ("memory-grow", "hostile"),
    ("trap", "hostile"),
    ("output-outside-memory", "hostile"),
    ("invalid-json", "hostile"),
    ("validating-mutates", "hostile"),
    ("allocate-outside-memory", "hostile"),
    ("proc-exit", "hostile"),
    ("stack-overflow", "hostile"),
    ("sleep", "hostile"),
    ("random-flood", "hostile"),
    ("stdout-flood", "hostile"),
    ("claimed-1gib-output", "hostile"),
    ("non-utf8-output", "hostile"),
    ("wasi-files", "hostile"),
    ("wasi-environment", "hostile"),
    ("wasi-sockets", "hostile"),
    ("wasi-clocks", "hostile"),
    ("previous-request", "hostile"),
    ("wapc-host-capability", "hostile"),
    ("wasi-files-command", "hostile"),
    ("wasi-environment-command", "hostile"),
];

/// The policies whose answers are megabytes. The policy layer bounds messages and warnings while
/// decoding them (src/policy/bounded.rs); before it did, 5 reviews of each left +30 MiB and
/// +120 MiB resident.
const HUGE: &[(&str, &str)] = &[
    ("huge-message", "huge-message"),
    ("huge-warnings", "huge-warnings"),
];

/// How much resident memory may grow over its warmed-up baseline while hostile reviews repeat
/// (measured: about 3 MiB, the fiber stacks that stack-overflow touched).
const RSS_GROWTH_BOUND: u64 = 16 << 20;

/// The same for policies whose output is megabytes: the host copies each output (at most
/// `MAX_OUTPUT_BYTES`, 4 MiB) out of the guest, and glibc keeps a freed buffer of that size in the
/// arena of the blocking thread that used it, so the growth is bounded by the evaluations that
/// may run at once (8 here) times the output cap (measured: +20 MiB after huge-message).
const RSS_HUGE_GROWTH_BOUND: u64 = RSS_GROWTH_BOUND + 8 * (MAX_OUTPUT_BYTES as u64);

/// How much warming up may add to a fresh server: pool slots and fiber stacks kept resident
/// (measured: about 4 MiB with 8 slots).
const RSS_WARM_UP_BOUND: u64 = 32 << 20;

/// Sends every hostile policy one review, `at_once` of them concurrently on one HTTP/2
/// connection, and checks each answer is a decision.
async fn hostile_round(client: &common::Client, at_once: usize) {
    for batch in HOSTILE.chunks(at_once) {
        let mut tasks = tokio::task::JoinSet::new();
        for &(policy, namespace) in batch {
            let mut stream = client.stream().expect("HTTP/2");
            tasks.spawn(async move {
                let r = review("Pod", pod("p"), "CREATE", namespace, policy, false);
                let response = stream.review(&format!("/validate/{policy}"), &r).await;
                assert!(response["allowed"].is_boolean(), "{policy}: {response}");
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("review task");
        }
    }
}

/// Sends `policy` 5 reviews one after another; returns the time each took.
async fn repeat(client: &common::Client, policy: &str, namespace: &str) -> Duration {
    let started = Instant::now();
    for i in 0..5 {
        let mut stream = client.stream().expect("HTTP/2");
        let r = review(
            "Pod",
            pod("p"),
            "CREATE",
            namespace,
            &format!("{policy}-{i}"),
            false,
        );
        let response = stream.review(&format!("/validate/{policy}"), &r).await;
        assert!(response["allowed"].is_boolean(), "{policy}: {response}");
    }
    started.elapsed() / 5
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Reads the server's RSS after `what`, prints it next to `baseline`, and asserts that it is at
/// most `bound` above it, when there is a bound.
fn check_rss(server: &ChildServer, what: &str, baseline: u64, bound: Option<u64>) -> u64 {
    let rss = server.rss_bytes();
    eprintln!(
        "RSS after {what}: {:.1} MiB ({:+.1} MiB){}",
        mib(rss),
        mib(rss) - mib(baseline),
        if bound.is_none() { ", not bounded yet" } else { "" }
    );
    if let Some(bound) = bound {
        assert!(
            rss <= baseline + bound,
            "after {what}: RSS {:.1} MiB, more than {:.1} MiB over {:.1} MiB",
            mib(rss),
            mib(bound),
            mib(baseline)
        );
    }
    rss
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_to_its_baseline_after_hostile_reviews() {
    // Its own server process, so that no other test's allocations count.
    let server = ChildServer::start(CONFIG, &modules(), &["--max-concurrent-evaluations", "8"]).await;
    let client = server.h2().await;
    let fresh = server.rss_bytes();
    // Warm up: every pool slot, fiber stack and allocator arena gets used.
    hostile_round(&client, 8).await;
    hostile_round(&client, 1).await;
    let warm = check_rss(&server, "warming up", fresh, Some(RSS_WARM_UP_BOUND));
    for &(policy, namespace) in HOSTILE {
        let per_review = repeat(&client, policy, namespace).await;
        check_rss(
            &server,
            &format!("5 x {policy} ({per_review:?} each)"),
            warm,
            Some(RSS_GROWTH_BOUND),
        );
    }
    for _ in 0..3 {
        hostile_round(&client, 8).await;
    }
    check_rss(&server, "3 more concurrent rounds", warm, Some(RSS_GROWTH_BOUND));
    for &(policy, namespace) in HUGE {
        let per_review = repeat(&client, policy, namespace).await;
        check_rss(
            &server,
            &format!("5 x {policy} ({per_review:?} each)"),
            warm,
            Some(RSS_HUGE_GROWTH_BOUND),
        );
    }
    // And it still serves.
    let mut stream = client.stream().expect("HTTP/2");
    let r = review("Pod", pod("p"), "CREATE", "hostile", "after", false);
    assert_eq!(
        stream.review("/validate/allow-all", &r).await,
        json!({"uid": "after", "allowed": true})
    );
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

/// Starts a configuration of one policy, `name`, running `tests/fixtures/<fixture>.wat`, which
/// must be refused; checks that the error names the file, the policy and the module, and returns
/// what it says after them.
fn module_refusal(name: &str, fixture: &str) -> String {
    module_refusal_as(name, fixture, "")
}

/// [`module_refusal`] with more keys for the policy (`, abi: wasi`).
fn module_refusal_as(name: &str, fixture: &str, keys: &str) -> String {
    let module = format!("{fixture}.wasm");
    let (error, ws) = prepare_error(
        &format!("policies:\n  - {{name: {name}, module: {module}{keys}}}\n"),
        &[(&module, wat_fixture(fixture))],
    );
    let prefix = format!(
        "{}: policy `{name}`: module {}: ",
        config_path(&ws),
        ws.dir.path().join(&module).display()
    );
    error
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{error:?} does not start with {prefix:?}"))
        .to_owned()
}

/// A policy's `abi:` holds the module to that transport: a core module is no WASI command, no
/// waPC module and no component.
#[test]
fn a_module_that_does_not_speak_the_configured_abi_is_refused() {
    assert_eq!(
        module_refusal_as("as-command", "allow_all", ", abi: wasi"),
        "the module does not implement a WASI command: missing export `_start() -> ()`"
    );
    assert_eq!(
        module_refusal_as("as-wapc", "allow_all", ", abi: wapc"),
        "the module does not implement waPC: missing export \
         `__guest_call(op_len: i32, msg_len: i32) -> i32`"
    );
    assert_eq!(
        module_refusal_as("as-component", "allow_all", ", abi: component"),
        "the module does not implement a component: the binary is a core module"
    );
    let (error, _ws) = prepare_error(
        "policies:\n  - {name: typo, module: allow_all.wasm, abi: wasm}\n",
        &[("allow_all.wasm", wat_fixture("allow_all"))],
    );
    assert!(
        error.contains("policy `typo`")
            && error.contains("unknown variant `wasm`, expected one of `core`, `wasi`, `wapc`, `component`"),
        "{error}"
    );
}

#[test]
fn a_module_without_validate_is_refused() {
    assert_eq!(
        module_refusal("no-validate", "missing_validate"),
        "the module does not implement policy ABI v1: missing export \
         `validate(ptr: i32, len: i32) -> i64`"
    );
}

#[test]
fn a_module_with_an_unknown_import_is_refused_at_load_naming_it() {
    assert_eq!(
        module_refusal("fetcher", "unknown_import"),
        "the module cannot be linked: unknown import: `env::fetch_secret` has not been defined \
         (policies may import only WASI preview 1 and waPC's `wapc` host functions)"
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
    let output = common::serve_command(&ws).output().expect("run portcullis");
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
