//! What the same decision costs in each language and transport of `policies/examples/`: one
//! evaluation (a fresh instance, the transport's calls — `allocate` and `validate` for core,
//! `_start` with stdin and stdout for wasi, `wapc_init` and `__guest_call` for wapc — and the
//! output read back) of team-and-registry, per language, on the same inputs. The modules are compiled before the measured loop; the WAT is assembled here,
//! the others come from `policies/examples/build.sh` (which `scripts/test` runs first).
//!
//! - `language/<transport>-<module>/<input>`: a minimal input with nothing to judge (the fixed cost of each
//!   language), the shared cases `deployment-object-labels-suffice` (accepted; 0.9 KB of input)
//!   and `deployment-every-violation` (five violations, 1.1 KB), and the request of
//!   `bench/review-deployment.json`, a realistic ML Deployment (6.8 KB; rejected: its log
//!   shipper `fluent/fluent-bit` comes from docker.io, which the settings deny).
//! - Python and JavaScript are components (`python-component`, `javascript-component`): their
//!   figures include instantiating the component (a dozen core instances for Python) with the
//!   pooling allocator and copy-on-write memory images.
//! - `language/allow-all-wat/<input>`: `tests/fixtures/allow_all.wat`, which reads nothing and
//!   answers a constant: the floor of instantiating and calling any module.
//!
//! Before measuring, every language must give the same output (as JSON) on every input, so the
//! figures compare the same work.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_main};
use serde_json::{Value, json};

use portcullis::engine::limits::Limits;
use portcullis::engine::{CompiledModule, Engine, EngineOptions, Export};
use portcullis::policy::evaluate;
use portcullis::policy::spec::Settings;
use portcullis_policy_sdk::testing;

/// Each example by transport and module name (`build/<name>.wasm`): the ids read
/// `language/<transport>-<module>/<input>`.
const LANGUAGES: &[(&str, &str)] = &[
    ("core", "wat"),
    ("core", "go"),
    ("wasi", "go-wasi"),
    ("wapc", "rust"),
    ("core", "c"),
    ("core", "assemblyscript"),
    ("component", "python"),
    ("component", "javascript"),
];

/// Nothing to judge: what a language costs before it reads anything (instantiation, its
/// runtime's start-up, parsing a tiny input, answering).
const MINIMAL_INPUT: &[u8] = br#"{"request":{},"settings":null}"#;

/// The production default bounds: a language that needs more would fail in the cluster.
const LIMITS: Limits = Limits {
    timeout: Duration::from_millis(100),
    memory_bytes: 64 << 20,
};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn examples() -> PathBuf {
    repo().join("policies/examples")
}

/// A language's module bytes: WAT assembled from source, the others as built.
fn module_bytes(language: &str) -> Vec<u8> {
    if language == "wat" {
        let path = examples().join("wat/policy.wat");
        return wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let path = examples().join("build").join(format!("{language}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run policies/examples/build.sh", path.display()))
}

/// The ABI input for a shared case: its request as the fixture contract builds it, and its
/// settings.
fn case_input(stem: &str) -> Vec<u8> {
    let path = examples().join("fixtures").join(format!("{stem}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fixture: testing::Fixture =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let request = testing::request_json_from_fixture(stem, &fixture).expect("a valid fixture");
    let settings = fixture.settings.clone().unwrap_or(Value::Null);
    evaluate::input(&request.to_string(), &Settings::new(&settings))
}

/// The ABI input for the bench's realistic Deployment review.
fn realistic_input() -> Vec<u8> {
    let text = std::fs::read_to_string(repo().join("bench/review-deployment.json"))
        .expect("bench/review-deployment.json");
    let review: Value = serde_json::from_str(&text).expect("JSON");
    evaluate::input(
        &review["request"].to_string(),
        &Settings::new(&json!({"denied_registries": ["docker.io", "quay.io"]})),
    )
}

/// The output as JSON, without `null` fields: Kubewarden's SDK writes absent fields as `null`,
/// which ABI v1 reads as absent.
fn call(module: &CompiledModule, input: &[u8]) -> Value {
    let output = module
        .call(Export::Validate, input, LIMITS)
        .expect("the evaluation succeeds");
    let mut value: Value = serde_json::from_slice(&output.bytes).expect("the output is JSON");
    if let Some(fields) = value.as_object_mut() {
        fields.retain(|_, v| !v.is_null());
    }
    value
}

fn languages(c: &mut Criterion) {
    // The components take seconds to compile: cached under the target directory.
    let engine = Engine::new(EngineOptions {
        cache: portcullis::engine::cache::ArtifactCache::Dir(
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifact-cache"),
        ),
        ..EngineOptions::default()
    })
    .expect("engine");
    let compile = |bytes: &[u8]| engine.compile(bytes).expect("the module compiles");
    let modules: Vec<(String, CompiledModule)> = LANGUAGES
        .iter()
        .map(|(transport, l)| (format!("{transport}-{l}"), compile(&module_bytes(l))))
        .collect();
    let floor =
        compile(&wat::parse_file(repo().join("tests/fixtures/allow_all.wat")).expect("allow_all.wat"));
    let inputs = [
        ("minimal", MINIMAL_INPUT.to_vec()),
        ("accepted", case_input("deployment-object-labels-suffice")),
        ("five-violations", case_input("deployment-every-violation")),
        ("realistic-deployment", realistic_input()),
    ];

    for (name, input) in &inputs {
        let outputs: Vec<(&str, Value)> = modules
            .iter()
            .map(|(l, m)| (l.as_str(), call(m, input)))
            .collect();
        let (_, first) = &outputs[0];
        for (language, output) in &outputs {
            assert_eq!(
                output, first,
                "{language} differs from {} on {name}",
                outputs[0].0
            );
        }
        let accepted = matches!(*name, "minimal" | "accepted");
        assert_eq!(first["accepted"], accepted, "{name}: {first}");
    }

    let mut g = c.benchmark_group("language");
    for (name, input) in &inputs {
        g.bench_with_input(BenchmarkId::new("allow-all-wat", name), input, |b, input| {
            b.iter(|| floor.call(Export::Validate, black_box(input), LIMITS))
        });
        for (language, module) in &modules {
            g.bench_with_input(BenchmarkId::new(language, name), input, |b, input| {
                b.iter(|| module.call(Export::Validate, black_box(input), LIMITS))
            });
        }
    }
    g.finish();
}

/// What `criterion_group!` would generate, minus the undocumented `pub fn`; short by default, as
/// in benches/engine.rs (`cargo bench --bench languages -- --measurement-time 10` for more).
fn benches() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    languages(&mut criterion);
}

criterion_main!(benches);
