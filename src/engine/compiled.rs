//! A module compiled once, pre-linked into an `InstancePre`, and called in a fresh Store and
//! instance every time.
//!
//! A fresh instance per call is what isolates requests from each other: nothing a policy does
//! in one evaluation (globals, heap, a panic half-way through) can be seen by the next. With the
//! pooling allocator and copy-on-write memory images, that costs microseconds.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{InstancePre, Linker, Module, Store, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use super::EngineError;
use super::abi::component::ComponentPolicy;
use super::abi::{Abi, Transport, core_v1, wapc, wasi_command};
use super::deadline::{self, Timers};
use super::limits::{Limits, MemoryCap, MemoryExhausted};

/// Bytes of stdout and of stderr kept per call; writes beyond fail inside the guest.
pub const STDIO_CAPTURE_BYTES: usize = 64 * 1024;

/// The most bytes one `random_get` may ask for; more is a fault. The host builds the bytes in
/// a buffer of its own, outside the policy's memory cap and without a chance to check the
/// deadline, so one call must stay short (64 KiB take well under a millisecond); a policy
/// needs a few dozen bytes to seed a hash table.
pub const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// The entry points a policy can be called at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Export {
    /// Judge an admission request.
    Validate,
    /// Judge the policy's own settings, once at load.
    ValidateSettings,
}

impl Export {
    /// The export's name in ABI v1.
    pub fn name(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::ValidateSettings => "validate_settings",
        }
    }
}

/// Why a call produced no output. Each is a policy fault, settled by the failure policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The epoch deadline passed.
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// Linear memory would have grown past the cap.
    #[error("exceeded its memory limit of {} MiB", .0 >> 20)]
    MemoryExhausted(u64),
    /// The guest trapped (unreachable, out-of-bounds access, stack overflow, exit ...).
    #[error("trapped: {0}")]
    Trap(String),
    /// The guest broke the ABI (bad pointer, bad length, missing export ...).
    #[error("broke policy ABI v1: {0}")]
    Abi(String),
    /// The guest broke its transport's protocol (waPC, WASI command): a bad pointer or length,
    /// output over the cap, a missing response.
    #[error("broke the {0} protocol: {1}")]
    Protocol(&'static str, String),
    /// The guest reported that it could not answer (a waPC `__guest_error`).
    #[error("reported an error: {0}")]
    Guest(String),
    /// No instance could be created.
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    /// The module does not export the entry point asked for.
    #[error("does not export `{}`", .0.name())]
    NotExported(Export),
}

impl CallError {
    /// Classifies an error from instantiation or a call, using what the Store saw.
    pub(crate) fn from_wasmtime(error: wasmtime::Error, store: &Store<HostState>) -> Self {
        Self::classify(error, store.data().limits.timeout)
    }

    /// Classifies an error from instantiation or a call of a Store whose deadline is `timeout`.
    pub(crate) fn classify(error: wasmtime::Error, timeout: Duration) -> Self {
        if let Some(m) = error.downcast_ref::<MemoryExhausted>() {
            return Self::MemoryExhausted(m.limit);
        }
        if let Some(m) = error.chain().find_map(|e| e.downcast_ref::<MemoryExhausted>()) {
            return Self::MemoryExhausted(m.limit);
        }
        if let Some(trap) = error.downcast_ref::<Trap>() {
            return if *trap == Trap::Interrupt {
                Self::Timeout(timeout)
            } else {
                // wasmtime's text starts with "wasm trap: ", which `Trap`'s own Display repeats.
                let text = trap.to_string();
                Self::Trap(text.strip_prefix("wasm trap: ").unwrap_or(&text).to_owned())
            };
        }
        if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return Self::Trap(format!("exited with status {}", exit.0));
        }
        Self::Trap(error.root_cause().to_string())
    }
}

/// What a successful call returned.
#[derive(Debug)]
pub struct Output {
    /// The bytes the entry point returned (JSON by contract, not yet checked).
    pub bytes: Vec<u8>,
    /// What the guest wrote to stdout (WASI), at most [`STDIO_CAPTURE_BYTES`].
    pub stdout: Vec<u8>,
    /// What the guest wrote to stderr (WASI), at most [`STDIO_CAPTURE_BYTES`].
    pub stderr: Vec<u8>,
}

