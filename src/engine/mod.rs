//! The Wasm engine: one wasmtime `Engine` for the process, a pooling allocator sized for the
//! evaluations that may run at once, and the clocks that make deadlines hold.
//!
//! The engine knows Wasm and nothing of Kubernetes: it compiles modules and runs one exported
//! function over bytes in a fresh instance, under [`limits::Limits`]. What the bytes mean is
//! the policy layer's business.
//!
//! # What a policy can reach
//!
//! A policy may import WASI preview 1 (`wasi_snapshot_preview1`) and nothing else; any other
//! import is refused when the module is loaded, naming the import. Every WASI function is
//! linked, but each Store's context grants only:
//!
//! - **clocks**: the host's real wall clock (`REALTIME`) and monotonic clock, which counts from
//!   the call's own start and so tells nothing of the host; the CPU-time clocks fail with
//!   `EBADF`. `poll_oneoff` may sleep, but never past the call's deadline (see [`deadline`]).
//! - **random**: the host's cryptographically secure generator, seeded afresh for each call, at
//!   most [`compiled::MAX_RANDOM_BYTES`] per `random_get` (more is a fault).
//! - **stdio**: stdin is closed (reads return end of file); stdout and stderr are captured,
//!   [`compiled::STDIO_CAPTURE_BYTES`] each, after which writes fail with `EIO`.
//! - **nothing else**: no preopened directories (every `path_open` fails with `EBADF`), no
//!   environment variables, no arguments, no sockets (`sock_*` fail with `ENOTSOCK` on stdio
//!   and `EBADF` on any other descriptor, without logging: see [`wasi`]), and `proc_exit` ends
//!   the call as a fault.
//!
//! Clocks and random are real rather than deterministic. A verdict may legitimately depend on
//! the time (an expiry date, a change window), and a fixed clock would make such a policy
//! silently wrong. A fixed random seed would make every hash table in every Rust policy
//! predictable, so a request author could craft labels that collide and push the policy into
//! its timeout, which with `failure: allow` is a bypass. Determinism that matters (the same
//! request gets the same verdict) is the policy's contract, not the sandbox's.
//!
//! `tests/faults.rs` probes each of these from a guest; `tests/README.md` lists the probes.

pub mod abi;
pub mod cache;
pub mod compiled;
pub mod deadline;
pub mod inspect;
pub mod limits;
pub mod wasi;

use std::sync::Arc;

use wasmtime::{InstanceAllocationStrategy, Linker, PoolingAllocationConfig};

pub use compiled::{CallError, CompiledModule, Export, Output};

use crate::engine::abi::component::{self as component_abi, ComponentPolicy, ComponentState};
use crate::engine::cache::{ArtifactCache, CacheStats};
use crate::engine::compiled::HostState;
use crate::engine::deadline::{EpochTicker, Timers};

/// Why the engine could not be built or a module not compiled.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime refused the engine configuration.
    #[error("cannot configure the Wasm engine: {0}")]
    Configure(String),
    /// WASI could not be added to the linker.
    #[error("cannot link WASI preview 1: {0}")]
    Wasi(String),
    /// The waPC host functions could not be added to the linker.
    #[error("cannot link the waPC host functions: {0}")]
    Wapc(String),
    /// The bytes are not a valid Wasm module.
    #[error("not a valid Wasm module: {0}")]
    Compile(String),
    /// The module imports something Portcullis does not provide.
    #[error(
        "the module cannot be linked: {0} (policies may import only WASI preview 1 and waPC's \
         `wapc` host functions)"
    )]
    Link(String),
    /// The module does not implement a known policy ABI (or not the one its configuration
    /// names): the text says which and what is missing.
    #[error("the module does not implement {0}")]
    Abi(String),
    /// A thread the engine needs could not be started.
    #[error("cannot start the {0} thread")]
    Thread(&'static str, #[source] std::io::Error),
    /// The runtime that times host calls could not be built.
    #[error("cannot build the runtime for host-call timers")]
    Timers(#[source] std::io::Error),
}

/// Bytes of each pooled memory and table kept resident between instances.
const KEEP_RESIDENT_BYTES: usize = 2 << 20;

/// How many evaluations may run at once, which sizes the instance pool, and where compiled
/// artifacts are cached.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Concurrent instances; callers hold one permit of a semaphore of this size per call.
    pub max_concurrent_instances: u32,
    /// The compiled-artifact cache on disk.
    pub cache: ArtifactCache,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_concurrent_instances: 32,
            cache: ArtifactCache::Off,
        }
    }
}

