//! The `wapc` transport: the waPC protocol as Kubewarden's policy-server speaks it (through
//! wapc/wapc-rs's wasmtime-provider), so that policies built with Kubewarden's SDKs run
//! unmodified.
//!
//! A call, in a fresh instance:
//!
//! 1. **start**: `_start` when exported (TinyGo's runtime; a `proc_exit(0)` there is success),
//!    then `wapc_init` when exported, where the guest registers its operations (wapc-rs's
//!    `REQUIRED_STARTS`, in that order);
//! 2. **`__guest_call(op_len, msg_len) -> i32`**: the guest allocates room and calls
//!    `__guest_request(op_ptr, msg_ptr)`, which copies the operation name and the message in;
//!    it answers with `__guest_response(ptr, len)` and returns 1, or `__guest_error(ptr, len)`
//!    and returns 0.
//!
//! Operations: `validate` takes ABI v1's `{"request", "settings"}` and answers ABI v1's
//! ValidationResponse, which is Kubewarden's too (its absent fields written as `null`);
//! `validate_settings` takes the settings and answers `{"valid", "message"}`. Before
//! `validate_settings`, the policy's `protocol_version` must answer `"v1"`, the one Kubewarden
//! version there is, as policy-server checks when it loads a policy. Absent settings are `{}`,
//! as in Kubewarden ([`super::kubewarden_input`]).
//!
//! Host capabilities: `__host_call(binding, namespace, operation, payload)`. Kubewarden's
//! logging (`kubewarden`/`tracing`/`log`) is kept like `__console_log`: appended to the call's
//! captured stderr, bounded, which the policy layer logs under the policy's name. Every other
//! capability (`oci`, `net`, `kubernetes`, `crypto`, sigstore verification ...) answers 0 with
//! the host error `host capability <binding>/<namespace>/<operation> is not offered by
//! Portcullis`, which the SDKs hand to the policy as the call's error.
//!
//! The guest is hostile: every pointer and length it passes is checked against linear memory,
//! and every length against a cap, before anything is allocated or copied; a violation ends the
//! call as a fault ([`CallError::Protocol`]).

use wasmtime::{Caller, Extern, Instance, Linker, Memory, Module, Store, ValType};

use super::core_v1::MAX_OUTPUT_BYTES;
use super::{Transport, exports_func, exports_memory, kubewarden_input};
use crate::engine::compiled::{CallError, Export, HostState, STDIO_CAPTURE_BYTES};

/// The guest's entry point.
pub const GUEST_CALL: &str = "__guest_call";
/// Where the guest registers its operations.
const WAPC_INIT: &str = "wapc_init";
/// TinyGo's runtime start, called before `wapc_init`.
const START: &str = "_start";
/// The import module of the host functions.
const MODULE: &str = "wapc";
/// The protocol's name in faults.
const PROTOCOL: &str = "waPC";

/// Longest binding, namespace or operation name a host call may pass.
const MAX_NAME_BYTES: usize = 256;
/// Most of one log line (`__console_log`, Kubewarden's tracing) or guest error that is kept;
/// the rest is dropped, not read.
const MAX_LINE_BYTES: usize = 4 << 10;
/// The operation the host asks for before `validate_settings`.
const PROTOCOL_VERSION: &str = "protocol_version";
/// What `protocol_version` must answer.
const PROTOCOL_V1: &[u8] = br#""v1""#;

/// Checks the exports waPC requires: `memory` and `__guest_call`, and the optional starts.
pub fn detect(module: &Module) -> Result<Transport, String> {
    use ValType::I32;
    let check = || -> Result<Transport, String> {
        if !exports_memory(module) {
            return Err("missing export `memory` (a linear memory)".into());
        }
        if !exports_func(module, GUEST_CALL, &[I32, I32], &[I32])? {
            return Err(format!(
                "missing export `{GUEST_CALL}(op_len: i32, msg_len: i32) -> i32`"
            ));
        }
        Ok(Transport::Wapc {
            starts: exports_func(module, START, &[], &[])?,
            registers: exports_func(module, WAPC_INIT, &[], &[])?,
        })
    };
    check().map_err(|problem| format!("waPC: {problem}"))
}

