//! Hot reload of the serving certificate and of the policy set, on the real server over real
//! TLS, with the files laid out and swapped as kubelet lays out and swaps Secret and ConfigMap
//! volumes: rotation and reload under load with zero failed requests, reloads that must be
//! refused (the old certificate or set keeps serving), reviews in flight finishing on the set
//! they started with, and SIGHUP through the real binary.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::prometheus::scrape;
use common::{Alpn, ChildServer, Client, Knobs, SERVER_NAME, STEP, TestServer, Workspace};
use hyper::{Method, StatusCode};
use portcullis::app::TlsSource;
use portcullis::reload::{Generation, ReloadHandle, ReloadStatus};
use portcullis::server::memory::MemoryBudget;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::Value;

/// A directory written the way kubelet writes a Secret or ConfigMap volume
/// (kubernetes/kubernetes pkg/volume/util/atomic_writer.go, `AtomicWriter.Write`): the files
/// live in a hidden timestamped directory, `..data` links to it, each visible name links to
/// `..data/<name>`; an update writes a whole new timestamped directory, links `..data_tmp` to
/// it, renames `..data_tmp` over `..data` (the one atomic step), then removes the old
/// directory. The visible files are never written, so only a watch on the directory sees it.
struct Volume {
    dir: PathBuf,
    version: u32,
}

impl Volume {
    fn new(dir: PathBuf, files: &[(&str, &[u8])]) -> Self {
        std::fs::create_dir_all(&dir).expect("volume dir");
        let mut volume = Self { dir, version: 0 };
        volume.write(files);
        volume
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Projects `files` (the whole payload, as kubelet does) as the volume's new content.
    fn write(&mut self, files: &[(&str, &[u8])]) {
        let data = self.dir.join("..data");
        let old = std::fs::read_link(&data).ok();
        self.version += 1;
        let stamp = format!("..2026_11_30_12_00_00.{:09}", self.version);
        let stamped = self.dir.join(&stamp);
        std::fs::create_dir(&stamped).expect("timestamped dir");
        for (name, bytes) in files {
            std::fs::write(stamped.join(name), bytes).expect("write payload");
        }
        for (name, _) in files {
            let visible = self.dir.join(name);
            if std::fs::symlink_metadata(&visible).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), &visible).expect("visible link");
            }
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&stamp, &tmp).expect("..data_tmp");
        std::fs::rename(&tmp, &data).expect("rename ..data_tmp over ..data");
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).expect("remove the old timestamped dir");
        }
    }
}

/// What the load clients saw.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// The first few failures, for the assertion message.
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut failures = self.failures.lock().expect("failures");
        if failures.len() < 5 {
            failures.push(what);
        }
    }

    fn assert_no_failure(&self) {
        let failed = self.failed.load(Ordering::SeqCst);
        assert_eq!(
            failed,
            0,
            "{failed} failed requests of {}; first: {:?}",
            failed + self.ok.load(Ordering::SeqCst),
            self.failures.lock().expect("failures")
        );
    }
}

/// Which policy set an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Era {
    Old,
    New,
}

/// What a load client checks each answer with: the set it came from, or what was wrong with it.
type Judge = Arc<dyn Fn(&Value) -> Result<Era, String> + Send + Sync>;

/// How a load client connects.
#[derive(Clone, Copy, Debug)]
enum Connect {
    /// One connection for as long as it runs (reconnecting only after a failure).
    Kept(Alpn),
    /// A new connection, so a new handshake, for every review.
    Fresh(Alpn),
}