/// Per-Store host state: WASI with no files, environment or sockets, captured stdio, the
/// memory cap, and the waPC exchange.
pub struct HostState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) wapc: wapc::Exchange,
    cap: MemoryCap,
    limits: Limits,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl HostState {
    /// A context for one call of `export` over `input` through `transport`: only a WASI
    /// command gets the input on stdin, its two arguments, and a stdout as large as the output
    /// cap.
    fn new(limits: Limits, transport: Transport, export: Export, input: &[u8]) -> Self {
        let command = transport == Transport::WasiCommand;
        let stdout = MemoryOutputPipe::new(if command {
            wasi_command::STDOUT_CAPACITY
        } else {
            STDIO_CAPTURE_BYTES
        });
        let stderr = MemoryOutputPipe::new(STDIO_CAPTURE_BYTES);
        // No preopened directories, no environment, no socket addresses, and arguments only for
        // a command: the builder grants nothing it is not told to. Blocking the current thread
        // stays off: it would make `poll_oneoff` sleep the thread, out of the deadline's reach.
        let mut builder = wasmtime_wasi::WasiCtxBuilder::new();
        builder
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .max_random_size(MAX_RANDOM_BYTES)
            .allow_blocking_current_thread(false);
        if command {
            builder
                .args(&wasi_command::args(export))
                .stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(
                    super::abi::kubewarden_input(export, input).into_owned(),
                ));
        }
        Self {
            wasi: builder.build_p1(),
            wapc: wapc::Exchange::default(),
            cap: MemoryCap::new(limits.memory_bytes),
            limits,
            stdout,
            stderr,
        }
    }

    /// What the guest has written to stdout so far.
    pub(crate) fn stdout(&self) -> Vec<u8> {
        self.stdout.contents().to_vec()
    }

    /// What the guest has written to stderr so far.
    pub(crate) fn stderr(&self) -> Vec<u8> {
        self.stderr.contents().to_vec()
    }
}

/// A compiled, linked policy: a core module or a component, which nothing outside the engine
/// needs to tell apart.
#[derive(Clone)]
pub struct CompiledModule {
    code: Code,
    transport: Transport,
    timers: Arc<Timers>,
}

/// What a call instantiates.
#[derive(Clone)]
enum Code {
    /// A core module, pre-linked against WASI preview 1.
    Core(InstancePre<HostState>),
    /// A component of the `portcullis:policy` world, pre-linked against WASI preview 2.
    Component(ComponentPolicy),
}