/// One call's state between host and guest, in the Store.
#[derive(Debug, Default)]
pub(crate) struct Exchange {
    operation: &'static str,
    message: Vec<u8>,
    response: Option<Vec<u8>>,
    error: Option<String>,
    host_response: Vec<u8>,
    host_error: Vec<u8>,
    /// `__console_log` lines and Kubewarden log events, at most [`STDIO_CAPTURE_BYTES`].
    pub(crate) console: Vec<u8>,
}

impl Exchange {
    fn begin(&mut self, operation: &'static str, message: Vec<u8>) {
        self.operation = operation;
        self.message = message;
        self.response = None;
        self.error = None;
    }

    fn log(&mut self, line: &[u8]) {
        let room = STDIO_CAPTURE_BYTES.saturating_sub(self.console.len());
        let kept = &line[..line.len().min(room)];
        self.console.extend_from_slice(kept);
        if self.console.len() < STDIO_CAPTURE_BYTES {
            self.console.push(b'\n');
        }
    }
}

/// The guest broke the protocol inside a host function; ends the call.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Violation(String);

fn violation(text: String) -> wasmtime::Error {
    Violation(text).into()
}

fn memory(caller: &mut Caller<'_, HostState>) -> wasmtime::Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(violation("the module exports no `memory`".to_owned())),
    }
}

/// Checks `ptr..ptr+len` against linear memory and returns at most `keep` bytes from its start.
fn read(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
    keep: usize,
    what: &str,
) -> wasmtime::Result<Vec<u8>> {
    let memory = memory(caller)?;
    // Reinterpret the guest's i32s as the unsigned address and length they stand for.
    let (start, len) = (ptr.cast_unsigned() as usize, len.cast_unsigned() as usize);
    let size = memory.data_size(&*caller);
    if start.checked_add(len).is_none_or(|end| end > size) {
        return Err(violation(format!(
            "{what} at {start:#x} with length {len} lies outside linear memory of {size} bytes"
        )));
    }
    let mut out = vec![0; len.min(keep)];
    memory
        .read(&*caller, start, &mut out)
        .map_err(|e| violation(format!("{what}: {e}")))?;
    Ok(out)
}

/// Reads `ptr..ptr+len`, which may not be longer than `max`.
fn read_capped(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
    max: usize,
    what: &str,
) -> wasmtime::Result<Vec<u8>> {
    let n = len.cast_unsigned() as usize;
    if n > max {
        return Err(violation(format!(
            "{what} of {n} bytes exceeds the limit of {max} bytes"
        )));
    }
    read(caller, ptr, len, max, what)
}

fn write(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8], what: &str) -> wasmtime::Result<()> {
    let memory = memory(caller)?;
    let start = ptr.cast_unsigned() as usize;
    memory.write(&mut *caller, start, bytes).map_err(|_| {
        violation(format!(
            "{what} of {} bytes at {start:#x} does not fit linear memory of {} bytes",
            bytes.len(),
            memory.data_size(&*caller)
        ))
    })
}

fn len_i32(len: usize) -> i32 {
    // Every buffer the host holds is capped far below 2 GiB.
    i32::try_from(len).unwrap_or(i32::MAX)
}

