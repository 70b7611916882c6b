//! The `wasi` transport: a WASI preview 1 command module, the door for any language with a WASI
//! target and a `main` (Go's `GOOS=wasip1`, Zig, C, ...).
//!
//! A call runs `_start` once in a fresh instance, the way a shell runs a program:
//!
//! - **argv** is `["policy.wasm", "validate"]` or `["policy.wasm", "validate-settings"]`,
//!   exactly what Kubewarden's policy-evaluator passes its WASI policies (`runtimes/wasi_cli`), so
//!   a Kubewarden WASI policy needs no change;
//! - **stdin** holds the input, ABI v1's JSON (with `{}` for absent settings, as Kubewarden
//!   hands them: see [`super::kubewarden_input`]), then end of file;
//! - **stdout** is the output, ABI v1's JSON, at most [`MAX_OUTPUT_BYTES`]; more is a fault;
//! - **exit**: returning from `_start` or `proc_exit(0)` is success; any other status is a fault
//!   that quotes the start of stderr, where a Go panic or a C `perror` lands.
//!
//! Everything else is the core transport's sandbox (crate::engine docs): no files, no
//! environment variables, no sockets, real clocks, the deadline through host calls, the memory
//! cap, stderr captured up to
//! [`crate::engine::compiled::STDIO_CAPTURE_BYTES`].

use wasmtime::{Instance, Module, Store};

use super::core_v1::MAX_OUTPUT_BYTES;
use super::{Transport, exports_func, exports_memory};
use crate::engine::compiled::{CallError, Export, HostState};

/// A WASI command's entry point.
pub const START: &str = "_start";

/// The program name a command sees as `argv[0]`.
const PROGRAM: &str = "policy.wasm";

/// The protocol's name in faults.
const PROTOCOL: &str = "WASI command";

/// How much of stderr a non-zero exit's fault quotes.
const STDERR_QUOTED_BYTES: usize = 512;

/// Checks that `module` is a command: a `memory` and `_start () -> ()`.
pub fn detect(module: &Module) -> Result<Transport, String> {
    let problem = if !exports_memory(module) {
        "missing export `memory` (a linear memory)".to_owned()
    } else {
        match exports_func(module, START, &[], &[]) {
            Ok(true) => return Ok(Transport::WasiCommand),
            Ok(false) => format!("missing export `{START}() -> ()`"),
            Err(e) => e,
        }
    };
    Err(format!("a WASI command: {problem}"))
}

/// The command line for `export`: the operation is the first argument, as in Kubewarden.
pub fn args(export: Export) -> [&'static str; 2] {
    match export {
        Export::Validate => [PROGRAM, "validate"],
        Export::ValidateSettings => [PROGRAM, "validate-settings"],
    }
}

/// The capacity of a command's stdout pipe: one byte past the output cap, so that output over
/// the cap is seen as such rather than silently cut to a length that happens to parse.
pub const STDOUT_CAPACITY: usize = MAX_OUTPUT_BYTES as usize + 1;

