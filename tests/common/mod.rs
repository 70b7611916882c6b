//! The integration-test harness: the real server, started through `app::prepare` and `app::run`
//! on a listener bound to 127.0.0.1:0, and HTTPS clients that trust only the CA generated for it.
//!
//! Each [`TestServer`] runs on a thread and runtime of its own, so one server can be shared by
//! the tests of a file (each `#[tokio::test]` has its own runtime) and outlives none of them by
//! accident: dropping it fires the shutdown future. Clients speak exactly one HTTP version over a
//! `tokio_rustls` stream whose ALPN offer the test chooses, so every test knows what it speaks.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

pub mod prometheus;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::app::{self, ServeOptions, TlsSource};
use portcullis::engine::EngineOptions;
use portcullis::reload::ReloadHandle;
use portcullis::server::load::Load;
use portcullis::server::memory::MemoryBudget;
use portcullis::server::{BodyLimit, HttpLimits, Readiness, ShutdownTiming};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The host name the generated serving certificate is issued for (plus 127.0.0.1).
pub const SERVER_NAME: &str = "localhost";

/// How long any single step of the harness may take before the test fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(20);

/// `tests/fixtures/<name>`.
pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `policies/wasm/<name>`: a real policy module.
pub fn policy_module(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies/wasm")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Compiles WAT text to a Wasm binary.
pub fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap_or_else(|e| panic!("invalid WAT: {e}"))
}

/// Compiles `tests/fixtures/<name>.wat`.
pub fn wat_fixture(name: &str) -> Vec<u8> {
    let path = fixture_path(&format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reads `tests/fixtures/<name>.review.json`, an AdmissionReview as the kube-apiserver sends it.
pub fn review_fixture(name: &str) -> Value {
    let path = fixture_path(&format!("{name}.review.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An AdmissionReview v1 for `object`, shaped like the kube-apiserver's: GVK and GVR from the
/// object's apiVersion and `kind`, userInfo, `oldObject: null`, `dryRun`, and options.
pub fn review(
    kind: &str,
    object: Value,
    operation: &str,
    namespace: &str,
    uid: &str,
    dry_run: bool,
) -> Value {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1").to_owned();
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": portcullis::review::synthetic::resource_name(kind)});
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let options_kind = match operation {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        "DELETE" => "DeleteOptions",
        _ => "ConnectOptions",
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk, "requestKind": gvk,
            "resource": gvr, "requestResource": gvr,
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": options_kind},
        }
    })
}

/// `tests/fixtures/apiserver/<name>`: a review recorded from kube-apiserver v1.28, byte for byte
/// (see the README there).
pub fn recorded(name: &str) -> Value {
    let path = fixture_path("apiserver").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Applies `change` to both `object` and `oldObject` of `review`: the state an object was in
/// before the UPDATE (and before Portcullis was installed), kept by the UPDATE.
pub fn before_and_after(mut review: Value, change: impl Fn(&mut Value)) -> Value {
    for key in ["object", "oldObject"] {
        let slot = &mut review["request"][key];
        assert!(slot.is_object(), "the review has no {key} to change");
        change(slot);
    }
    review
}

/// An UPDATE review of `object` from `old_object`, shaped like the kube-apiserver's (built on
/// [`review`]: `oldObject`, `UpdateOptions`, and for a subresource `subResource` and
/// `requestSubResource`).
pub fn update_review(
    kind: &str,
    object: Value,
    old_object: Value,
    namespace: &str,
    uid: &str,
    subresource: Option<&str>,
) -> Value {
    let mut r = review(kind, object, "UPDATE", namespace, uid, false);
    r["request"]["oldObject"] = old_object;
    if let Some(sub) = subresource {
        r["request"]["subResource"] = json!(sub);
        r["request"]["requestSubResource"] = json!(sub);
    }
    r
}

/// A minimal Pod named `name` running a pinned image.
pub fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "main", "image": "registry.example.com/ml/model-server:2.0.1"}]}
    })
}