/// Adds the `wapc` host functions to `linker`. None of them waits: each returns at once.
pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "__guest_request",
        |mut caller: Caller<'_, HostState>, op_ptr: i32, ptr: i32| {
            let operation = caller.data().wapc.operation;
            let message = std::mem::take(&mut caller.data_mut().wapc.message);
            let written = write(&mut caller, ptr, &message, "the message")
                .and_then(|()| write(&mut caller, op_ptr, operation.as_bytes(), "the operation"));
            caller.data_mut().wapc.message = message;
            written
        },
    )?;
    linker.func_wrap(
        MODULE,
        "__guest_response",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
            let response = read_capped(&mut caller, ptr, len, MAX_OUTPUT_BYTES as usize, "the response")?;
            caller.data_mut().wapc.response = Some(response);
            Ok(())
        },
    )?;
    linker.func_wrap(
        MODULE,
        "__guest_error",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
            let error = read(&mut caller, ptr, len, MAX_LINE_BYTES, "the error")?;
            caller.data_mut().wapc.error = Some(String::from_utf8_lossy(&error).into_owned());
            Ok(())
        },
    )?;
    linker.func_wrap(
        MODULE,
        "__console_log",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
            let line = read(&mut caller, ptr, len, MAX_LINE_BYTES, "the log line")?;
            caller.data_mut().wapc.log(&line);
            Ok(())
        },
    )?;
    linker.func_wrap(
        MODULE,
        "__host_call",
        |mut caller: Caller<'_, HostState>,
         bd_ptr: i32,
         bd_len: i32,
         ns_ptr: i32,
         ns_len: i32,
         op_ptr: i32,
         op_len: i32,
         ptr: i32,
         len: i32| {
            let binding = read_capped(&mut caller, bd_ptr, bd_len, MAX_NAME_BYTES, "the binding")?;
            let namespace = read_capped(&mut caller, ns_ptr, ns_len, MAX_NAME_BYTES, "the namespace")?;
            let operation = read_capped(&mut caller, op_ptr, op_len, MAX_NAME_BYTES, "the operation")?;
            let payload = read(&mut caller, ptr, len, MAX_LINE_BYTES, "the payload")?;
            let exchange = &mut caller.data_mut().wapc;
            exchange.host_response.clear();
            exchange.host_error.clear();
            Ok(match (&binding[..], &namespace[..], &operation[..]) {
                (b"kubewarden", b"tracing", b"log") => {
                    exchange.log(&payload);
                    1
                }
                _ => {
                    let name = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                    exchange.host_error = format!(
                        "host capability {}/{}/{} is not offered by Portcullis",
                        name(&binding),
                        name(&namespace),
                        name(&operation)
                    )
                    .into_bytes();
                    0
                }
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "__host_response",
        |mut caller: Caller<'_, HostState>, ptr: i32| {
            let response = std::mem::take(&mut caller.data_mut().wapc.host_response);
            let written = write(&mut caller, ptr, &response, "the host response");
            caller.data_mut().wapc.host_response = response;
            written
        },
    )?;
    linker.func_wrap(MODULE, "__host_response_len", |caller: Caller<'_, HostState>| {
        len_i32(caller.data().wapc.host_response.len())
    })?;
    linker.func_wrap(
        MODULE,
        "__host_error",
        |mut caller: Caller<'_, HostState>, ptr: i32| {
            let error = std::mem::take(&mut caller.data_mut().wapc.host_error);
            let written = write(&mut caller, ptr, &error, "the host error");
            caller.data_mut().wapc.host_error = error;
            written
        },
    )?;
    linker.func_wrap(MODULE, "__host_error_len", |caller: Caller<'_, HostState>| {
        len_i32(caller.data().wapc.host_error.len())
    })?;
    Ok(())
}

/// Classifies an error from a waPC call: a [`Violation`] is a protocol fault.
fn classify(error: wasmtime::Error, store: &Store<HostState>) -> CallError {
    if let Some(v) = error.downcast_ref::<Violation>() {
        return CallError::Protocol(PROTOCOL, v.0.clone());
    }
    CallError::from_wasmtime(error, store)
}

