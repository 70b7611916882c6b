//! The `component` transport: a WebAssembly component of the `portcullis:policy` world
//! (`policies/wit/policy.wit`), the door for languages whose toolchains produce components
//! (Python through componentize-py, JavaScript through componentize-js).
//!
//! The payloads are ABI v1's JSON, passed as strings: `validate(request: string) -> string` and
//! optionally `validate-settings(settings: string) -> string`. The sandbox is the core
//! transport's, in WASI preview 2 terms: every WASI p2 interface is linked (those toolchains'
//! runtimes import them), but the context grants no preopened directory, no environment, no
//! arguments and no network (`wasi:sockets` answers `access-denied` to TCP and UDP and
//! `permanent-resolver-failure` to every name lookup); clocks and random are real, as in [`crate::engine`]; stdin is empty and stdout and
//! stderr are captured, [`STDIO_CAPTURE_BYTES`] each. Each call gets a fresh Store and instance,
//! the same epoch deadline and host-call timers ([`crate::engine::deadline`]), and one memory
//! cap over the sum of all the component's memories ([`MemoryCap`]).

use std::sync::Arc;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable, Type};
use wasmtime::{Store, Trap};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::Transport;
use super::core_v1::MAX_OUTPUT_BYTES;
use crate::engine::EngineError;
use crate::engine::compiled::{CallError, Export, MAX_RANDOM_BYTES, Output, STDIO_CAPTURE_BYTES};
use crate::engine::deadline;
use crate::engine::limits::{Limits, MemoryCap, MemoryExhausted, StoreShape};

/// The most core instances, memories and tables one component may create. componentize-py's
/// Python needs about a dozen instances, a few memories and tables; componentize-js fewer.
/// These size the pooling allocator per component (see [`crate::engine::Engine::new`]).
pub const SHAPE: StoreShape = StoreShape {
    instances: 32,
    memories: 4,
    tables: 16,
};

impl Export {
    /// The export's name in the `portcullis:policy` world.
    pub fn component_name(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::ValidateSettings => "validate-settings",
        }
    }
}

/// Per-Store host state of a component: a WASI preview 2 context that grants nothing but clocks,
/// random and captured stdio, its resource table, and the memory cap.
pub struct ComponentState {
    wasi: WasiCtx,
    table: ResourceTable,
    cap: MemoryCap,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl ComponentState {
    fn new(limits: Limits) -> Self {
        let stdout = MemoryOutputPipe::new(STDIO_CAPTURE_BYTES);
        let stderr = MemoryOutputPipe::new(STDIO_CAPTURE_BYTES);
        // The builder grants nothing it is not told to: no preopens, environment or arguments;
        // TCP, UDP and name lookups are off and the socket address check refuses every address.
        // Blocking the current thread stays off, as for preview 1 (see `deadline`).
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .max_random_size(MAX_RANDOM_BYTES)
            .allow_blocking_current_thread(false)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            cap: MemoryCap::shaped(limits.memory_bytes, SHAPE),
            stdout,
            stderr,
        }
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The WASI preview 2 linker every component is linked against: wasmtime-wasi's async one, so
/// that every host call is a future the deadline can cancel.
pub(crate) fn linker(engine: &wasmtime::Engine) -> Result<Linker<ComponentState>, EngineError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| EngineError::Wasi(format!("{e:#}")))?;
    Ok(linker)
}

/// Checks the exports of the `portcullis:policy` world and their types.
pub fn detect(component: &Component, engine: &wasmtime::Engine) -> Result<Transport, String> {
    let ty = component.component_type();
    let check = |name: &str| -> Result<bool, String> {
        let Some(export) = ty.get_export(engine, name) else {
            return Ok(false);
        };
        let ComponentItem::ComponentFunc(func) = export.ty else {
            return Err(format!(
                "export `{name}` must be a function, found {:?}",
                export.ty
            ));
        };
        let params: Vec<Type> = func.params().map(|(_, t)| t).collect();
        let results: Vec<Type> = func.results().collect();
        if matches!(params.as_slice(), [Type::String]) && matches!(results.as_slice(), [Type::String]) {
            Ok(true)
        } else {
            Err(format!(
                "export `{name}` has type {params:?} -> {results:?}, expected func(string) -> string"
            ))
        }
    };
    if !check(Export::Validate.component_name())? {
        return Err("missing export `validate: func(request: string) -> string` \
                    (world portcullis:policy/policy)"
            .into());
    }
    let validates_settings = check(Export::ValidateSettings.component_name())?;
    Ok(Transport::Component { validates_settings })
}

/// A compiled component, pre-linked against WASI preview 2.
#[derive(Clone)]
pub struct ComponentPolicy {
    pre: InstancePre<ComponentState>,
    transport: Transport,
}