/// Sends `review` to `/validate` until `stop`, judging each answer with `judge`; transport
/// errors, non-200 answers and an answer from the old set after one from the new set (the swap
/// is atomic, and this client's reviews are sequential) are failures too.
async fn load(
    addr: std::net::SocketAddr,
    ca_pem: String,
    connect: Connect,
    review: Value,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    judge: Judge,
) {
    let body = serde_json::to_vec(&review).expect("review JSON");
    let alpn = match connect {
        Connect::Kept(a) | Connect::Fresh(a) => a,
    };
    let config = common::client_config(&ca_pem, alpn.offer(), rustls::DEFAULT_VERSIONS);
    let mut kept: Option<Client> = None;
    let mut era = Era::Old;
    while !stop.load(Ordering::SeqCst) {
        let client = match kept.take() {
            Some(c) => Ok(c),
            None => match common::tls_connect(addr, Arc::clone(&config), SERVER_NAME).await {
                Ok(stream) => Client::handshake(stream, alpn).await,
                Err(e) => Err(format!("handshake: {e}")),
            },
        };
        let mut client = match client {
            Ok(c) => c,
            Err(e) => {
                tally.fail(format!("{connect:?}: {e}"));
                continue;
            }
        };
        match client.try_request(Method::POST, "/validate", body.clone()).await {
            Ok(reply) if reply.status == StatusCode::OK => match judge(&reply.json()["response"]) {
                Ok(now) if now < era => {
                    tally.fail(format!("{connect:?}: the old set answered after the new one"))
                }
                Ok(now) => {
                    era = now;
                    tally.ok.fetch_add(1, Ordering::SeqCst);
                    if matches!(connect, Connect::Kept(_)) {
                        kept = Some(client);
                    }
                }
                Err(e) => tally.fail(format!("{connect:?}: {e}")),
            },
            Ok(reply) => tally.fail(format!("{connect:?}: {} {}", reply.status, reply.text())),
            Err(e) => tally.fail(format!("{connect:?}: {e}")),
        }
    }
}

/// Load clients of every kind: kept and fresh connections, HTTP/1.1 and HTTP/2.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, ca_pem: &str, review: &Value, judge: Judge) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let tasks = [
            Connect::Kept(Alpn::Http1),
            Connect::Kept(Alpn::H2),
            Connect::Fresh(Alpn::Http1),
            Connect::Fresh(Alpn::H2),
        ]
        .into_iter()
        .map(|connect| {
            tokio::spawn(load(
                addr,
                ca_pem.to_owned(),
                connect,
                review.clone(),
                Arc::clone(&stop),
                Arc::clone(&tally),
                Arc::clone(&judge),
            ))
        })
        .collect();
        Self { stop, tally, tasks }
    }

    /// Waits (bounded) until `more` further reviews have been answered.
    async fn answered(&self, more: u64) {
        let target = self.tally.ok.load(Ordering::SeqCst) + more;
        until(&format!("{more} more answered reviews"), || {
            self.tally.ok.load(Ordering::SeqCst) >= target || self.tally.failed.load(Ordering::SeqCst) > 0
        })
        .await;
    }

    async fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            tokio::time::timeout(STEP, task)
                .await
                .expect("load client stopped in time")
                .expect("load client task");
        }
        self.tally
    }
}

/// Polls `condition` until it holds, bounded by [`STEP`]: for counters no event announces.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + STEP;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (bounded by [`STEP`]) for the reload status to satisfy `condition`, and returns it.
async fn status_until(
    handle: &ReloadHandle,
    what: &str,
    condition: impl Fn(&ReloadStatus) -> bool,
) -> ReloadStatus {
    let mut status = handle.status();
    match tokio::time::timeout(STEP, status.wait_for(|s| condition(s))).await {
        Ok(seen) => seen.expect("reloads running").clone(),
        Err(_) => panic!(
            "timed out waiting for {what}; status: {:?}",
            *handle.status().borrow()
        ),
    }
}

/// The leaf certificate a new handshake gets, trusting `ca_pem`.
async fn served_leaf(addr: std::net::SocketAddr, ca_pem: &str) -> Vec<u8> {
    let config = common::client_config(ca_pem, Alpn::H2.offer(), rustls::DEFAULT_VERSIONS);
    let stream = common::tls_connect(addr, config, SERVER_NAME)
        .await
        .expect("handshake");
    let (_, connection) = stream.get_ref();
    connection.peer_certificates().expect("server certificates")[0].to_vec()
}