/// The shared Wasm engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    wasm: wasmtime::Engine,
    linker: Arc<Linker<HostState>>,
    components: Arc<wasmtime::component::Linker<ComponentState>>,
    cache: Option<wasmtime::Cache>,
    options: EngineOptions,
    timers: Arc<Timers>,
    _ticker: Arc<EpochTicker>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(options: EngineOptions) -> Result<Self, EngineError> {
        let slots = options.max_concurrent_instances.max(1);
        // Every slot can hold the largest Store: one component of `component_abi::SHAPE` (a
        // core module needs less). The memory cap is per Store, over all its memories.
        let shape = component_abi::SHAPE;
        let per_slot = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(slots.saturating_mul(per_slot(shape.instances)))
            .total_memories(slots.saturating_mul(per_slot(shape.memories)))
            .total_tables(slots.saturating_mul(per_slot(shape.tables)))
            .total_component_instances(slots)
            .max_core_instances_per_component(per_slot(shape.instances))
            .max_memories_per_component(per_slot(shape.memories))
            .max_tables_per_component(per_slot(shape.tables))
            .max_memory_size(usize::try_from(limits::MAX_POLICY_MEMORY_MIB << 20).unwrap_or(usize::MAX))
            .max_memories_per_module(1)
            .max_tables_per_module(4)
            // One fiber stack per call in flight: every call is async (see `deadline`).
            .total_stacks(slots)
            // Reset the first pages of a slot with memset instead of madvise: under load, returning
            // pages to the kernel and faulting them back in cost more (cross-core TLB flushes)
            // than the policy itself. 2 MiB covers a typical policy's stack and heap.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES)
            // Where the kernel supports it, reset only the pages the instance actually dirtied.
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = wasmtime::Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            // Each instance maps its memories' initial contents copy-on-write from the compiled
            // image instead of copying them: a Python component's heap is megabytes.
            .memory_init_cow(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let cache = match &options.cache {
            ArtifactCache::Off => None,
            ArtifactCache::Dir(dir) => match cache::open(dir) {
                Ok(cache) => Some(cache),
                Err(error) => {
                    tracing::warn!(error = %error, "compiling every policy at start-up: no artifact cache");
                    None
                }
            },
        };
        config.cache(cache.clone());
        let wasm = wasmtime::Engine::new(&config).map_err(|e| EngineError::Configure(format!("{e:#}")))?;
        let mut linker = Linker::new(&wasm);
        wasi::link(&mut linker)?;
        abi::wapc::link(&mut linker).map_err(|e| EngineError::Wapc(format!("{e:#}")))?;
        let components = component_abi::linker(&wasm)?;
        let ticker = EpochTicker::start(wasm.clone())?;
        let timers = Timers::start()?;
        Ok(Self {
            wasm,
            linker: Arc::new(linker),
            components: Arc::new(components),
            cache,
            options,
            timers,
            _ticker: ticker,
        })
    }

    /// The options the engine was built with.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Compiles `bytes` once, a core module or a component as its header says; the result
    /// instantiates cheaply for every call. With an artifact cache, an unchanged module is
    /// loaded from it instead.
    pub fn compile(&self, bytes: &[u8]) -> Result<CompiledModule, EngineError> {
        self.compile_as(bytes, None)
    }

    /// Compiles `bytes` as [`Engine::compile`] does, but as the transport `abi` when given
    /// instead of detecting it (a policy's `abi:` setting).
    pub fn compile_as(&self, bytes: &[u8], abi: Option<abi::Abi>) -> Result<CompiledModule, EngineError> {
        let timers = Arc::clone(&self.timers);
        if is_component(bytes) {
            if let Some(other) = abi.filter(|a| *a != abi::Abi::Component) {
                return Err(EngineError::Abi(format!(
                    "`abi: {other}`: the binary is a component, not a core module"
                )));
            }
            let policy = ComponentPolicy::new(&self.wasm, &self.components, bytes)?;
            return Ok(CompiledModule::from_component(policy, timers));
        }
        CompiledModule::new(&self.wasm, &self.linker, timers, bytes, abi)
    }

    /// The artifact cache's hits and misses so far, when there is a cache.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(|c| CacheStats {
            hits: c.cache_hits(),
            misses: c.cache_misses(),
        })
    }
}

/// Whether `bytes` start with a component's header (the binary's layer field is 1), as
/// opposed to a core module's.
pub fn is_component(bytes: &[u8]) -> bool {
    wasmparser::Parser::is_component(bytes)
}

/// One engine for all of the engine's unit tests: each engine starts two threads.
#[cfg(test)]
pub(crate) fn test_engine() -> &'static Engine {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::new(EngineOptions {
            max_concurrent_instances: 4,
            cache: ArtifactCache::Off,
        })
        .expect("engine")
    })
}

/// For the engine's unit tests: bounds no test module comes near (5 s, 16 MiB), so a test fails
/// on what it checks, not on a loaded machine.
#[cfg(test)]
pub(crate) fn test_limits() -> limits::Limits {
    limits::Limits {
        timeout: std::time::Duration::from_secs(5),
        memory_bytes: 16 << 20,
    }
}

/// For the engine's unit tests: a module importing `imports` whose `validate` runs `body`
/// (with 128 KiB of memory to use) and then accepts.
#[cfg(test)]
pub(crate) fn test_module(imports: &str, body: &str) -> Result<CompiledModule, EngineError> {
    let wat = format!(
        r#"(module
             {imports}
             (memory (export "memory") 2)
             (data (i32.const 16) "{{\"accepted\":true}}")
             (func (export "allocate") (param i32) (result i32) (i32.const 4096))
             (func (export "validate") (param i32 i32) (result i64)
               {body}
               (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 17))))"#
    );
    test_engine().compile(&wat::parse_str(wat).expect("valid WAT"))
}