impl ComponentPolicy {
    /// Compiles `bytes` (a component binary), checks its exports and links its imports.
    pub(crate) fn new(
        engine: &wasmtime::Engine,
        linker: &Arc<Linker<ComponentState>>,
        bytes: &[u8],
    ) -> Result<Self, EngineError> {
        let component =
            Component::from_binary(engine, bytes).map_err(|e| EngineError::Compile(format!("{e:#}")))?;
        let transport = detect(&component, engine)
            .map_err(|e| EngineError::Abi(format!("the `portcullis:policy` world: {e}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| EngineError::Link(format!("{e:#}")))?;
        Ok(Self { pre, transport })
    }

    /// The transport: always [`Transport::Component`].
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Runs `export` over `input` in a fresh Store and instance under `limits`. The caller
    /// bounds the whole future by `limits.timeout` (see [`deadline::Timers::run`]).
    pub(crate) async fn call(
        &self,
        export: Export,
        input: &[u8],
        limits: Limits,
    ) -> Result<Output, CallError> {
        let input =
            std::str::from_utf8(input).map_err(|e| CallError::Abi(format!("input is not UTF-8: {e}")))?;
        let mut store = Store::new(self.pre.engine(), ComponentState::new(limits));
        store.limiter(|s| &mut s.cap);
        deadline::arm(&mut store, limits);
        let classify = |e| CallError::classify(e, limits.timeout);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| match classify(e) {
                CallError::Trap(msg) => CallError::Instantiate(msg),
                other => other,
            })?;
        let name = export.component_name();
        let func = instance
            .get_typed_func::<(&str,), (String,)>(&mut store, name)
            .map_err(|e| CallError::Abi(format!("export `{name}`: {e:#}")))?;
        let (output,) = func.call_async(&mut store, (input,)).await.map_err(|e| {
            // A trap, the memory cap or an exit is the guest's fault as in core modules; any
            // other error is the canonical ABI refusing what the guest returned (a string
            // outside its memory, invalid UTF-8).
            if e.is::<Trap>() || e.chain().any(|c| c.is::<MemoryExhausted>()) || e.is::<I32Exit>() {
                classify(e)
            } else {
                CallError::Abi(e.root_cause().to_string())
            }
        })?;
        // The string is lifted (copied out of the guest) before its length can be seen: wasmtime
        // runs the guest's post-return, which may free it, as the call returns, so a lazily
        // lifted `WasmStr` would read freed memory. The copy is bounded by the memory cap.
        if output.len() > MAX_OUTPUT_BYTES as usize {
            return Err(CallError::Abi(format!(
                "output of {} bytes exceeds the limit of {MAX_OUTPUT_BYTES} bytes",
                output.len()
            )));
        }
        let bytes = output.into_bytes();
        let state = store.into_data();
        Ok(Output {
            bytes,
            stdout: state.stdout.contents().to_vec(),
            stderr: state.stderr.contents().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::engine::{CompiledModule, test_engine};

    /// A component whose core `validate` runs `body`, then answers the string of `out_len`
    /// bytes at 32 (`{"accepted":true}` is 17), with one page of memory to start.
    fn component(body: &str, out_len: u32) -> CompiledModule {
        let wat = format!(
            r#"(component
                 (core module $m
                   (memory (export "memory") 1)
                   (data (i32.const 16) "\20\00\00\00")
                   (data (i32.const 32) "{{\"accepted\":true}}")
                   (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
                   (func (export "validate") (param i32 i32) (result i32)
                     {body}
                     (i32.store (i32.const 20) (i32.const {out_len}))
                     (i32.const 16)))
                 (core instance $i (instantiate $m))
                 (func (export "validate") (param "request" string) (result string)
                   (canon lift (core func $i "validate") (memory (core memory $i "memory"))
                     (realloc (core func $i "realloc")))))"#
        );
        let bytes = wat::parse_str(wat).expect("valid component WAT");
        assert!(crate::engine::is_component(&bytes));
        test_engine().compile(&bytes).expect("compiles")
    }

    fn limits(timeout_ms: u64) -> Limits {
        Limits {
            timeout: Duration::from_millis(timeout_ms),
            memory_bytes: 16 << 20,
        }
    }

    #[test]
    fn a_component_answers_through_the_world_exports() {
        let policy = component("", 17);
        assert_eq!(
            policy.transport(),
            Transport::Component {
                validates_settings: false
            }
        );
        let out = policy
            .call(Export::Validate, b"{}", limits(1000))
            .expect("answers");
        assert_eq!(out.bytes, br#"{"accepted":true}"#);
        assert_eq!(
            policy
                .call(Export::ValidateSettings, b"null", limits(1000))
                .map(|o| o.bytes),
            Err(CallError::NotExported(Export::ValidateSettings))
        );
    }

    #[test]
    fn a_looping_component_is_cut_at_the_deadline() {
        let policy = component("(loop $forever (br $forever))", 17);
        let started = Instant::now();
        let result = policy.call(Export::Validate, b"{}", limits(100)).map(|o| o.bytes);
        let elapsed = started.elapsed();
        assert_eq!(result, Err(CallError::Timeout(Duration::from_millis(100))));
        assert!(
            elapsed >= Duration::from_millis(100) && elapsed < Duration::from_millis(200),
            "{elapsed:?}"
        );
    }

    #[test]
    fn growing_memory_past_the_cap_is_a_memory_fault() {
        // 16 MiB is 256 pages; the component starts with one.
        let policy = component("(drop (memory.grow (i32.const 256)))", 17);
        assert_eq!(
            policy
                .call(Export::Validate, b"{}", limits(1000))
                .map(|o| o.bytes),
            Err(CallError::MemoryExhausted(16 << 20))
        );
        let within = component("(drop (memory.grow (i32.const 255)))", 17);
        assert!(within.call(Export::Validate, b"{}", limits(1000)).is_ok());
    }

    #[test]
    fn output_beyond_the_cap_is_a_fault_and_so_is_output_outside_memory() {
        // 80 more pages make 5.06 MiB of memory, enough to hold the 4 MiB + 1 byte claimed.
        let policy = component("(drop (memory.grow (i32.const 80)))", MAX_OUTPUT_BYTES + 1);
        assert_eq!(
            policy
                .call(Export::Validate, b"{}", limits(1000))
                .map(|o| o.bytes),
            Err(CallError::Abi(format!(
                "output of {} bytes exceeds the limit of {MAX_OUTPUT_BYTES} bytes",
                MAX_OUTPUT_BYTES + 1
            )))
        );
        let outside = component("", 1 << 20);
        assert_eq!(
            outside
                .call(Export::Validate, b"{}", limits(1000))
                .map(|o| o.bytes),
            Err(CallError::Abi(
                "string pointer/length out of bounds of memory".into()
            ))
        );
    }

    /// What a component's WASI preview 2 imports answer, asked through the very host functions
    /// the linker binds, on the context every call gets.
    #[test]
    fn the_wasi_context_grants_no_files_environment_arguments_or_network() {
        use wasmtime_wasi::cli::WasiCliCtxView;
        use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
        use wasmtime_wasi::p2::bindings::cli::environment::Host as _;
        use wasmtime_wasi::p2::bindings::filesystem::preopens::Host as _;
        use wasmtime_wasi::p2::bindings::sockets::instance_network::Host as _;
        use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::Host as _;
        use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily};
        use wasmtime_wasi::p2::bindings::sockets::tcp_create_socket::Host as _;
        use wasmtime_wasi::p2::bindings::sockets::udp_create_socket::Host as _;
        use wasmtime_wasi::sockets::WasiSocketsCtxView;

        let mut state = ComponentState::new(limits(1000));
        let mut cli = WasiCliCtxView {
            ctx: state.wasi.cli(),
            table: &mut state.table,
        };
        assert_eq!(cli.get_environment().expect("environment"), Vec::new());
        assert_eq!(cli.get_arguments().expect("arguments"), Vec::<String>::new());
        assert_eq!(cli.initial_cwd().expect("cwd"), None);
        let mut files = WasiFilesystemCtxView {
            ctx: state.wasi.filesystem(),
            table: &mut state.table,
        };
        assert_eq!(files.get_directories().expect("preopens").len(), 0);
        let mut sockets = WasiSocketsCtxView {
            ctx: state.wasi.sockets(),
            table: &mut state.table,
        };
        let code = |e: wasmtime_wasi::p2::SocketError| e.downcast().expect("an error code");
        let tcp = sockets.create_tcp_socket(IpAddressFamily::Ipv4).map(|_| ());
        assert!(matches!(tcp.map_err(code), Err(ErrorCode::AccessDenied)));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let udp = runtime
            .block_on(sockets.create_udp_socket(IpAddressFamily::Ipv6))
            .map(|_| ());
        assert!(matches!(udp.map_err(code), Err(ErrorCode::AccessDenied)));
        for name in ["localhost", "127.0.0.1", "example.com"] {
            let network = sockets.instance_network().expect("network");
            let lookup = sockets.resolve_addresses(network, name.into()).map(|_| ());
            assert!(
                matches!(lookup.map_err(code), Err(ErrorCode::PermanentResolverFailure)),
                "{name}"
            );
        }
    }

    #[test]
    fn a_component_with_the_wrong_signature_is_refused() {
        let wat = r#"(component
              (core module $m (func (export "v") (param i32) (result i32) (local.get 0)))
              (core instance $i (instantiate $m))
              (func (export "validate") (param "n" u32) (result u32)
                (canon lift (core func $i "v"))))"#;
        let error = test_engine()
            .compile(&wat::parse_str(wat).expect("valid WAT"))
            .expect_err("refused");
        assert_eq!(
            error.to_string(),
            "the module does not implement the `portcullis:policy` world: export `validate` has \
             type [U32] -> [U32], expected func(string) -> string"
        );
        // A configuration that insists on a core-module transport is told what the binary is.
        let error = test_engine()
            .compile_as(
                &wat::parse_str(wat).expect("valid WAT"),
                Some(crate::engine::abi::Abi::Wasi),
            )
            .expect_err("refused");
        assert_eq!(
            error.to_string(),
            "the module does not implement `abi: wasi`: the binary is a component, not a core module"
        );
    }
}