/// Runs the starts the module exports on a fresh `instance`: `_start`, then `wapc_init`.
pub async fn initialize(
    store: &mut Store<HostState>,
    instance: &Instance,
    starts: bool,
    registers: bool,
) -> Result<(), CallError> {
    for (name, exported) in [(START, starts), (WAPC_INIT, registers)] {
        if !exported {
            continue;
        }
        let start = instance
            .get_typed_func::<(), ()>(&mut *store, name)
            .map_err(|e| CallError::Protocol(PROTOCOL, format!("export `{name}`: {e}")))?;
        match start.call_async(&mut *store, ()).await {
            Ok(()) => {}
            Err(e)
                if e.downcast_ref::<wasmtime_wasi::I32Exit>()
                    .is_some_and(|x| x.0 == 0) => {}
            Err(e) => {
                return Err(match classify(e, store) {
                    CallError::Trap(msg) => CallError::Instantiate(format!("{name} trapped: {msg}")),
                    other => other,
                });
            }
        }
    }
    Ok(())
}

/// Runs `export` over ABI v1 `input` in an initialized `instance` and returns the guest's
/// response. `validate_settings` is preceded by the `protocol_version` check.
pub async fn call(
    store: &mut Store<HostState>,
    instance: &Instance,
    export: Export,
    input: &[u8],
) -> Result<Vec<u8>, CallError> {
    if export == Export::ValidateSettings {
        let version = invoke(store, instance, PROTOCOL_VERSION, Vec::new()).await?;
        if version.trim_ascii() != PROTOCOL_V1 {
            return Err(CallError::Protocol(
                PROTOCOL,
                format!(
                    "{PROTOCOL_VERSION} answered {}, expected {}",
                    String::from_utf8_lossy(&version[..version.len().min(64)]),
                    String::from_utf8_lossy(PROTOCOL_V1)
                ),
            ));
        }
    }
    invoke(
        store,
        instance,
        export.name(),
        kubewarden_input(export, input).into_owned(),
    )
    .await
}

