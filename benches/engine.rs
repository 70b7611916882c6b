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
//!
//! The review is `bench/review-deployment.json`, the same body `bench/load.sh` sends.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_main};
use serde_json::{Value, json};

use portcullis::config::Config;
use portcullis::engine::limits::Limits;
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

fn engine(c: &mut Criterion) {
    let fixture = Fixture::new();
    instantiate(c, &fixture);
    policy(c, &fixture);
    review(c, &fixture);
    setup(c, &fixture);
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