/// A minimal Deployment named `name`.
pub fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "registry.example.com/ml/model-server:2.0.1"}]}
            }
        }
    })
}

/// Applies a response's base64 JSON Patch to `object` and returns the result. Panics when the
/// response carries no patch or a malformed one.
pub fn apply_patch(response: &Value, object: &Value) -> Value {
    try_apply_patch(response, object).unwrap_or_else(|e| panic!("{e}"))
}

/// [`apply_patch`], saying what is wrong instead of panicking.
pub fn try_apply_patch(response: &Value, object: &Value) -> Result<Value, String> {
    if response["patchType"] != "JSONPatch" {
        return Err(format!("patchType is not JSONPatch: {response}"));
    }
    let encoded = response["patch"]
        .as_str()
        .ok_or_else(|| format!("no patch in {response}"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("patch is not base64: {e}"))?;
    let patch: json_patch::Patch =
        serde_json::from_slice(&bytes).map_err(|e| format!("patch is not a JSON Patch: {e}"))?;
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch).map_err(|e| format!("patch does not apply: {e}"))?;
    Ok(patched)
}

/// Knobs of [`TestServer::start_with`] beyond the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Knobs {
    /// `serve --dry-run`.
    pub dry_run: bool,
    /// `serve --max-body-bytes`.
    pub body_limit: usize,
    /// `serve --drain-timeout-secs`.
    pub drain: Duration,
    /// The other HTTP limits (`body_limit` above wins over `http.body`).
    pub http: HttpLimits,
    /// `serve --shutdown-delay-secs`; zero unless a test is about the delay.
    pub shutdown_delay: Duration,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            dry_run: false,
            body_limit: BodyLimit::DEFAULT.0,
            drain: Duration::from_secs(10),
            http: HttpLimits::default(),
            shutdown_delay: Duration::ZERO,
        }
    }
}

/// A directory holding a configuration, its modules and TLS material for one server.
pub struct Workspace {
    /// Removed on drop.
    pub dir: tempfile::TempDir,
    /// `config.yaml`, when a configuration was given.
    pub config: Option<PathBuf>,
    /// `tls.crt`.
    pub cert: PathBuf,
    /// `tls.key`.
    pub key: PathBuf,
    /// The CA that signed the serving certificate, PEM.
    pub ca_pem: String,
}

impl Workspace {
    /// Writes `modules` (name → bytes) and `config_yaml` (when given) into a new temp dir, and
    /// generates a CA and serving certificate for localhost and 127.0.0.1.
    pub fn new(config_yaml: Option<&str>, modules: &[(&str, Vec<u8>)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, bytes) in modules {
            std::fs::write(dir.path().join(name), bytes).expect("write module");
        }
        let config = config_yaml.map(|text| {
            let path = dir.path().join("config.yaml");
            std::fs::write(&path, text).expect("write config");
            path
        });
        let bundle = portcullis::certs::generate(&[SERVER_NAME.to_owned(), "127.0.0.1".to_owned()])
            .expect("generate certificates");
        let paths = bundle
            .write(&dir.path().join("certs"))
            .expect("write certificates");
        Self {
            config,
            cert: paths.cert,
            key: paths.key,
            ca_pem: bundle.ca_pem,
            dir,
        }
    }

    /// The options `serve` would build from these files and `knobs`.
    pub fn options(&self, knobs: Knobs) -> ServeOptions {
        ServeOptions {
            config: self.config.clone(),
            tls: TlsSource::Files {
                cert: self.cert.clone(),
                key: self.key.clone(),
            },
            dry_run: knobs.dry_run,
            http: HttpLimits {
                body: BodyLimit(knobs.body_limit),
                ..knobs.http
            },
            shutdown: ShutdownTiming {
                delay: knobs.shutdown_delay,
                drain: knobs.drain,
            },
            memory_budget: MemoryBudget::Unchecked,
            engine: EngineOptions {
                max_concurrent_instances: 8,
                cache: artifact_cache(),
            },
            client_ca: None,
        }
    }
}