/// One `__guest_call` of `operation` over `message`.
async fn invoke(
    store: &mut Store<HostState>,
    instance: &Instance,
    operation: &'static str,
    message: Vec<u8>,
) -> Result<Vec<u8>, CallError> {
    let guest_call = instance
        .get_typed_func::<(i32, i32), i32>(&mut *store, GUEST_CALL)
        .map_err(|e| CallError::Protocol(PROTOCOL, format!("export `{GUEST_CALL}`: {e}")))?;
    let msg_len = i32::try_from(message.len()).map_err(|_| {
        CallError::Protocol(
            PROTOCOL,
            format!("a message of {} bytes does not fit an i32 length", message.len()),
        )
    })?;
    store.data_mut().wapc.begin(operation, message);
    let succeeded = guest_call
        .call_async(&mut *store, (len_i32(operation.len()), msg_len))
        .await
        .map_err(|e| classify(e, store))?;
    let exchange = &mut store.data_mut().wapc;
    if succeeded == 1 {
        return exchange.response.take().ok_or_else(|| {
            CallError::Protocol(
                PROTOCOL,
                format!("`{operation}` reported success without a response (`__guest_response`)"),
            )
        });
    }
    Err(CallError::Guest(format!(
        "{operation}: {}",
        exchange
            .error
            .take()
            .unwrap_or_else(|| "no error message (`__guest_error`)".to_owned())
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::limits::Limits;
    use crate::engine::{CompiledModule, test_engine};

    fn limits() -> Limits {
        crate::engine::test_limits()
    }

    /// A waPC guest whose `__guest_call` fetches the operation to 1024 and the message to 4096,
    /// then runs `body` with `$op_len` and `$msg_len`. Its `wapc_init` sets `$ready`; strings
    /// at 256 onwards.
    fn guest(body: &str) -> CompiledModule {
        let wat = format!(
            r#"(module
                 (import "wapc" "__guest_request" (func $request (param i32 i32)))
                 (import "wapc" "__guest_response" (func $response (param i32 i32)))
                 (import "wapc" "__guest_error" (func $error (param i32 i32)))
                 (import "wapc" "__console_log" (func $log (param i32 i32)))
                 (import "wapc" "__host_call"
                   (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
                 (import "wapc" "__host_error_len" (func $host_error_len (result i32)))
                 (import "wapc" "__host_error" (func $host_error (param i32)))
                 (memory (export "memory") 2)
                 (global $ready (mut i32) (i32.const 0))
                 (data (i32.const 256) "\"v1\"")
                 (data (i32.const 272) "{{\"valid\":true}}")
                 (data (i32.const 304) "kubewarden")
                 (data (i32.const 320) "oci")
                 (data (i32.const 336) "v1/manifest_digest")
                 (data (i32.const 368) "not ready")
                 (data (i32.const 384) "hello from the guest")
                 (data (i32.const 416) "tracing")
                 (data (i32.const 432) "log")
                 (func (export "wapc_init") (global.set $ready (i32.const 1)))
                 (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
                   (if (i32.eqz (global.get $ready))
                     (then (call $error (i32.const 368) (i32.const 9)) (return (i32.const 0))))
                   (call $request (i32.const 1024) (i32.const 4096))
                   {body}))"#
        );
        test_engine()
            .compile(&wat::parse_str(wat).expect("valid WAT"))
            .expect("compiles")
    }

    /// Answers `protocol_version` (16 bytes) with "v1", `validate_settings` (17) with valid, and
    /// echoes `validate`'s message.
    const PROTOCOL: &str = r#"
        (if (i32.eq (local.get $op_len) (i32.const 16))
          (then (call $response (i32.const 256) (i32.const 4)) (return (i32.const 1))))
        (if (i32.eq (local.get $op_len) (i32.const 17))
          (then (call $response (i32.const 272) (i32.const 14)) (return (i32.const 1))))
        (call $response (i32.const 4096) (local.get $msg_len))
        (i32.const 1)"#;

    fn run(module: &CompiledModule, export: Export, input: &[u8]) -> Result<Vec<u8>, CallError> {
        module.call(export, input, limits()).map(|out| out.bytes)
    }

    #[test]
    fn validate_gets_the_request_and_settings_after_wapc_init() {
        let module = guest(PROTOCOL);
        assert_eq!(
            module.transport(),
            Transport::Wapc {
                starts: false,
                registers: true
            }
        );
        assert_eq!(
            run(
                &module,
                Export::Validate,
                br#"{"request":{"uid":"1"},"settings":null}"#
            )
            .as_deref(),
            Ok(&br#"{"request":{"uid":"1"},"settings":{}}"#[..])
        );
    }

    #[test]
    fn validate_settings_follows_a_protocol_version_of_v1() {
        assert_eq!(
            run(&guest(PROTOCOL), Export::ValidateSettings, b"null").as_deref(),
            Ok(&br#"{"valid":true}"#[..])
        );
        // A guest of another protocol version never sees its settings.
        let v2 = guest(
            r#"(i32.store8 (i32.const 258) (i32.const 50))
               (call $response (i32.const 256) (i32.const 4)) (i32.const 1)"#,
        );
        assert_eq!(
            run(&v2, Export::ValidateSettings, b"{}"),
            Err(CallError::Protocol(
                "waPC",
                r#"protocol_version answered "v2", expected "v1""#.to_owned()
            ))
        );
    }

    /// The Kubewarden SDKs hand a failed host call's error to the policy, which reports it.
    #[test]
    fn an_unoffered_host_capability_answers_an_error_naming_it() {
        let module = guest(
            r#"(if (i32.eqz (call $host_call (i32.const 304) (i32.const 10) (i32.const 320)
                  (i32.const 3) (i32.const 336) (i32.const 18) (i32.const 4096) (local.get $msg_len)))
                 (then
                   (call $host_error (i32.const 8192))
                   (call $error (i32.const 8192) (call $host_error_len))
                   (return (i32.const 0))))
               (call $response (i32.const 256) (i32.const 4))
               (i32.const 1)"#,
        );
        assert_eq!(
            run(&module, Export::Validate, b"{}"),
            Err(CallError::Guest(
                "validate: host capability kubewarden/oci/v1/manifest_digest is not offered by \
                 Portcullis"
                    .to_owned()
            ))
        );
    }

    #[test]
    fn console_and_kubewarden_logs_join_stderr() {
        let module = guest(
            r#"(call $log (i32.const 384) (i32.const 20))
               (drop (call $host_call (i32.const 304) (i32.const 10) (i32.const 416) (i32.const 7)
                 (i32.const 432) (i32.const 3) (i32.const 384) (i32.const 5)))
               (call $response (i32.const 256) (i32.const 4))
               (i32.const 1)"#,
        );
        let out = module.call(Export::Validate, b"{}", limits()).expect("answers");
        assert_eq!(out.bytes, br#""v1""#);
        assert_eq!(out.stderr, b"hello from the guest\nhello\n");
    }

    /// Lengths and pointers from the guest are checked before anything is read or allocated.
    #[test]
    fn malformed_guest_lengths_are_faults() {
        let fault = |body: &str| run(&guest(body), Export::Validate, b"{}");
        assert_eq!(
            fault("(call $response (i32.const 0xffff0000) (i32.const 16)) (i32.const 1)"),
            Err(CallError::Protocol(
                "waPC",
                "the response at 0xffff0000 with length 16 lies outside linear memory of 131072 bytes"
                    .to_owned()
            ))
        );
        assert_eq!(
            fault("(call $response (i32.const 0) (i32.const -1)) (i32.const 1)"),
            Err(CallError::Protocol(
                "waPC",
                format!("the response of 4294967295 bytes exceeds the limit of {MAX_OUTPUT_BYTES} bytes")
            ))
        );
        assert_eq!(
            fault(
                "(drop (call $host_call (i32.const 0) (i32.const 0x7fffffff) (i32.const 0) (i32.const 0)
                   (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))) (i32.const 1)"
            ),
            Err(CallError::Protocol(
                "waPC",
                "the binding of 2147483647 bytes exceeds the limit of 256 bytes".to_owned()
            ))
        );
        assert_eq!(
            fault("(call $error (i32.const 131000) (i32.const 1000)) (i32.const 0)"),
            Err(CallError::Protocol(
                "waPC",
                "the error at 0x1ffb8 with length 1000 lies outside linear memory of 131072 bytes".to_owned()
            ))
        );
        // Success without a response, and failure without an error.
        assert_eq!(
            fault("(i32.const 1)"),
            Err(CallError::Protocol(
                "waPC",
                "`validate` reported success without a response (`__guest_response`)".to_owned()
            ))
        );
        assert_eq!(
            fault("(i32.const 0)"),
            Err(CallError::Guest(
                "validate: no error message (`__guest_error`)".to_owned()
            ))
        );
    }

    #[test]
    fn a_message_that_does_not_fit_the_guest_is_a_fault() {
        // The guest asks for the message at the last bytes of its memory.
        let wat = r#"(module
            (import "wapc" "__guest_request" (func $request (param i32 i32)))
            (memory (export "memory") 1)
            (func (export "__guest_call") (param i32 i32) (result i32)
              (call $request (i32.const 0) (i32.const 65530)) (i32.const 1)))"#;
        let module = test_engine()
            .compile(&wat::parse_str(wat).expect("valid WAT"))
            .expect("compiles");
        assert_eq!(
            run(&module, Export::Validate, br#"{"request":{}}"#),
            Err(CallError::Protocol(
                "waPC",
                "the message of 14 bytes at 0xfffa does not fit linear memory of 65536 bytes".to_owned()
            ))
        );
    }
}
