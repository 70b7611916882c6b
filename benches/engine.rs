//! What one admission review costs inside the process, from the Wasm instance up to the encoded
//! response, measured on the default policy set and a realistic ML Deployment.
//!
//! Each criterion group answers one question, and everything that is not the answer (compiling
//! modules, loading the set, decoding the review where it is not the point) happens before the
//! measured loop:
//!
//! - `instantiate`: what does a fresh instance cost by itself? A tiny allow-all module on minimal
//!   input, the largest real module on minimal input, and that module's full evaluation.
//! - `policy`: what does one evaluation of each default policy cost on the Deployment
//!   (instantiate, call, decode the verdict, settle, merge; for mutating policies the patch too)?
//! - `review`: what does a whole `/validate` or `/mutate` cost against the default set, next to
//!   the empty set (decode + encode only, the floor); and decode and encode alone?
//! - `setup`: how much of a policy's cost is per-request set-up? Each policy on a ConfigMap
//!   (no pod spec: instantiate, parse settings and input, answer) next to the Deployment.
//! - `deadline`: what does holding the deadline through host calls cost? The engine's call
//!   (async Store, async WASI, a timeout around the call) next to the synchronous path it
//!   replaced ([`SyncFloor`]: same pooling and epochs, sync WASI, plain calls), for the tiny
//!   allow-all module and for pinned-images on the Deployment. The synchronous path is also what
//!   a `poll_oneoff` that honoured the deadline by itself would cost per evaluation.
//!
//! The review is `bench/review-deployment.json`, the same body `bench/load.sh` sends.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_main};
use serde_json::{Value, json};

use portcullis::config::Config;
use portcullis::engine::abi::core_v1;
use portcullis::engine::limits::{Limits, MemoryCap};
use portcullis::engine::{CompiledModule, Engine, EngineOptions, Export};
use portcullis::policy::evaluate::{self, Decision, Target};
use portcullis::policy::spec::PolicyKind;
use portcullis::policy::verdict::Verdict;
use portcullis::policy::{LoadedPolicy, PolicySet};
use portcullis::review::Admission;
use portcullis::review::respond::respond;
use portcullis::review::{Review, patch};

/// The Deployment AdmissionReview, pretty-printed in the repository; sent compact, as the API
/// server does.
const DEPLOYMENT_REVIEW: &str = include_str!("../bench/review-deployment.json");

/// ABI v1 at its smallest: no allocator, no parsing, a constant verdict. Instantiating it is the
/// floor every policy pays.
const ALLOW_ALL_WAT: &str = r#"
(module
  (memory (export "memory") 1)
  (data (i32.const 0) "{\"accepted\":true}")
  (func (export "allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "validate") (param i32 i32) (result i64) (i64.const 17)))
"#;

/// The input a policy sees when there is (almost) nothing to judge.
const MINIMAL_INPUT: &[u8] = br#"{"request":{},"settings":null}"#;

/// Everything the groups share, built once.
struct Fixture {
    engine: Engine,
    set: PolicySet,
    empty: PolicySet,
    deployment: Vec<u8>,
    configmap: Vec<u8>,
    disguised: Vec<u8>,
}

impl Fixture {
    fn new() -> Self {
        let config = Config::builtin().expect("the built-in configuration is valid");
        let engine = Engine::new(EngineOptions::default()).expect("engine");
        let set =
            PolicySet::load(&engine, &config.origin, &config.policies).expect("the default policy set loads");
        let review: Value =
            serde_json::from_str(DEPLOYMENT_REVIEW).expect("bench/review-deployment.json is JSON");
        let deployment = serde_json::to_vec(&review).expect("compact JSON");
        let fixture = Self {
            engine,
            set,
            empty: PolicySet::empty(),
            deployment,
            configmap: configmap_review(),
            disguised: disguised_review(review),
        };
        fixture.check();
        fixture
    }

    /// The figures mean something only on the happy path: the Deployment is allowed, the
    /// mutating chain patches it, and no policy faults on either request.
    fn check(&self) {
        let review = decode(&self.deployment);
        let validated = evaluate::validate(&self.set, &review, Target::All);
        assert_eq!(
            validated.answer.admission,
            Admission::Allow { patch: None },
            "{validated:?}"
        );
        let mutated = evaluate::mutate(&self.set, &review, Target::All);
        assert!(
            matches!(mutated.answer.admission, Admission::Allow { patch: Some(_) }),
            "{mutated:?}"
        );
        let ran = validated.evaluated.iter().chain(&mutated.evaluated);
        assert_eq!(
            ran.clone().count(),
            self.set.len(),
            "every policy matches the Deployment"
        );
        assert!(
            ran.clone()
                .all(|r| r.verdict != portcullis::policy::verdict::Label::Fault),
            "{validated:?} {mutated:?}"
        );
        for policy in self.set.iter() {
            let verdict = call(policy, &policy_input(policy, &self.configmap));
            assert!(
                !matches!(verdict, Verdict::Fault(_)),
                "{}: {verdict:?}",
                policy.spec.name
            );
        }
    }
}

/// A ConfigMap review: no pod spec, so a policy only instantiates, parses its settings and the
/// input, and answers. (The default set's matchers would skip it, hence [`call`].)
fn configmap_review() -> Vec<u8> {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b6f3a1e-2c4d-4e5f-8a9b-1c2d3e4f5a6b",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "name": "fraud-scorer-config",
            "namespace": "risk-prod",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "fraud-scorer-config", "namespace": "risk-prod"},
                "data": {"BATCH_SIZE": "32", "LOG_LEVEL": "INFO"}
            }
        }
    });
    serde_json::to_vec(&review).expect("compact JSON")
}