/// Runs `prepare` for a configuration that must be refused and returns the error text and the
/// workspace (whose paths the message should name).
pub fn prepare_error(config_yaml: &str, modules: &[(&str, Vec<u8>)]) -> (String, Workspace) {
    let ws = Workspace::new(Some(config_yaml), modules);
    match app::prepare(&ws.options(Knobs::default())) {
        Ok(_) => panic!("prepare accepted the configuration:\n{config_yaml}"),
        Err(e) => (e.to_string(), ws),
    }
}

/// The real server, serving HTTPS on 127.0.0.1 on a thread of its own.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its metrics listener (plain HTTP) listens.
    pub metrics_addr: SocketAddr,
    /// The certificate its clients present, when it requires one (`--client-ca`).
    pub identity: Option<ClientIdentity>,
    /// What `/readyz` reports, read directly.
    pub readiness: Readiness,
    /// What it holds now and the most it has held: connections, requests, body bytes.
    pub load: Arc<Load>,
    /// Its files; kept alive as long as the server.
    pub workspace: Workspace,
    /// Asks for policy reloads and reports how reloads go.
    pub reload: ReloadHandle,
    shutdown: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Receiver<()>>,
}

impl TestServer {
    /// Starts a server for `config_yaml` (module paths relative to the directory `modules` are
    /// written to) and waits until `/readyz` answers 200.
    pub async fn start(config_yaml: &str, modules: &[(&str, Vec<u8>)]) -> Self {
        Self::start_with(Some(config_yaml), modules, Knobs::default()).await
    }

    /// Starts a server with the built-in default policy set.
    pub async fn builtin() -> Self {
        Self::start_with(None, &[], Knobs::default()).await
    }

    /// Starts a server with `knobs`; `config_yaml: None` means the built-in set.
    pub async fn start_with(config_yaml: Option<&str>, modules: &[(&str, Vec<u8>)], knobs: Knobs) -> Self {
        Self::start_requiring(config_yaml, modules, knobs, None).await
    }

    /// [`TestServer::start_with`], requiring (with `Some`) a client certificate from the CA of
    /// `identity`, which the harness's own clients then present.
    pub async fn start_requiring(
        config_yaml: Option<&str>,
        modules: &[(&str, Vec<u8>)],
        knobs: Knobs,
        identity: Option<ClientIdentity>,
    ) -> Self {
        Self::start_in(Workspace::new(config_yaml, modules), knobs, identity).await
    }

    /// Starts a server on the files of `workspace` (which a test may have changed, such as its
    /// certificate), as [`TestServer::start_requiring`] does.
    pub async fn start_in(workspace: Workspace, knobs: Knobs, identity: Option<ClientIdentity>) -> Self {
        let mut options = workspace.options(knobs);
        if let Some(identity) = &identity {
            let path = workspace.dir.path().join("client-ca.crt");
            std::fs::write(&path, &identity.ca_pem).expect("write the client CA");
            options.client_ca = Some(path);
        }
        Self::launch(workspace, options, identity).await
    }

    /// Starts a server with `options`, whose files `workspace` holds (or names).
    pub async fn start_from(workspace: Workspace, options: ServeOptions) -> Self {
        Self::launch(workspace, options, None).await
    }