fn leaf_of(cert_pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM")
        .to_vec()
}

fn new_bundle() -> portcullis::certs::CertBundle {
    portcullis::certs::generate(&[SERVER_NAME.to_owned(), "127.0.0.1".to_owned()]).expect("certificates")
}

fn allowed(response: &Value) -> Result<Era, String> {
    match response["allowed"] {
        Value::Bool(true) => Ok(Era::Old),
        _ => Err(format!("not allowed: {response}")),
    }
}

fn pod_review(uid: &str) -> Value {
    common::review("Pod", common::pod("web"), "CREATE", "default", uid, false)
}

const ALLOW_CONFIG: &str = "policies:\n  - {name: gate, module: allow_all.wasm}\n";

/// A server allowing everything, its certificate and key read from a Secret volume.
struct SecretServer {
    server: TestServer,
    volume: Volume,
    /// The pair it serves first (the workspace's): certificate PEM, key PEM.
    first: (Vec<u8>, Vec<u8>),
    /// The CA that signed it.
    ca: String,
}

impl SecretServer {
    async fn start() -> Self {
        let ws = Workspace::new(
            Some(ALLOW_CONFIG),
            &[("allow_all.wasm", common::wat_fixture("allow_all"))],
        );
        let first = (
            std::fs::read(&ws.cert).expect("cert"),
            std::fs::read(&ws.key).expect("key"),
        );
        let volume = Volume::new(
            ws.dir.path().join("secret"),
            &[("tls.crt", &first.0), ("tls.key", &first.1)],
        );
        let mut options = ws.options(Knobs::default());
        options.tls = TlsSource::Files {
            cert: volume.path("tls.crt"),
            key: volume.path("tls.key"),
        };
        let ca = ws.ca_pem.clone();
        let server = TestServer::start_from(ws, options).await;
        Self {
            server,
            volume,
            first,
            ca,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_rotation_under_load_serves_the_new_pair_without_a_failure() {
    let SecretServer {
        server,
        mut volume,
        ca: old_ca,
        ..
    } = SecretServer::start().await;
    let rotated = new_bundle();
    let both_cas = format!("{old_ca}{}", rotated.ca_pem);
    let old_leaf = served_leaf(server.addr, &old_ca).await;

    let load = Load::start(server.addr, &both_cas, &pod_review("rotation"), Arc::new(allowed));
    load.answered(40).await;
    volume.write(&[
        ("tls.crt", rotated.cert_pem.as_bytes()),
        ("tls.key", rotated.key_pem.as_bytes()),
    ]);
    let status = status_until(&server.reload, "the rotated certificate", |s| {
        s.certificate.generation == Generation(2) || s.certificate.failures > 0
    })
    .await;
    assert_eq!(
        status.certificate.failures, 0,
        "{:?}",
        status.certificate.last_failure
    );
    assert_eq!(status.certificate.chain[0].to_vec(), leaf_of(&rotated.cert_pem));
    // New handshakes (the fresh clients' among them) get the new pair from now on.
    load.answered(40).await;
    let tally = load.stop().await;
    tally.assert_no_failure();
    let new_leaf = served_leaf(server.addr, &both_cas).await;
    assert_eq!(
        new_leaf,
        leaf_of(&rotated.cert_pem),
        "a new handshake sees the rotated certificate"
    );
    assert_ne!(new_leaf, old_leaf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_pair_is_refused_and_the_old_one_keeps_serving() {
    let SecretServer {
        server,
        mut volume,
        first,
        ca,
    } = SecretServer::start().await;
    let serving = served_leaf(server.addr, &ca).await;
    let other = new_bundle();
    let key_path = volume.path("tls.key").display().to_string();
    let cert_path = volume.path("tls.crt").display().to_string();

    // A rotation seen half done: the old certificate with another pair's key.
    volume.write(&[("tls.crt", &first.0), ("tls.key", other.key_pem.as_bytes())]);
    let status = status_until(&server.reload, "a refused pair", |s| s.certificate.failures == 1).await;
    let error = status.certificate.last_failure.expect("the failure").to_string();
    assert!(
        error.starts_with(&format!(
            "new certificate pair refused, the old one keeps serving: cannot read private key {key_path}: does not match the certificate"
        )),
        "{error}"
    );
    assert_eq!(status.certificate.generation, Generation(1));
    assert_eq!(served_leaf(server.addr, &ca).await, serving);

    // A truncated certificate.
    volume.write(&[("tls.crt", &first.0[..first.0.len() / 2]), ("tls.key", &first.1)]);
    let status = status_until(&server.reload, "a second refused pair", |s| {
        s.certificate.failures == 2
    })
    .await;
    let error = status.certificate.last_failure.expect("the failure").to_string();
    assert!(
        error.starts_with(&format!(
            "new certificate pair refused, the old one keeps serving: cannot read certificate chain {cert_path}: "
        )),
        "{error}"
    );
    assert_eq!(served_leaf(server.addr, &ca).await, serving);
    assert_eq!(
        server.review("/validate", &pod_review("still")).await["allowed"],
        true
    );

    // The next good pair is taken.
    volume.write(&[
        ("tls.crt", other.cert_pem.as_bytes()),
        ("tls.key", other.key_pem.as_bytes()),
    ]);
    let status = status_until(&server.reload, "the good pair", |s| {
        s.certificate.generation == Generation(2)
    })
    .await;
    assert_eq!(status.certificate.failures, 2);
    assert_eq!(
        served_leaf(server.addr, &other.ca_pem).await,
        leaf_of(&other.cert_pem)
    );
    // The metrics count both refusals and show the new pair's expiry, read from its leaf.
    let not_after = x509_parser::parse_x509_certificate(&leaf_of(&other.cert_pem))
        .expect("the new leaf parses")
        .1
        .validity()
        .not_after
        .timestamp() as f64;
    let deadline = Instant::now() + STEP;
    loop {
        let metrics = scrape(&server).await;
        let failures = metrics.value("portcullis_tls_certificate_reload_failures_total", &[]);
        let expiry = metrics.value("portcullis_tls_certificate_expiry_timestamp_seconds", &[]);
        if failures == 2.0 && expiry == not_after {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never caught up: {failures} failures, expiry {expiry} (want {not_after})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `pinned-images` allowing the registry the test pods use, or not.
fn pinned_config(registry: &str) -> String {
    format!(
        "policies:\n  - name: pinned\n    module: pinned_images.wasm\n    settings:\n      allowed_registries: [\"{registry}\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn policy_reload_under_load_switches_decisions_without_a_failure() {
    let ws = Workspace::new(None, &[]);
    let module = common::policy_module("pinned_images.wasm");
    let allowing = pinned_config("registry.example.com");
    let mut volume = Volume::new(
        ws.dir.path().join("config"),
        &[
            ("config.yaml", allowing.as_bytes()),
            ("pinned_images.wasm", &module),
        ],
    );
    let mut options = ws.options(Knobs::default());
    options.config = Some(volume.path("config.yaml"));
    let server = TestServer::start_from(ws, options).await;
    let review = pod_review("reload");
    assert_eq!(server.review("/validate", &review).await["allowed"], true);

    // Each client's answers switch once, from allowed to denied, never back.
    let judge = |response: &Value| -> Result<Era, String> {
        match response["allowed"] {
            Value::Bool(true) => Ok(Era::Old),
            Value::Bool(false)
                if response["status"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("registry.example.com")) =>
            {
                Ok(Era::New)
            }
            _ => Err(format!("neither the old nor the new decision: {response}")),
        }
    };
    let load = Load::start(server.addr, server.ca_pem(), &review, Arc::new(judge));
    load.answered(40).await;
    let changed = Instant::now();
    volume.write(&[
        ("config.yaml", pinned_config("ghcr.io").as_bytes()),
        ("pinned_images.wasm", &module),
    ]);
    // Poll the decision until it is the new policy's.
    let mut client = server.h2().await;
    loop {
        let response = client.review("/validate", &review).await;
        if response["allowed"] == false {
            let message = response["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(message.contains("registry.example.com"), "{message}");
            break;
        }
        assert!(
            changed.elapsed() < STEP,
            "the decision did not switch within {STEP:?}"
        );
    }
    let switched = changed.elapsed();
    let status = server.reload.status().borrow().clone();
    assert_eq!(status.policies.generation, Generation(2));
    assert_eq!(status.policies.failures, 0);
    load.answered(40).await;
    let tally = load.stop().await;
    tally.assert_no_failure();
    // After the switch every answer is the new one.
    for _ in 0..3 {
        assert_eq!(client.review("/validate", &review).await["allowed"], false);
    }
    eprintln!(
        "decision switched {} ms after the ..data swap; {} reviews answered under load",
        switched.as_millis(),
        tally.ok.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_in_flight_finishes_on_the_set_it_started_with() {
    // The fixture spins for 300 ms; this one for 3 s, longer than any reload takes.
    let slow = std::fs::read_to_string(common::fixture_path("slow_accept.wat")).expect("fixture");
    assert!(
        slow.contains("(i64.const 300000000)"),
        "the fixture's spin changed"
    );
    let slow = common::wat(&slow.replace("(i64.const 300000000)", "(i64.const 3000000000)"));
    let deny = common::wat_fixture("deny_all");
    let first = "policies:\n  - {name: gate, module: gate.wasm, timeout_ms: 10000}\n";
    let server = TestServer::start(first, &[("gate.wasm", slow)]).await;
    let mut client = server.h2().await;
    let mut in_flight = client.stream().expect("another stream");
    let review = pod_review("in-flight");
    let pending = tokio::spawn(async move { in_flight.review("/validate", &review).await });
    until("the slow review to be admitted", || {
        server.load.requests.current() == 1
    })
    .await;

    std::fs::write(server.workspace.dir.path().join("gate.wasm"), deny).expect("write the new module");
    // The watch may notice the write first; either way a new set is installed.
    server.reload.reload_policies();
    status_until(&server.reload, "the new set", |s| {
        s.policies.generation >= Generation(2)
    })
    .await;
    assert!(
        !pending.is_finished(),
        "the slow review ended before the swap: the test proves nothing"
    );
    let denied = client.review("/validate", &pod_review("after")).await;
    assert_eq!(denied["allowed"], false, "{denied}");
    let old = tokio::time::timeout(STEP, pending)
        .await
        .expect("in time")
        .expect("review");
    assert_eq!(old["allowed"], true, "the review in flight kept its set: {old}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_policy_reloads_keep_the_old_set_serving() {
    let ws = Workspace::new(None, &[]);
    let pinned = common::policy_module("pinned_images.wasm");
    let good = pinned_config("registry.example.com");
    let mut volume = Volume::new(
        ws.dir.path().join("config"),
        &[("config.yaml", good.as_bytes()), ("pinned_images.wasm", &pinned)],
    );
    let config_path = volume.path("config.yaml").display().to_string();
    let module_path = volume.path("pinned_images.wasm").display().to_string();
    let mut options = ws.options(Knobs::default());
    options.config = Some(volume.path("config.yaml"));
    // Room for 8 evaluations of 64 MiB, not of 1024 MiB.
    options.memory_budget = MemoryBudget::Mib(4096);
    let server = TestServer::start_from(ws, options).await;
    let review = pod_review("refused");

    // What is wrong, the volume's new files, and how the refusal starts.
    type Case<'a> = (&'a str, Vec<(&'a str, Vec<u8>)>, String);
    let cases: [Case; 4] = [
        (
            "invalid YAML",
            vec![
                ("config.yaml", b"policies: [\n".to_vec()),
                ("pinned_images.wasm", pinned.clone()),
            ],
            format!("new policy set refused, the old one keeps serving: {config_path}: "),
        ),
        (
            "a broken module",
            vec![
                ("config.yaml", good.clone().into_bytes()),
                ("pinned_images.wasm", b"\0asm broken".to_vec()),
            ],
            format!(
                "new policy set refused, the old one keeps serving: {config_path}: policy `pinned`: module {module_path}: not a valid Wasm module: "
            ),
        ),
        (
            "settings the policy rejects",
            vec![
                ("config.yaml", pinned_config("https://ghcr.io").into_bytes()),
                ("pinned_images.wasm", pinned.clone()),
            ],
            format!(
                "new policy set refused, the old one keeps serving: {config_path}: policy `pinned`: settings rejected by the policy: allowed_registries: \"https://ghcr.io\" is not a registry host[:port]"
            ),
        ),
        (
            "more memory than the budget",
            vec![
                (
                    "config.yaml",
                    format!("{good}    memory_mib: 1024\n").into_bytes(),
                ),
                ("pinned_images.wasm", pinned.clone()),
            ],
            "new policy set refused, the old one keeps serving: the configuration may hold ".to_owned(),
        ),
    ];
    for (failures, (case, files, expected)) in (1..).zip(cases) {
        let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        volume.write(&files);
        let status = status_until(&server.reload, case, |s| s.policies.failures == failures).await;
        let error = status.policies.last_failure.expect("the failure").to_string();
        assert!(error.starts_with(&expected), "{case}: {error}");
        assert_eq!(status.policies.generation, Generation(1), "{case}");
        assert_eq!(
            server.review("/validate", &review).await["allowed"],
            true,
            "{case}: the old set serves"
        );
    }
    let error = server
        .reload
        .status()
        .borrow()
        .policies
        .last_failure
        .as_ref()
        .map(|e| e.to_string());
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("more than the memory budget of 4096 MiB")),
        "{error:?}"
    );
    // A good configuration after the refused ones is installed.
    volume.write(&[
        ("config.yaml", pinned_config("ghcr.io").as_bytes()),
        ("pinned_images.wasm", &pinned),
    ]);
    let status = status_until(&server.reload, "the good set", |s| {
        s.policies.generation == Generation(2)
    })
    .await;
    assert_eq!(status.policies.failures, 4);
    assert_eq!(server.review("/validate", &review).await["allowed"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_applies_to_reloaded_sets() {
    let deny = common::wat_fixture("deny_all");
    let config = "policies:\n  - {name: gate, module: allow_all.wasm}\n";
    let knobs = Knobs {
        dry_run: true,
        ..Knobs::default()
    };
    let server = TestServer::start_with(
        Some(config),
        &[
            ("allow_all.wasm", common::wat_fixture("allow_all")),
            ("deny_all.wasm", deny),
        ],
        knobs,
    )
    .await;
    let path = server.workspace.config.clone().expect("config");
    std::fs::write(&path, "policies:\n  - {name: gate, module: deny_all.wasm}\n").expect("write config");
    status_until(&server.reload, "the new set", |s| {
        s.policies.generation == Generation(2)
    })
    .await;
    let response = server.review("/validate", &pod_review("dry")).await;
    assert_eq!(response["allowed"], true, "monitor mode: {response}");
    let warnings = response["warnings"].to_string();
    assert!(warnings.contains("deny-all refuses everything"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_set_reloads_on_request_only() {
    let server = TestServer::builtin().await;
    let before = server.reload.status().borrow().clone();
    assert_eq!(before.policies.generation, Generation(1));
    server.reload.reload_policies();
    let status = status_until(&server.reload, "the rebuilt set", |s| {
        s.policies.generation == Generation(2)
    })
    .await;
    let installed = status.policies.last_installed.expect("installed");
    assert_eq!(installed.origin, "builtin:policies/default.yaml");
    assert_eq!(status.policies.failures, 0);
    // The metrics follow: the second set is generation 2 there too (bounded wait, the counter
    // task runs beside the reloader).
    let deadline = Instant::now() + STEP;
    while scrape(&server)
        .await
        .value("portcullis_policy_set_generation", &[])
        != 2.0
    {
        assert!(Instant::now() < deadline, "the generation gauge never reached 2");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let metrics = scrape(&server).await;
    assert_eq!(metrics.value("portcullis_policy_reload_failures_total", &[]), 0.0);
    // Unchanged modules are taken from the serving set, not compiled again: compiling these
    // eight takes seconds (3.1 s from start to listening), validating their settings 20-60 ms.
    assert!(
        installed.took < Duration::from_millis(1500),
        "the rebuild compiled again: {:?}",
        installed.took
    );
    eprintln!(
        "built-in set ({} policies) rebuilt in {} ms",
        installed.policies,
        installed.took.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_binary_and_a_refused_reload_is_logged() {
    let mut server = ChildServer::start(
        ALLOW_CONFIG,
        &[("allow_all.wasm", common::wat_fixture("allow_all"))],
        &[],
    )
    .await;
    // SIGHUP's default action ends a process: this one reloads instead, unchanged files or not.
    server.signal("HUP");
    let event = server.wait_log("policy set reloaded").await;
    assert_eq!(event["trigger"], "Request", "{event}");
    assert_eq!(event["policies"], 1, "{event}");
    assert!(server.running(), "the process survived SIGHUP");

    let config = server.workspace.config.clone().expect("config");
    std::fs::write(&config, "policies: [\n").expect("write config");
    let event = server.wait_log("policy reload failed").await;
    let error = event["error"].as_str().expect("an error field").to_owned();
    assert!(
        error.starts_with(&format!(
            "new policy set refused, the old one keeps serving: {}: ",
            config.display()
        )),
        "{event}"
    );
    assert_eq!(event["level"], "ERROR", "{event}");
    let response = server.h2().await.review("/validate", &pod_review("hup")).await;
    assert_eq!(response["allowed"], true, "the old set serves: {response}");
    assert_eq!(server.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_of_embedded_modules_reloads_when_edited() {
    // As deploy/base/policies.yaml: a ConfigMap naming modules the binary embeds.
    let config = |mode: &str| {
        format!(
            "policies:\n  - {{name: pinned, module: \"builtin:wasm/pinned_images.wasm\", mode: {mode}}}\n"
        )
    };
    let ws = Workspace::new(None, &[]);
    let mut volume = Volume::new(
        ws.dir.path().join("config"),
        &[("policies.yaml", config("enforce").as_bytes())],
    );
    let mut options = ws.options(Knobs::default());
    options.config = Some(volume.path("policies.yaml"));
    let server = TestServer::start_from(ws, options).await;
    let mut review = pod_review("embedded");
    review["request"]["object"]["spec"]["containers"][0]["image"] =
        "registry.example.com/ml/model-server:latest".into();
    assert_eq!(server.review("/validate", &review).await["allowed"], false);
    volume.write(&[("policies.yaml", config("monitor").as_bytes())]);
    let status = status_until(&server.reload, "the monitor set", |s| {
        s.policies.generation == Generation(2) || s.policies.failures > 0
    })
    .await;
    assert_eq!(status.policies.failures, 0, "{:?}", status.policies.last_failure);
    let response = server.review("/validate", &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(
        response["warnings"].to_string().contains("[monitor] pinned"),
        "{response}"
    );
}