impl std::fmt::Debug for CompiledModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModule")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl CompiledModule {
    pub(crate) fn new(
        engine: &wasmtime::Engine,
        linker: &Linker<HostState>,
        timers: Arc<Timers>,
        bytes: &[u8],
        abi: Option<Abi>,
    ) -> Result<Self, EngineError> {
        let module =
            Module::from_binary(engine, bytes).map_err(|e| EngineError::Compile(format!("{e:#}")))?;
        let transport = match abi {
            None => Transport::detect(&module),
            Some(abi) => Transport::detect_as(&module, abi),
        }
        .map_err(EngineError::Abi)?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| EngineError::Link(format!("{e:#}")))?;
        Ok(Self {
            code: Code::Core(pre),
            transport,
            timers,
        })
    }

    /// Wraps a compiled component policy.
    pub(crate) fn from_component(policy: ComponentPolicy, timers: Arc<Timers>) -> Self {
        Self {
            transport: policy.transport(),
            code: Code::Component(policy),
            timers,
        }
    }

    /// The ABI the module speaks.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Whether the module can judge its own settings.
    pub fn validates_settings(&self) -> bool {
        self.transport.validates_settings()
    }

    /// Runs `export` over `input` in a fresh instance under `limits`. Blocking: call it from a
    /// blocking thread, never from an async worker. Returns within `limits.timeout` (plus an
    /// epoch tick) whatever the guest does, host calls included: see [`super::deadline`].
    pub fn call(&self, export: Export, input: &[u8], limits: Limits) -> Result<Output, CallError> {
        if export == Export::ValidateSettings && !self.validates_settings() {
            return Err(CallError::NotExported(export));
        }
        match &self.code {
            Code::Core(pre) => self
                .timers
                .run(limits.timeout, self.call_async(pre, export, input, limits)),
            Code::Component(policy) => self
                .timers
                .run(limits.timeout, policy.call(export, input, limits)),
        }
    }

    async fn call_async(
        &self,
        pre: &InstancePre<HostState>,
        export: Export,
        input: &[u8],
        limits: Limits,
    ) -> Result<Output, CallError> {
        let state = HostState::new(limits, self.transport, export, input);
        let mut store = Store::new(pre.module().engine(), state);
        store.limiter(|s| &mut s.cap);
        deadline::arm(&mut store, limits);
        let instance =
            pre.instantiate_async(&mut store).await.map_err(|e| {
                match CallError::from_wasmtime(e, &store) {
                    CallError::Trap(msg) => CallError::Instantiate(msg),
                    other => other,
                }
            })?;
        let bytes = match self.transport {
            Transport::CoreV1 { initializes, .. } => {
                if initializes {
                    core_v1::initialize(&mut store, &instance).await?;
                }
                core_v1::call(&mut store, &instance, export, input).await?
            }
            Transport::WasiCommand => wasi_command::call(&mut store, &instance).await?,
            Transport::Wapc { starts, registers } => {
                wapc::initialize(&mut store, &instance, starts, registers).await?;
                wapc::call(&mut store, &instance, export, input).await?
            }
            Transport::Component { .. } => {
                return Err(CallError::Abi("a component compiled as a core module".into()));
            }
        };
        let state = store.into_data();
        // A command's stdout is its output, not something to log; waPC's console joins stderr.
        let stdout = match self.transport {
            Transport::WasiCommand => Vec::new(),
            _ => state.stdout(),
        };
        let mut stderr = state.stderr();
        let room = STDIO_CAPTURE_BYTES.saturating_sub(stderr.len());
        stderr.extend_from_slice(&state.wapc.console[..state.wapc.console.len().min(room)]);
        Ok(Output {
            bytes,
            stdout,
            stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::engine::test_module as module;

    fn limits() -> Limits {
        crate::engine::test_limits()
    }

    const RANDOM_GET: &str = r#"(import "wasi_snapshot_preview1" "random_get"
                                   (func $random_get (param i32 i32) (result i32)))"#;

    #[test]
    fn a_wasi_import_with_the_wrong_signature_is_refused_by_name() {
        // An unknown import is refused the same way: tests/faults.rs shows it through `prepare`.
        let error = module(
            r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32) (result i32)))"#,
            "",
        )
        .expect_err("links");
        assert_eq!(
            error.to_string(),
            "the module cannot be linked: incompatible import type for \
             `wasi_snapshot_preview1::fd_write`: types incompatible: expected type \
             `(func (param i32) (result i32))`, found type `(func (param i32 i32 i32 i32) (result i32))` \
             (policies may import only WASI preview 1 and waPC's `wapc` host functions)"
        );
    }

    #[test]
    fn random_get_is_bounded_per_call() {
        let call = |len: u64| {
            let body = format!("(drop (call $random_get (i32.const 65536) (i32.const {len})))");
            let module = module(RANDOM_GET, &body).expect("compiles");
            let started = Instant::now();
            let result = module.call(Export::Validate, b"{}", limits()).map(|o| o.bytes);
            (result, started.elapsed())
        };
        let (result, elapsed) = call(MAX_RANDOM_BYTES);
        assert_eq!(result.as_deref(), Ok(&br#"{"accepted":true}"#[..]));
        // The time a guest can spend in one call, out of the epoch's reach.
        assert!(elapsed < Duration::from_millis(50), "{elapsed:?}");
        eprintln!("random_get of {MAX_RANDOM_BYTES} bytes: call answered after {elapsed:?}");
        assert_eq!(
            call(MAX_RANDOM_BYTES + 1).0,
            Err(CallError::Trap(format!(
                "requested len {} exceeds limit {MAX_RANDOM_BYTES}",
                MAX_RANDOM_BYTES + 1
            )))
        );
    }

    /// A WASI reactor's constructor runs before `validate` on every fresh instance (Go's
    /// `//go:wasmexport` runtime traps without it), under the call's bounds; a constructor that
    /// traps fails the instantiation; one with another signature refuses the module.
    #[test]
    fn a_reactor_is_initialized_on_every_instance() {
        let module = |init: &str| {
            let wat = format!(
                r#"(module
                     (memory (export "memory") 1)
                     (global $ready (mut i32) (i32.const 0))
                     (data (i32.const 16) "{{\"accepted\":true}}{{\"accepted\":false}}")
                     (func (export "_initialize") {init})
                     (func (export "allocate") (param i32) (result i32) (i32.const 1024))
                     (func (export "validate") (param i32 i32) (result i64)
                       (if (result i64) (i32.eq (global.get $ready) (i32.const 1))
                         (then (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 17)))
                         (else (i64.or (i64.shl (i64.const 33) (i64.const 32)) (i64.const 18))))))"#
            );
            crate::engine::test_engine().compile(&wat::parse_str(wat).expect("valid WAT"))
        };
        let ready = module("(global.set $ready (i32.const 1))").expect("compiles");
        assert!(matches!(
            ready.transport(),
            Transport::CoreV1 {
                initializes: true,
                ..
            }
        ));
        for _ in 0..2 {
            let out = ready.call(Export::Validate, b"{}", limits()).expect("call");
            assert_eq!(out.bytes, br#"{"accepted":true}"#);
        }
        let trapping = module("unreachable").expect("compiles");
        assert!(matches!(
            trapping.call(Export::Validate, b"{}", limits()),
            Err(CallError::Instantiate(m)) if m.starts_with("_initialize trapped: ")
        ));
        let wrong = module("(param i32)").expect_err("refused");
        assert!(
            wrong.to_string().contains("export `_initialize` has signature"),
            "{wrong}"
        );
    }
}