/// The Deployment review with its kind changed to one no policy checks: the policy parses the
/// whole 6.8 KB request but has nothing to judge. Sits between `configmap` and `deployment` in
/// the `setup` group, splitting a policy's work into reading the request and judging it.
fn disguised_review(mut review: Value) -> Vec<u8> {
    review["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
    review["request"]["object"]["kind"] = json!("ConfigMap");
    serde_json::to_vec(&review).expect("compact JSON")
}

fn decode(body: &[u8]) -> Review {
    Review::decode(body).expect("a valid AdmissionReview")
}

/// The bytes `policy` is called with for a review body: `{"request": ..., "settings": ...}`.
fn policy_input(policy: &LoadedPolicy, body: &[u8]) -> Vec<u8> {
    evaluate::input(decode(body).raw_request.get(), &policy.spec.settings)
}

/// One policy over its prepared input, past matching: a fresh instance, the call and the
/// verdict decoded, which is what `evaluate` does per policy before merging.
fn call(policy: &LoadedPolicy, input: &[u8]) -> Verdict {
    let result = policy.module.call(Export::Validate, input, policy.limits());
    Verdict::from_call(result.map(|out| out.bytes), policy.spec.kind)
}

/// A `/validate` or `/mutate` handler's work without the HTTP: decode, evaluate, encode.
fn review_route(set: &PolicySet, body: &[u8], kind: PolicyKind) -> Vec<u8> {
    let review = decode(body);
    let decision = evaluate_kind(set, &review, Target::All, kind);
    respond(&review.uid, &decision.answer)
}

fn evaluate_kind(set: &PolicySet, review: &Review, target: Target<'_>, kind: PolicyKind) -> Decision {
    match kind {
        PolicyKind::Validating => evaluate::validate(set, review, target),
        PolicyKind::Mutating => evaluate::mutate(set, review, target),
    }
}

fn instantiate(c: &mut Criterion, f: &Fixture) {
    let limits = Limits {
        timeout: Duration::from_secs(1),
        memory_bytes: 64 << 20,
    };
    let wasm = wat::parse_str(ALLOW_ALL_WAT).expect("valid WAT");
    let allow_all = f.engine.compile(&wasm).expect("the allow-all module compiles");
    let largest: Arc<LoadedPolicy> = Arc::clone(
        f.set
            .iter()
            .max_by_key(|p| p.spec.module.bytes.len())
            .expect("the default set has policies"),
    );
    let largest_module: &CompiledModule = &largest.module;
    let full_input = policy_input(&largest, &f.deployment);
    let label = format!(
        "{} ({} KiB)",
        largest.spec.name,
        largest.spec.module.bytes.len() >> 10
    );

    let mut g = c.benchmark_group("instantiate");
    g.bench_function("allow-all-wat/minimal-input", |b| {
        b.iter(|| allow_all.call(Export::Validate, black_box(MINIMAL_INPUT), limits))
    });
    g.bench_with_input(
        BenchmarkId::new(&label, "minimal-input"),
        MINIMAL_INPUT,
        |b, input| b.iter(|| largest_module.call(Export::Validate, black_box(input), largest.limits())),
    );
    g.bench_with_input(BenchmarkId::new(&label, "deployment"), &full_input, |b, input| {
        b.iter(|| largest_module.call(Export::Validate, black_box(input), largest.limits()))
    });
    g.finish();
}

fn policy(c: &mut Criterion, f: &Fixture) {
    let review = decode(&f.deployment);
    let mut g = c.benchmark_group("policy");
    for policy in f.set.iter() {
        g.bench_function(policy.spec.name.as_str(), |b| {
            b.iter(|| evaluate_kind(&f.set, black_box(&review), Target::One(policy), policy.spec.kind))
        });
    }
    g.finish();
}

fn review(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("review");
    for (route, kind) in [
        ("validate", PolicyKind::Validating),
        ("mutate", PolicyKind::Mutating),
    ] {
        for (set_name, set) in [("default-set", &f.set), ("empty-set", &f.empty)] {
            g.bench_function(BenchmarkId::new(route, set_name), |b| {
                b.iter(|| review_route(set, black_box(&f.deployment), kind))
            });
        }
    }
    g.bench_function("decode", |b| b.iter(|| decode(black_box(&f.deployment))));
    let decoded = decode(&f.deployment);
    let patched = evaluate::mutate(&f.set, &decoded, Target::All);
    g.bench_function("respond/patched", |b| {
        b.iter(|| respond(black_box(&decoded.uid), black_box(&patched.answer)))
    });
    // The host's share of a mutation, which validating policies never pay: decoding an output
    // that carries the whole object, parsing the request to splice it in, and the diff.
    let mutating = f
        .set
        .of_kind(PolicyKind::Mutating)
        .find(|p| {
            let out = p
                .module
                .call(Export::Validate, &policy_input(p, &f.deployment), p.limits());
            let bytes = out.expect("the Deployment evaluates").bytes;
            matches!(
                Verdict::from_output(&bytes, p.spec.kind),
                Verdict::Accept { mutated: Some(_), .. }
            )
        })
        .expect("a default mutating policy patches the Deployment");
    let output = mutating
        .module
        .call(
            Export::Validate,
            &policy_input(mutating, &f.deployment),
            mutating.limits(),
        )
        .expect("the Deployment evaluates")
        .bytes;
    g.bench_function("mutation/decode-output", |b| {
        b.iter(|| Verdict::from_output(black_box(&output), PolicyKind::Mutating))
    });
    g.bench_function("mutation/parse-request", |b| {
        b.iter(|| serde_json::from_str::<Value>(black_box(decoded.raw_request.get())))
    });
    let request: Value = serde_json::from_str(decoded.raw_request.get()).expect("JSON");
    let Verdict::Accept {
        mutated: Some(mutated),
        ..
    } = Verdict::from_output(&output, PolicyKind::Mutating)
    else {
        unreachable!("checked above")
    };
    g.bench_function("mutation/diff", |b| {
        b.iter(|| patch::diff(black_box(&request["object"]), black_box(&mutated)))
    });
    g.finish();
}

fn setup(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("setup");
    for policy in f.set.iter() {
        for (request, body) in [
            ("configmap", &f.configmap),
            ("deployment-unjudged", &f.disguised),
            ("deployment", &f.deployment),
        ] {
            let input = policy_input(policy, body);
            g.bench_with_input(
                BenchmarkId::new(policy.spec.name.as_str(), request),
                &input,
                |b, input| b.iter(|| call(policy, black_box(input))),
            );
        }
    }
    g.finish();
}

/// The synchronous call path the engine used before host calls were under the deadline: the
/// engine's pooling allocator and epoch interruption, wasmtime-wasi's sync linker, a sync Store
/// and plain calls, through ABI v1 exactly as the engine does. The floor of the `deadline` group.
struct SyncFloor {
    engine: wasmtime::Engine,
    linker: wasmtime::Linker<SyncState>,
}

struct SyncState {
    wasi: wasmtime_wasi::p1::WasiP1Ctx,
    cap: MemoryCap,
}

impl SyncFloor {
    fn new() -> Self {
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_core_instances(32)
            .total_memories(32)
            .total_tables(128)
            .total_component_instances(0)
            .max_memory_size(1 << 30)
            .max_memories_per_module(1)
            .max_tables_per_module(4)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(2 << 20)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = wasmtime::Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool))
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = wasmtime::Engine::new(&config).expect("sync engine");
        let mut linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut SyncState| &mut s.wasi)
            .expect("sync WASI");
        Self { engine, linker }
    }

    fn compile(&self, bytes: &[u8]) -> wasmtime::InstancePre<SyncState> {
        let module = wasmtime::Module::from_binary(&self.engine, bytes).expect("compiles");
        self.linker.instantiate_pre(&module).expect("links")
    }

    /// One evaluation: a fresh Store and instance, `allocate`, `validate`, the output copied out.
    fn call(pre: &wasmtime::InstancePre<SyncState>, input: &[u8], limits: Limits) -> Vec<u8> {
        let stdout = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(64 << 10);
        let stderr = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(64 << 10);
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stdout(stdout)
            .stderr(stderr)
            .build_p1();
        let state = SyncState {
            wasi,
            cap: MemoryCap::new(limits.memory_bytes),
        };
        let mut store = wasmtime::Store::new(pre.module().engine(), state);
        store.limiter(|s| &mut s.cap);
        store.set_epoch_deadline(limits.deadline_ticks());
        let instance = pre.instantiate(&mut store).expect("instantiates");
        let memory = instance.get_memory(&mut store, "memory").expect("memory");
        let allocate = instance
            .get_typed_func::<i32, i32>(&mut store, "allocate")
            .expect("allocate");
        let validate = instance
            .get_typed_func::<(i32, i32), i64>(&mut store, "validate")
            .expect("validate");
        let len = i32::try_from(input.len()).expect("small input");
        let ptr = allocate.call(&mut store, len).expect("allocate runs");
        memory
            .write(&mut store, ptr.cast_unsigned() as usize, input)
            .expect("input fits");
        let packed = validate.call(&mut store, (ptr, len)).expect("validate runs");
        let (out_ptr, out_len) = core_v1::unpack(packed);
        let mut out = vec![0; out_len as usize];
        memory
            .read(&store, out_ptr as usize, &mut out)
            .expect("output inside memory");
        out
    }
}