    /// Starts a server with `options`; its clients present `identity` when given.
    async fn launch(workspace: Workspace, options: ServeOptions, identity: Option<ClientIdentity>) -> Self {
        // Compiling policies is CPU-heavy and blocking: keep it off the test's async workers.
        let prepared = tokio::task::spawn_blocking(move || app::prepare(&options))
            .await
            .expect("prepare task")
            .unwrap_or_else(|e| panic!("prepare failed: {e}"));
        let readiness = prepared.state.readiness.clone();
        let load = Arc::clone(&prepared.state.load);
        let reload = prepared.reload.handle();
        let (addr_tx, addr_rx) = oneshot::channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let (stopped_tx, stopped_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("portcullis-test-server".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("server runtime");
                runtime.block_on(async move {
                    let webhook = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind 127.0.0.1:0");
                    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind 127.0.0.1:0 for metrics");
                    let addrs = (
                        webhook.local_addr().expect("local addr"),
                        metrics.local_addr().expect("metrics local addr"),
                    );
                    let _ = addr_tx.send(addrs);
                    let listeners = app::Listeners {
                        webhook,
                        metrics: Some(metrics),
                    };
                    let shutdown = async {
                        let _ = shutdown_rx.await;
                    };
                    app::serve(prepared, listeners, shutdown, std::future::pending()).await;
                });
                let _ = stopped_tx.send(());
            })
            .expect("spawn server thread");
        let (addr, metrics_addr) = tokio::time::timeout(STEP, addr_rx)
            .await
            .expect("server bound in time")
            .expect("server thread reported its address");
        let server = Self {
            addr,
            metrics_addr,
            identity,
            readiness,
            load,
            workspace,
            reload,
            shutdown: Some(shutdown_tx),
            stopped: Some(stopped_rx),
        };
        server.wait_ready().await;
        server
    }

    /// Polls `/readyz` until it answers 200: quick retries with a short, growing backoff,
    /// bounded by [`STEP`].
    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + STEP;
        let mut backoff = Duration::from_millis(1);
        loop {
            if let Ok(mut client) = self.try_client(Alpn::Http1).await
                && let Ok(reply) = client.try_request(Method::GET, "/readyz", Vec::new()).await
                && reply.status == StatusCode::OK
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server at {} never became ready",
                self.addr
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
    }

    /// The CA clients trust.
    pub fn ca_pem(&self) -> &str {
        &self.workspace.ca_pem
    }

    /// An HTTP/1.1 client (ALPN offers only `http/1.1`).
    pub async fn h1(&self) -> Client {
        let client = self.try_client(Alpn::Http1).await.expect("HTTP/1.1 connection");
        assert_eq!(client.alpn.as_deref(), Some(&b"http/1.1"[..]), "negotiated ALPN");
        client
    }

    /// An HTTP/2 client (ALPN offers only `h2`).
    pub async fn h2(&self) -> Client {
        let client = self.try_client(Alpn::H2).await.expect("HTTP/2 connection");
        assert_eq!(client.alpn.as_deref(), Some(&b"h2"[..]), "negotiated ALPN");
        client
    }

    /// A client speaking `alpn`.
    pub async fn client(&self, alpn: Alpn) -> Client {
        match alpn {
            Alpn::Http1 => self.h1().await,
            Alpn::H2 => self.h2().await,
        }
    }

    async fn try_client(&self, alpn: Alpn) -> Result<Client, String> {
        let config = client_config_as(
            self.ca_pem(),
            alpn.offer(),
            rustls::DEFAULT_VERSIONS,
            self.identity.as_ref(),
        );
        let stream = tls_connect(self.addr, config, SERVER_NAME)
            .await
            .map_err(|e| e.to_string())?;
        Client::handshake(stream, alpn).await
    }

    /// POSTs `body` to `path` on a fresh HTTP/1.1 connection.
    pub async fn post(&self, path: &str, body: impl Into<Vec<u8>>) -> Reply {
        self.h1().await.post(path, body).await
    }

    /// POSTs a review and returns `response` of the answer, after checking the envelope.
    pub async fn review(&self, path: &str, review: &Value) -> Value {
        self.h1().await.review(path, review).await
    }

