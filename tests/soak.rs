//! The soak: the real binary under a steady mix of reviews for minutes, on loopback. Not part of
//! the default test run (`#[ignore]`); `scripts/soak` runs it in release mode.
//!
//! A fixed rate of reviews, round-robin over HTTP/2 connections: allowed (a compliant Pod),
//! denied (a `:latest` image), mutated (a Pod without resources, on `/mutate`) and faulting (a
//! policy that traps, failing closed). Every response is checked: status 200, the request's uid,
//! the expected decision and message, a patch that applies and adds the default resources. It
//! passes when no review is lost or malformed, every decision is right, and the server's resident
//! memory after warm-up stays within 10 % of its level early in the run.
//!
//! `PORTCULLIS_SOAK_SECS` (default 180) and `PORTCULLIS_SOAK_RATE` (reviews per second, default
//! 200) set the size; both are bounded.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ChildServer, pod, review};
use serde_json::{Value, json};

const CONFIG: &str = r#"
policies:
  - {name: pinned-images, module: pinned_images.wasm, match: {namespaces: {include: [ml, faulty]}}}
  - {name: readiness-probe, module: readiness_probe.wasm, match: {namespaces: {include: [ml]}}}
  - {name: trap, module: trap.wasm, match: {namespaces: {include: [faulty]}}}
  - {name: default-resources, module: default_resources.wasm, mutating: true,
     settings: {default_request: {cpu: 250m, memory: 512Mi}, default: {memory: 1Gi}}}
"#;

#[derive(Clone, Copy, Debug)]
enum Mix {
    Allowed,
    Denied,
    Mutated,
    Faulting,
}

const MIX: [Mix; 4] = [Mix::Allowed, Mix::Denied, Mix::Mutated, Mix::Faulting];

fn env_u64(name: &str, default: u64, max: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .clamp(1, max)
}

fn probed_pod(name: &str, image: &str) -> Value {
    let mut p = pod(name);
    p["spec"]["containers"][0]["image"] = json!(image);
    p["spec"]["containers"][0]["readinessProbe"] = json!({"httpGet": {"path": "/ready", "port": 8080}});
    p
}

/// The review for one request, and what its answer must be.
fn request(mix: Mix, n: u64) -> (&'static str, Value) {
    let uid = format!("soak-{n}");
    match mix {
        Mix::Allowed => (
            "/validate",
            review(
                "Pod",
                probed_pod("ok", "registry.example.com/m:1.0"),
                "CREATE",
                "ml",
                &uid,
                false,
            ),
        ),
        Mix::Denied => (
            "/validate",
            review(
                "Pod",
                probed_pod("bad", "registry.example.com/m:latest"),
                "CREATE",
                "ml",
                &uid,
                false,
            ),
        ),
        Mix::Mutated => ("/mutate", review("Pod", pod("bare"), "CREATE", "ml", &uid, false)),
        Mix::Faulting => (
            "/validate",
            review(
                "Pod",
                probed_pod("f", "registry.example.com/m:1.0"),
                "CREATE",
                "faulty",
                &uid,
                false,
            ),
        ),
    }
}