/// Runs `_start` in a fresh `instance` whose stdin and argv the Store's context already holds,
/// and returns what it wrote to stdout.
pub async fn call(store: &mut Store<HostState>, instance: &Instance) -> Result<Vec<u8>, CallError> {
    let start = instance
        .get_typed_func::<(), ()>(&mut *store, START)
        .map_err(|e| CallError::Protocol(PROTOCOL, format!("export `{START}`: {e}")))?;
    let exited = match start.call_async(&mut *store, ()).await {
        Ok(()) => Ok(()),
        Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) if exit.0 == 0 => Ok(()),
            Some(exit) => Err(exit.0),
            None => return Err(CallError::from_wasmtime(e, store)),
        },
    };
    let stdout = store.data().stdout();
    // Over the cap first: a write refused at the cap is what most often makes a program fail.
    if stdout.len() > MAX_OUTPUT_BYTES as usize {
        return Err(CallError::Protocol(
            PROTOCOL,
            format!("more than {MAX_OUTPUT_BYTES} bytes written to stdout"),
        ));
    }
    if let Err(status) = exited {
        let stderr = store.data().stderr();
        let quoted = String::from_utf8_lossy(&stderr[..stderr.len().min(STDERR_QUOTED_BYTES)]);
        let quoted = quoted.trim();
        return Err(CallError::Trap(if quoted.is_empty() {
            format!("exited with status {status}")
        } else {
            format!("exited with status {status}; stderr: {quoted}")
        }));
    }
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::engine::abi::core_v1::MAX_OUTPUT_BYTES;
    use crate::engine::abi::{Abi, Transport};
    use crate::engine::limits::Limits;
    use crate::engine::{CallError, CompiledModule, Export, test_engine};

    fn limits(timeout_ms: u64) -> Limits {
        Limits {
            timeout: Duration::from_millis(timeout_ms),
            memory_bytes: 16 << 20,
        }
    }

    /// A command importing `imports` whose `_start` runs `body`. Memory: 0-255 scratch, 256-
    /// strings and buffers. `$out(ptr, len)` writes to stdout, `$err` to stderr.
    fn command(imports: &str, body: &str) -> CompiledModule {
        let wat = format!(
            r#"(module
                 (import "wasi_snapshot_preview1" "fd_write"
                   (func $fd_write (param i32 i32 i32 i32) (result i32)))
                 {imports}
                 (memory (export "memory") 2)
                 (data (i32.const 256) "{{\"accepted\":true}}")
                 (func $write (param $fd i32) (param $ptr i32) (param $len i32)
                   (i32.store (i32.const 0) (local.get $ptr))
                   (i32.store (i32.const 4) (local.get $len))
                   (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
                 (func $out (param i32 i32) (call $write (i32.const 1) (local.get 0) (local.get 1)))
                 (func $err (param i32 i32) (call $write (i32.const 2) (local.get 0) (local.get 1)))
                 (func (export "_start") {body}))"#
        );
        test_engine()
            .compile(&wat::parse_str(wat).expect("valid WAT"))
            .expect("compiles")
    }

    fn run(module: &CompiledModule, export: Export, input: &[u8]) -> Result<Vec<u8>, CallError> {
        module.call(export, input, limits(5000)).map(|out| out.bytes)
    }

    #[test]
    fn a_command_answers_on_stdout_and_is_detected_from_start() {
        let module = command("", "(call $out (i32.const 256) (i32.const 17))");
        assert_eq!(module.transport(), Transport::WasiCommand);
        assert!(module.validates_settings());
        assert_eq!(
            run(&module, Export::Validate, b"{}").as_deref(),
            Ok(&br#"{"accepted":true}"#[..])
        );
    }

    /// The operation is argv[1], as Kubewarden passes it; stdin holds the input, with `{}` for
    /// absent settings.
    #[test]
    fn the_operation_is_the_first_argument_and_the_input_is_stdin() {
        let imports = r#"(import "wasi_snapshot_preview1" "args_sizes_get"
                           (func $args_sizes_get (param i32 i32) (result i32)))
                         (import "wasi_snapshot_preview1" "args_get"
                           (func $args_get (param i32 i32) (result i32)))
                         (import "wasi_snapshot_preview1" "fd_read"
                           (func $fd_read (param i32 i32 i32 i32) (result i32)))"#;
        // argv's bytes (NUL-separated) then, after a '|', everything read from stdin.
        let body = r#"
            (local $argv_len i32) (local $read i32)
            (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
            (local.set $argv_len (i32.load (i32.const 20)))
            (drop (call $args_get (i32.const 32) (i32.const 1024)))
            (i32.store8 (i32.add (i32.const 1024) (local.get $argv_len)) (i32.const 124))
            (i32.store (i32.const 64) (i32.add (i32.const 1025) (local.get $argv_len)))
            (i32.store (i32.const 68) (i32.const 8192))
            (drop (call $fd_read (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 72)))
            (call $out (i32.const 1024)
              (i32.add (i32.add (local.get $argv_len) (i32.const 1)) (i32.load (i32.const 72))))"#;
        let module = command(imports, body);
        assert_eq!(
            run(&module, Export::Validate, br#"{"request":{},"settings":null}"#).as_deref(),
            Ok(&b"policy.wasm\0validate\0|{\"request\":{},\"settings\":{}}"[..])
        );
        assert_eq!(
            run(&module, Export::ValidateSettings, b"null").as_deref(),
            Ok(&b"policy.wasm\0validate-settings\0|{}"[..])
        );
    }

    #[test]
    fn exit_zero_is_success_and_any_other_status_a_fault_quoting_stderr() {
        let exit = r#"(import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))"#;
        let zero = command(
            exit,
            "(call $out (i32.const 256) (i32.const 17)) (call $exit (i32.const 0))",
        );
        assert_eq!(
            run(&zero, Export::Validate, b"{}").as_deref(),
            Ok(&br#"{"accepted":true}"#[..])
        );
        let failing = command(
            exit,
            r#"(call $out (i32.const 256) (i32.const 17))
               (call $err (i32.const 256) (i32.const 10))
               (call $exit (i32.const 3))"#,
        );
        assert_eq!(
            run(&failing, Export::Validate, b"{}"),
            Err(CallError::Trap(
                r#"exited with status 3; stderr: {"accepted"#.to_owned()
            ))
        );
        let silent = command(exit, "(call $exit (i32.const 1))");
        assert_eq!(
            run(&silent, Export::Validate, b"{}"),
            Err(CallError::Trap("exited with status 1".to_owned()))
        );
    }

    #[test]
    fn garbage_on_stdout_is_a_fault_of_the_policy_layer() {
        let module = command("", "(call $out (i32.const 257) (i32.const 8))");
        let bytes = run(&module, Export::Validate, b"{}").expect("answers");
        assert_eq!(bytes, br#""accepte"#);
        let verdict = crate::policy::verdict::Verdict::from_call(
            Ok(bytes),
            crate::policy::spec::PolicyKind::Validating,
        );
        assert!(
            matches!(verdict, crate::policy::verdict::Verdict::Fault(_)),
            "{verdict:?}"
        );
    }

    #[test]
    fn stdout_over_the_output_cap_is_a_fault() {
        // 65 writes of 64 KiB: 4 MiB + 64 KiB.
        let body = "(local $i i32)
                    (loop $again
                      (call $out (i32.const 0) (i32.const 65536))
                      (local.set $i (i32.add (local.get $i) (i32.const 1)))
                      (br_if $again (i32.lt_u (local.get $i) (i32.const 65))))";
        let module = command("", body);
        assert_eq!(
            run(&module, Export::Validate, b"{}"),
            Err(CallError::Protocol(
                "WASI command",
                format!("more than {MAX_OUTPUT_BYTES} bytes written to stdout")
            ))
        );
        // Exactly the cap is still an answer (here not JSON, which the policy layer judges).
        let body = "(local $i i32)
                    (loop $again
                      (call $out (i32.const 0) (i32.const 65536))
                      (local.set $i (i32.add (local.get $i) (i32.const 1)))
                      (br_if $again (i32.lt_u (local.get $i) (i32.const 64))))";
        let at_cap = run(&command("", body), Export::Validate, b"{}").expect("answers");
        assert_eq!(at_cap.len(), MAX_OUTPUT_BYTES as usize);
    }

    /// Files (relative to fd 3, the first preopen, and to stdin) and the environment: nothing
    /// is there, and the command still answers. The output is what it saw: four errnos and the
    /// environment's size, as little-endian i32s.
    #[test]
    fn a_command_sees_no_files_and_no_environment() {
        let imports = r#"(import "wasi_snapshot_preview1" "path_open"
                           (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
                         (import "wasi_snapshot_preview1" "fd_prestat_get"
                           (func $fd_prestat_get (param i32 i32) (result i32)))
                         (import "wasi_snapshot_preview1" "environ_sizes_get"
                           (func $environ_sizes_get (param i32 i32) (result i32)))
                         (data (i32.const 400) "etc/passwd")"#;
        let body = r#"
            (i32.store (i32.const 512) (call $fd_prestat_get (i32.const 3) (i32.const 600)))
            (i32.store (i32.const 516) (call $path_open (i32.const 3) (i32.const 1) (i32.const 400)
              (i32.const 10) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 600)))
            (i32.store (i32.const 520) (call $path_open (i32.const 0) (i32.const 1) (i32.const 400)
              (i32.const 10) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 600)))
            (i32.store (i32.const 524) (call $environ_sizes_get (i32.const 528) (i32.const 532)))
            (call $out (i32.const 512) (i32.const 24))"#;
        let module = command(imports, body);
        let seen = run(&module, Export::Validate, b"{}").expect("answers");
        let words: Vec<u32> = seen
            .chunks(4)
            .map(|w| u32::from_le_bytes(w.try_into().expect("4 bytes")))
            .collect();
        // EBADF (8) for the missing preopen and both opens; environ_sizes_get succeeds (0) with
        // 0 variables in 0 bytes.
        assert_eq!(words, [8, 8, 8, 0, 0, 0]);
    }

    #[test]
    fn a_sleep_in_poll_oneoff_ends_at_the_deadline() {
        let imports = r#"(import "wasi_snapshot_preview1" "poll_oneoff"
                           (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))"#;
        // One relative monotonic clock subscription of 10 s at 1024.
        let body = "(i32.store8 (i32.const 1032) (i32.const 0))
                    (i32.store (i32.const 1040) (i32.const 1))
                    (i64.store (i32.const 1048) (i64.const 10000000000))
                    (i32.store16 (i32.const 1064) (i32.const 0))
                    (drop (call $poll_oneoff (i32.const 1024) (i32.const 2048) (i32.const 1) (i32.const 3000)))
                    (call $out (i32.const 256) (i32.const 17))";
        let module = command(imports, body);
        let started = Instant::now();
        let result = module.call(Export::Validate, b"{}", limits(100)).map(|o| o.bytes);
        let elapsed = started.elapsed();
        assert_eq!(result, Err(CallError::Timeout(Duration::from_millis(100))));
        assert!(
            elapsed >= Duration::from_millis(100) && elapsed < Duration::from_millis(200),
            "answered after {elapsed:?}"
        );
    }

    #[test]
    fn the_configuration_can_insist_on_a_transport() {
        let wasm = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)
            .expect("valid WAT");
        let engine = test_engine();
        assert_eq!(
            engine
                .compile_as(&wasm, Some(Abi::Wasi))
                .map(|m| m.transport())
                .ok(),
            Some(Transport::WasiCommand)
        );
        let refusal = |abi| {
            engine
                .compile_as(&wasm, Some(abi))
                .map(|m| m.transport())
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            refusal(Abi::Core),
            "the module does not implement policy ABI v1: missing export `allocate(len: i32) -> i32`"
        );
        assert_eq!(
            refusal(Abi::Wapc),
            "the module does not implement waPC: missing export \
             `__guest_call(op_len: i32, msg_len: i32) -> i32`"
        );
        assert_eq!(
            refusal(Abi::Component),
            "the module does not implement a component: the binary is a core module"
        );
        let no_start = wat::parse_str(r#"(module (memory (export "memory") 1))"#).expect("valid WAT");
        assert_eq!(
            engine
                .compile_as(&no_start, Some(Abi::Wasi))
                .map(|m| m.transport())
                .expect_err("refused")
                .to_string(),
            "the module does not implement a WASI command: missing export `_start() -> ()`"
        );
    }
}