    /// Fires the shutdown future and waits (bounded) until `run` has returned.
    pub async fn shutdown(mut self) {
        self.fire_shutdown();
        let stopped = self.stopped.take().expect("not stopped yet");
        tokio::time::timeout(STEP, stopped)
            .await
            .expect("server drained in time")
            .expect("server thread ended cleanly");
    }

    /// Fires the shutdown future without waiting.
    pub fn fire_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits (bounded) until `run` has returned.
    pub async fn stopped(&mut self) {
        let stopped = self.stopped.take().expect("waited for once");
        tokio::time::timeout(STEP, stopped)
            .await
            .expect("server drained in time")
            .expect("server thread ended cleanly");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.fire_shutdown();
    }
}

/// Which HTTP version a client offers in ALPN and then speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// `http/1.1`.
    Http1,
    /// `h2`.
    H2,
}

impl Alpn {
    /// Both, for tests that run over each.
    pub const BOTH: [Alpn; 2] = [Alpn::Http1, Alpn::H2];

    /// What a client offering only this protocol sends in ALPN.
    pub fn offer(self) -> &'static [&'static [u8]] {
        match self {
            Self::Http1 => &[b"http/1.1"],
            Self::H2 => &[b"h2"],
        }
    }
}

/// A rustls client configuration (ring) trusting only `ca_pem`, offering `alpn` and `versions`.
pub fn client_config(
    ca_pem: &str,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    client_config_as(ca_pem, alpn, versions, None)
}