fn deadline(c: &mut Criterion, f: &Fixture) {
    let floor = SyncFloor::new();
    let allow_all_wasm = wat::parse_str(ALLOW_ALL_WAT).expect("valid WAT");
    let allow_all = f.engine.compile(&allow_all_wasm).expect("compiles");
    let pinned = f
        .set
        .iter()
        .find(|p| p.spec.name.as_str() == "pinned-images")
        .expect("the default set has pinned-images");
    let pinned_input = policy_input(pinned, &f.deployment);
    let cases = [
        (
            "allow-all-wat",
            &allow_all,
            floor.compile(&allow_all_wasm),
            MINIMAL_INPUT,
            Limits {
                timeout: Duration::from_secs(1),
                memory_bytes: 64 << 20,
            },
        ),
        (
            "pinned-images",
            &pinned.module,
            floor.compile(&pinned.spec.module.bytes),
            &pinned_input[..],
            pinned.limits(),
        ),
    ];
    let mut g = c.benchmark_group("deadline");
    for (name, module, pre, input, limits) in &cases {
        let engine_out = module
            .call(Export::Validate, input, *limits)
            .expect("evaluates")
            .bytes;
        assert_eq!(
            engine_out,
            SyncFloor::call(pre, input, *limits),
            "{name}: both paths answer alike"
        );
        g.bench_with_input(BenchmarkId::new("sync-floor", name), input, |b, input| {
            b.iter(|| SyncFloor::call(pre, black_box(input), *limits))
        });
        g.bench_with_input(BenchmarkId::new("engine", name), input, |b, input| {
            b.iter(|| module.call(Export::Validate, black_box(input), *limits))
        });
    }
    g.finish();
}

fn engine(c: &mut Criterion) {
    let fixture = Fixture::new();
    instantiate(c, &fixture);
    policy(c, &fixture);
    review(c, &fixture);
    setup(c, &fixture);
    deadline(c, &fixture);
}

/// What `criterion_group!` would generate, minus the undocumented `pub fn`. Short by default so
/// a run fits in a few minutes on two cores; the command line overrides it
/// (`cargo bench --bench engine -- --measurement-time 10`).
fn benches() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    engine(&mut criterion);
}

criterion_main!(benches);