/// Why an answer is wrong, if it is.
fn verdict_error(mix: Mix, request: &Value, response: &Value) -> Option<String> {
    let uid = &request["request"]["uid"];
    if &response["uid"] != uid {
        return Some(format!("uid {} for {uid}", response["uid"]));
    }
    let message = response["status"]["message"].as_str().unwrap_or("");
    let ok = match mix {
        Mix::Allowed => response["allowed"] == true && response.get("status").is_none(),
        Mix::Denied => {
            response["allowed"] == false
                && message.starts_with("pinned-images: ")
                && response["status"]["code"] == 403
        }
        Mix::Mutated => {
            let patched = common::try_apply_patch(response, &request["request"]["object"]);
            response["allowed"] == true
                && patched.is_ok_and(|p| p["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "250m")
        }
        Mix::Faulting => {
            response["allowed"] == false
                && response["status"]["code"] == 500
                && message.starts_with("policy trap failed: trapped: ")
        }
    };
    (!ok).then(|| format!("{mix:?}: {response}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: run with scripts/soak"]
async fn a_steady_mix_for_minutes_loses_nothing_and_keeps_its_memory() {
    let secs = env_u64("PORTCULLIS_SOAK_SECS", 180, 3600);
    let rate = env_u64("PORTCULLIS_SOAK_RATE", 200, 2000);
    let modules = [
        ("pinned_images.wasm", common::policy_module("pinned_images.wasm")),
        (
            "readiness_probe.wasm",
            common::policy_module("readiness_probe.wasm"),
        ),
        (
            "default_resources.wasm",
            common::policy_module("default_resources.wasm"),
        ),
        ("trap.wasm", common::wat_fixture("trap")),
    ];
    let server = ChildServer::start(CONFIG, &modules, &[]).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(server.h2().await);
    }

    let lost = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(AtomicU64::new(0));
    let first_errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let started = Instant::now();
    let total = secs * rate;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let mut next_sample = Instant::now();
    for n in 0..total {
        ticker.tick().await;
        if Instant::now() >= next_sample {
            samples.push((started.elapsed().as_secs_f64(), server.rss_bytes() / 1024));
            next_sample += Duration::from_secs(1);
        }
        let mix = MIX[(n % 4) as usize];
        let mut client = clients[(n % 4) as usize].stream().expect("h2 stream");
        let (lost, wrong, errors, latencies) = (
            lost.clone(),
            wrong.clone(),
            first_errors.clone(),
            latencies.clone(),
        );
        tasks.spawn(async move {
            let (path, body) = request(mix, n);
            let sent = Instant::now();
            let reply = tokio::time::timeout(
                Duration::from_secs(10),
                client.try_request(
                    hyper::Method::POST,
                    path,
                    serde_json::to_vec(&body).expect("json"),
                ),
            )
            .await;
            let took = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
            let problem = match reply {
                Err(_) => Some((true, "no answer within 10 s".to_owned())),
                Ok(Err(e)) => Some((true, e)),
                Ok(Ok(r)) if r.status != hyper::StatusCode::OK => {
                    Some((false, format!("status {}: {}", r.status, r.text())))
                }
                Ok(Ok(r)) => match serde_json::from_slice::<Value>(&r.body) {
                    Err(e) => Some((false, format!("malformed body ({e})"))),
                    Ok(v) => verdict_error(mix, &body, &v["response"]).map(|e| (false, e)),
                },
            };
            latencies.lock().expect("latencies").push(took);
            if let Some((is_lost, text)) = problem {
                if is_lost { &lost } else { &wrong }.fetch_add(1, Ordering::Relaxed);
                let mut errors = errors.lock().expect("errors");
                if errors.len() < 5 {
                    errors.push(text);
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    samples.push((started.elapsed().as_secs_f64(), server.rss_bytes() / 1024));
    let elapsed = started.elapsed();

    let mut l = latencies.lock().expect("latencies").clone();
    l.sort_unstable();
    let pct = |p: f64| l.get(((l.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0) as f64 / 1000.0;
    // Baseline: the median of the samples between 10 % and 20 % of the run (warm: the pool's
    // slots and the allocator's arenas are in use by then).
    let window: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= secs as f64 * 0.1 && *t <= secs as f64 * 0.2)
        .map(|(_, kib)| *kib)
        .collect();
    let mut sorted = window.clone();
    sorted.sort_unstable();
    let baseline = sorted
        .get(sorted.len() / 2)
        .copied()
        .unwrap_or_else(|| samples[0].1);
    let later: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t > secs as f64 * 0.2)
        .map(|(_, k)| *k)
        .collect();
    let (low, high) = (
        later.iter().min().copied().unwrap_or(baseline),
        later.iter().max().copied().unwrap_or(baseline),
    );
    println!(
        "soak: {total} reviews in {:.1} s ({:.0}/s asked {rate}/s); lost {}, wrong or malformed {}; \
         latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms; RSS baseline {} KiB, after warm-up {}..{} KiB ({:+.1} %)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        lost.load(Ordering::Relaxed),
        wrong.load(Ordering::Relaxed),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        baseline,
        low,
        high,
        (high as f64 / baseline as f64 - 1.0) * 100.0
    );
    let errors = first_errors.lock().expect("errors").clone();
    assert_eq!(lost.load(Ordering::Relaxed), 0, "lost reviews: {errors:?}");
    assert_eq!(
        wrong.load(Ordering::Relaxed),
        0,
        "wrong or malformed answers: {errors:?}"
    );
    assert!(
        high as f64 <= baseline as f64 * 1.10 && low as f64 >= baseline as f64 * 0.90,
        "RSS left ±10 % of {baseline} KiB: {low}..{high} KiB; samples {samples:?}"
    );
    // A clean stop after the soak.
    drop(clients);
    assert_eq!(server.terminate().await, Some(0));
}