/// [`client_config`], presenting `identity`'s certificate when asked for one.
pub fn client_config_as(
    ca_pem: &str,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
    identity: Option<&ClientIdentity>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client certificate PEM");
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
                .expect("client key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate and key")
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Connects over TCP and completes the TLS handshake for `server_name`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    // As real clients (the API server's Go client) do: without it a request's HEADERS and DATA
    // frames wait on Nagle's algorithm against the server's delayed ACK, ~40 ms each.
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    tokio::time::timeout(STEP, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// The rustls error behind a failed handshake, if that is what it was.
pub fn rustls_error(error: &std::io::Error) -> Option<&rustls::Error> {
    error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
}

/// A client CA and a client certificate it signed (`clientAuth`), as the kube-apiserver would
/// present through its admission configuration.
#[derive(Clone)]
pub struct ClientIdentity {
    /// The CA the server is told to trust (`--client-ca`).
    pub ca_pem: String,
    /// The client's certificate.
    pub cert_pem: String,
    /// The client's key.
    pub key_pem: String,
}

impl ClientIdentity {
    /// A new CA whose subject is `ca_name`, and a client certificate for `client_name` signed by
    /// it.
    pub fn generate(ca_name: &str, client_name: &str) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
            KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("client CA");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("client key");
        let mut leaf = CertificateParams::new(vec![client_name.to_owned()]).expect("client params");
        leaf.distinguished_name.push(DnType::CommonName, client_name);
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = leaf.signed_by(&key, &issuer).expect("client certificate");
        Self {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One HTTPS connection speaking exactly one HTTP version.
pub struct Client {
    sender: Sender,
    /// The protocol ALPN settled on.
    pub alpn: Option<Vec<u8>>,
    /// The TLS version negotiated.
    pub tls_version: Option<rustls::ProtocolVersion>,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap<HeaderValue>,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// The body as UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("UTF-8 body")
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The `Content-Type` header.
    pub fn content_type(&self) -> &str {
        self.headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Client {
    /// Speaks `alpn` over an established TLS stream.
    pub async fn handshake(stream: TlsStream<TcpStream>, alpn: Alpn) -> Result<Self, String> {
        let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let tls_version = stream.get_ref().1.protocol_version();
        let io = TokioIo::new(stream);
        let sender = match alpn {
            Alpn::Http1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                Sender::Http1(sender)
            }
            Alpn::H2 => {
                let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                Sender::H2(sender)
            }
        };
        Ok(Self {
            sender,
            alpn: negotiated,
            tls_version,
        })
    }

    /// Another handle on the same HTTP/2 connection, for concurrent streams. `None` for
    /// HTTP/1.1, which has one request at a time.
    pub fn stream(&self) -> Option<Self> {
        match &self.sender {
            Sender::Http1(_) => None,
            Sender::H2(s) => Some(Self {
                sender: Sender::H2(s.clone()),
                alpn: self.alpn.clone(),
                tls_version: self.tls_version,
            }),
        }
    }

    /// Sends one request and reads the whole response, or says why that failed.
    pub async fn try_request(&mut self, method: Method, path: &str, body: Vec<u8>) -> Result<Reply, String> {
        let builder = Request::builder().method(method);
        let builder = match &self.sender {
            // HTTP/1.1: origin-form target plus Host, as clients send it.
            Sender::Http1(_) => builder.uri(path).header(hyper::header::HOST, SERVER_NAME),
            // HTTP/2: the authority and scheme travel as pseudo-headers.
            Sender::H2(_) => builder.uri(format!("https://{SERVER_NAME}{path}")),
        };
        let request = builder
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = match &mut self.sender {
                Sender::Http1(s) => {
                    s.ready().await.map_err(|e| e.to_string())?;
                    s.send_request(request).await
                }
                Sender::H2(s) => {
                    s.ready().await.map_err(|e| e.to_string())?;
                    s.send_request(request).await
                }
            }
            .map_err(|e| e.to_string())?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(STEP, exchange)
            .await
            .map_err(|_| "request timed out".to_owned())?
    }

    /// Sends one request; panics if the exchange fails.
    pub async fn request(&mut self, method: Method, path: &str, body: Vec<u8>) -> Reply {
        self.try_request(method.clone(), path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `POST path` with `body`.
    pub async fn post(&mut self, path: &str, body: impl Into<Vec<u8>>) -> Reply {
        self.request(Method::POST, path, body.into()).await
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Reply {
        self.request(Method::GET, path, Vec::new()).await
    }

    /// POSTs `review` to `path`, checks the answer is a 200 AdmissionReview v1 echoing the uid,
    /// and returns its `response`.
    pub async fn review(&mut self, path: &str, review: &Value) -> Value {
        let reply = self
            .post(path, serde_json::to_vec(review).expect("review JSON"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
        assert_eq!(reply.content_type(), "application/json");
        let body = reply.json();
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1", "{body}");
        assert_eq!(body["kind"], "AdmissionReview", "{body}");
        assert_eq!(
            body["response"]["uid"], review["request"]["uid"],
            "uid echo: {body}"
        );
        body["response"].clone()
    }
}

/// `portcullis serve` on 127.0.0.1:0 (metrics on another 127.0.0.1:0) with `ws`'s certificate, key and configuration (when it
/// has one), without colours and with no stdin: the real binary, as a test starts it.
pub fn serve_command(ws: &Workspace) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .arg("serve")
        .args(["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .arg("--cert")
        .arg(&ws.cert)
        .arg("--key")
        .arg(&ws.key)
        .env("NO_COLOR", "1")
        .env(CACHE_DIR_ENV, artifact_cache_dir())
        .stdin(std::process::Stdio::null());
    if let Some(config) = &ws.config {
        command.arg("--config").arg(config);
    }
    command
}

/// How many unread log events a [`ChildServer`] keeps; later ones are dropped until some are read.
pub const KEPT_LOG_EVENTS: usize = 4096;

/// The real `portcullis` binary serving a configuration on 127.0.0.1, for tests that watch the
/// process from outside, such as its resident memory, without other tests' allocations in the
/// same address space. Started with `serve --addr 127.0.0.1:0` and JSON logs; ready once it logs
/// `listening` with the address it bound. Killed on drop.
pub struct ChildServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its files; kept alive as long as the server.
    pub workspace: Workspace,
    child: std::process::Child,
    /// The first [`KEPT_LOG_EVENTS`] log events not yet read by [`ChildServer::wait_log`].
    logs: tokio::sync::mpsc::Receiver<Value>,
}

impl ChildServer {
    /// Writes `config_yaml` and `modules` as [`Workspace::new`] does, starts the binary on them
    /// with `args` added to `serve`, and waits (bounded by [`STEP`]) for its address.
    pub async fn start(config_yaml: &str, modules: &[(&str, Vec<u8>)], args: &[&str]) -> Self {
        use std::io::BufRead as _;
        let workspace = Workspace::new(Some(config_yaml), modules);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["--log-format", "json", "serve", "--addr", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .arg("--cert")
            .arg(&workspace.cert)
            .arg("--key")
            .arg(&workspace.key)
            .arg("--config")
            .arg(workspace.config.as_ref().expect("config"))
            .args(args)
            .env(CACHE_DIR_ENV, artifact_cache_dir())
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn portcullis");
        let stderr = child.stderr.take().expect("stderr");
        let (addr_tx, addr_rx) = oneshot::channel();
        let (logs_tx, logs) = tokio::sync::mpsc::channel(KEPT_LOG_EVENTS);
        // Reads the log to the end, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                // Kept for tests that read the log, up to a bound for those (soaks) that don't.
                let _ = logs_tx.try_send(event.clone());
                if event["message"] == "listening"
                    && let Some(addr) = event["addr"].as_str().and_then(|a| a.parse().ok())
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match tokio::time::timeout(STEP, addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => {
                let _ = child.kill();
                panic!("portcullis did not log `listening` with its address in time");
            }
        };
        Self {
            addr,
            workspace,
            child,
            logs,
        }
    }

    /// The next JSON log event (after those already read) whose `message` is `message`,
    /// waiting for it at most [`STEP`].
    pub async fn wait_log(&mut self, message: &str) -> Value {
        let found = tokio::time::timeout(STEP, async {
            while let Some(event) = self.logs.recv().await {
                if event["message"] == message {
                    return Some(event);
                }
            }
            None
        });
        match found.await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("portcullis exited before logging {message:?}"),
            Err(_) => panic!("portcullis did not log {message:?} within {STEP:?}"),
        }
    }

    /// Sends `signal` (a name `kill` knows, as `HUP`) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("wait for portcullis").is_none()
    }

    /// An HTTP/2 client trusting the server's CA.
    pub async fn h2(&self) -> Client {
        let config = client_config(&self.workspace.ca_pem, Alpn::H2.offer(), rustls::DEFAULT_VERSIONS);
        let stream = tls_connect(self.addr, config, SERVER_NAME)
            .await
            .expect("TLS handshake");
        Client::handshake(stream, Alpn::H2)
            .await
            .expect("HTTP/2 connection")
    }

    /// The process's resident set size, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.child.id())
    }

    /// Sends SIGTERM and waits (bounded by 30 s) for the process to exit; its exit code.
    pub async fn terminate(mut self) -> Option<i32> {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for portcullis") {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "portcullis did not exit within 30 s of SIGTERM"
            );
            // Polling a child process has no readiness to wait on; 20 ms is the granularity.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of process `pid`, from `/proc/<pid>/status`, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or_else(|| panic!("no VmRSS in {path}"))
}

/// The compiled-artifact cache the tests' engines share, under the target directory: the
/// example components take seconds each to compile, and the cache is keyed by their bytes.
pub fn artifact_cache() -> portcullis::engine::cache::ArtifactCache {
    portcullis::engine::cache::ArtifactCache::Dir(artifact_cache_dir())
}

/// The directory of [`artifact_cache`], which the tests hand to the binary through
/// [`CACHE_DIR_ENV`] so that it never writes to the user's own cache.
pub fn artifact_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifact-cache")
}

/// The binary's environment variable for `--cache-dir`.
pub const CACHE_DIR_ENV: &str = "PORTCULLIS_CACHE_DIR";
