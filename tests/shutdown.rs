//! Graceful shutdown: on SIGTERM the real binary turns unready, keeps serving old and new
//! connections through the shutdown delay (so endpoints stop sending it reviews first), then
//! stops accepting, lets the review in flight finish with its answer, and exits 0; in process,
//! firing the shutdown future does the same for `app::run`.
//!
//! A review is made provably in flight with `Expect: 100-continue`: the server sends
//! `100 Continue` only once the request has reached the handler and it asks for the body, so the
//! test signals the server between that interim response and the body, with no timing guess.
//! The policy then spins for 300 ms, so the answer is computed while the server drains.

mod common;

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    SERVER_NAME, STEP, TestServer, Workspace, client_config, pod, review, tls_connect, wat_fixture,
};
use hyper::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;

/// How long the slow policy spins.
const SLOW: Duration = Duration::from_millis(300);

/// Shutdown with nothing in flight must not wait for the drain bound (10 s in tests).
const IDLE_SHUTDOWN_BOUND: Duration = Duration::from_secs(2);

const SLOW_CONFIG: &str = "policies:\n  - {name: slow, module: slow_accept.wasm, timeout_ms: 2000}\n";

fn slow_modules() -> Vec<(&'static str, Vec<u8>)> {
    vec![("slow_accept.wasm", wat_fixture("slow_accept"))]
}

/// An HTTP/1.1 request sent by hand, its head first: the handler is known to be running once
/// `100 Continue` has arrived.
struct HeldRequest {
    stream: TlsStream<TcpStream>,
    body: Vec<u8>,
}

impl HeldRequest {
    /// Sends the head of `POST path` with `Expect: 100-continue` and waits for `100 Continue`.
    async fn start(addr: SocketAddr, ca_pem: &str, path: &str, body: Vec<u8>) -> Self {
        let config = client_config(ca_pem, &[b"http/1.1"], rustls::DEFAULT_VERSIONS);
        let mut stream = tls_connect(addr, config, SERVER_NAME).await.expect("handshake");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("write head");
        stream.flush().await.expect("flush head");
        let interim = read_until(&mut stream, b"\r\n\r\n").await;
        assert_eq!(
            String::from_utf8_lossy(&interim),
            "HTTP/1.1 100 Continue\r\n\r\n",
            "the handler must ask for the body"
        );
        Self { stream, body }
    }

    /// Sends the body and reads the response until the server closes the connection, which it
    /// does after answering while it shuts down. Returns the status and the JSON body.
    async fn finish(mut self) -> (StatusCode, Value) {
        self.stream.write_all(&self.body).await.expect("write body");
        self.stream.flush().await.expect("flush body");
        let mut raw = Vec::new();
        // EOF or close_notify ends the read; an abrupt close after the full response is fine too.
        let _ = tokio::time::timeout(STEP, self.stream.read_to_end(&mut raw))
            .await
            .expect("the server answers and closes in time");
        let text = String::from_utf8(raw).expect("UTF-8 response");
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head: {text:?}"));
        let status: u16 = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("bad status line: {head:?}"));
        let lower = head.to_ascii_lowercase();
        assert!(
            lower.contains("\r\nconnection: close"),
            "a draining server closes: {head}"
        );
        let length: usize = lower
            .split("\r\n")
            .find_map(|line| line.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no content-length: {head}"));
        assert_eq!(body.len(), length, "{text:?}");
        let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        (StatusCode::from_u16(status).expect("status"), json)
    }
}

async fn read_until(stream: &mut TlsStream<TcpStream>, end: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(end) {
        let n = tokio::time::timeout(STEP, stream.read(&mut byte))
            .await
            .expect("the server answers in time")
            .expect("read");
        assert_ne!(
            n,
            0,
            "connection closed after {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    buf
}

/// Connecting must be refused: the listener is closed.
async fn assert_refused(addr: SocketAddr) {
    // The listener is dropped right after readiness is cleared; allow that instant to pass
    // (a connection caught in its backlog as it closes is reset).
    for _ in 0..1000 {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => tokio::task::yield_now().await,
            Err(e) => panic!("unexpected connect error: {e}"),
            Ok(_) => tokio::task::yield_now().await,
        }
    }
    panic!("{addr} still accepts connections");
}

fn slow_review(uid: &str) -> Vec<u8> {
    serde_json::to_vec(&review("Pod", pod("p"), "CREATE", "ml", uid, false)).expect("JSON")
}

/// The binary's stderr, line by line, with ANSI colours removed.
struct Log {
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Log {
    fn follow(stderr: std::process::ChildStderr) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(strip_ansi(&line)).is_err() {
                    break;
                }
            }
        });
        Self {
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a line containing `needle` and returns it.
    async fn wait_for(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Ok(None) => panic!("stderr closed before {needle:?}; log:\n{}", self.seen.join("\n")),
                Err(_) => panic!("no {needle:?} in time; log:\n{}", self.seen.join("\n")),
            }
        }
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Kills the child if the test fails half-way, so no server outlives it.
struct Reaper(std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The real binary serving `SLOW_CONFIG` on an ephemeral port with `args`, and its log.
struct Binary {
    child: Reaper,
    log: Log,
    addr: SocketAddr,
}

impl Binary {
    async fn start(ws: &Workspace, args: &[&str]) -> Self {
        let child = common::serve_command(ws)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portcullis");
        let mut child = Reaper(child);
        let mut log = Log::follow(child.0.stderr.take().expect("stderr"));
        let listening = log.wait_for("listening").await;
        let addr: SocketAddr = listening
            .split_whitespace()
            .find_map(|field| field.strip_prefix("addr="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no addr=IP:PORT in {listening:?}"));
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
        Self { child, log, addr }
    }

    /// A fresh connection speaking `alpn`, trusting `ws`'s CA.
    async fn client(&self, ws: &Workspace, alpn: common::Alpn) -> common::Client {
        let offer: &[&[u8]] = match alpn {
            common::Alpn::Http1 => &[b"http/1.1"],
            common::Alpn::H2 => &[b"h2"],
        };
        let config = client_config(&ws.ca_pem, offer, rustls::DEFAULT_VERSIONS);
        let stream = tls_connect(self.addr, config, SERVER_NAME)
            .await
            .expect("handshake");
        common::Client::handshake(stream, alpn)
            .await
            .expect("HTTP handshake")
    }

    fn sigterm(&self) {
        let pid = self.child.0.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits (bounded) for the process to exit 0 having drained in full.
    async fn exits_zero_drained(mut self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut reaper = self.child;
        std::thread::spawn(move || {
            let status = reaper.0.wait();
            let _ = tx.send(status);
        });
        let exit = tokio::time::timeout(STEP, rx)
            .await
            .expect("the process exits in time")
            .expect("waiter")
            .expect("wait");
        assert_eq!(exit.code(), Some(0), "{exit:?}");
        self.log.wait_for("drained").await;
        assert!(
            !self.log.seen.iter().any(|l| l.contains("drain timed out")),
            "{}",
            self.log.seen.join("\n")
        );
    }
}

/// The review in flight is answered in full, after the policy's 300 ms.
async fn answered_in_full(held: HeldRequest, uid: &str) {
    let started = Instant::now();
    let (status, body) = held.finish().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
               "response": {"uid": uid, "allowed": true}})
    );
    assert!(
        started.elapsed() >= SLOW,
        "the policy ran during the drain: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_review_in_flight_and_exits_zero() {
    let ws = Workspace::new(Some(SLOW_CONFIG), &slow_modules());
    let mut server = Binary::start(&ws, &["--drain-timeout-secs", "20", "--shutdown-delay-secs", "0"]).await;

    // Ready, and serving reviews.
    let mut client = server.client(&ws, common::Alpn::H2).await;
    assert_eq!(client.get("/readyz").await.status, StatusCode::OK);
    drop(client);

    let held = HeldRequest::start(server.addr, &ws.ca_pem, "/validate", slow_review("in-flight")).await;
    server.sigterm();
    server.log.wait_for("shutting down").await;
    server.log.wait_for("draining").await;
    assert_refused(server.addr).await;
    answered_in_full(held, "in-flight").await;
    server.exits_zero_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_shutdown_delay_old_and_new_connections_are_served_while_unready() {
    let ws = Workspace::new(Some(SLOW_CONFIG), &slow_modules());
    // A delay far longer than the test: a second SIGTERM ends it, so no timing is guessed.
    let mut server = Binary::start(
        &ws,
        &["--drain-timeout-secs", "20", "--shutdown-delay-secs", "600"],
    )
    .await;
    let mut old_h2 = server.client(&ws, common::Alpn::H2).await;
    assert_eq!(old_h2.get("/readyz").await.status, StatusCode::OK);
    let held = HeldRequest::start(server.addr, &ws.ca_pem, "/validate", slow_review("in-flight")).await;

    server.sigterm();
    server
        .log
        .wait_for("unready; serving on while endpoints update")
        .await;
    // Unready on old and new connections alike, so endpoints drop the pod...
    let mut new_h1 = server.client(&ws, common::Alpn::Http1).await;
    for client in [&mut old_h2, &mut new_h1] {
        let reply = client.get("/readyz").await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "not ready")
        );
    }
    // ...while reviews that still arrive, on old and new connections, are answered.
    let mut new_h2 = server.client(&ws, common::Alpn::H2).await;
    for (i, client) in [&mut old_h2, &mut new_h1, &mut new_h2].into_iter().enumerate() {
        let uid = format!("during-delay-{i}");
        let r = review("Pod", pod("p"), "CREATE", "ml", &uid, false);
        assert_eq!(client.review("/validate", &r).await["allowed"], true, "{uid}");
    }

    // A second signal ends the delay: the server stops accepting and drains.
    server.sigterm();
    server.log.wait_for("ending the shutdown delay early").await;
    server.log.wait_for("draining").await;
    assert_refused(server.addr).await;
    answered_in_full(held, "in-flight").await;
    server.exits_zero_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_shutdown_turns_unready_and_stops_accepting() {
    let mut server = TestServer::start(SLOW_CONFIG, &slow_modules()).await;
    let mut idle_h1 = server.h1().await;
    let reply = idle_h1.get("/readyz").await;
    assert_eq!((reply.status, reply.text().as_str()), (StatusCode::OK, "ready"));
    let mut idle_h2 = server.h2().await;
    assert_eq!(idle_h2.get("/readyz").await.status, StatusCode::OK);

    // Idle keep-alive connections are closed, not waited for: the drain (10 s) is not used up.
    let started = Instant::now();
    server.fire_shutdown();
    server.stopped().await;
    assert!(
        started.elapsed() < IDLE_SHUTDOWN_BOUND,
        "took {:?}",
        started.elapsed()
    );
    assert!(
        !server.readiness.is_ready(),
        "/readyz must report unready after shutdown"
    );
    // The idle connections were closed, or at least say the server is not ready.
    for client in [&mut idle_h1, &mut idle_h2] {
        match client
            .try_request(hyper::Method::GET, "/readyz", Vec::new())
            .await
        {
            Err(_) => {}
            Ok(reply) => assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE),
        }
    }
    assert_refused(server.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_handshakes_does_not_hold_shutdown() {
    let mut server = TestServer::start(SLOW_CONFIG, &slow_modules()).await;
    // A TCP health check, a port scanner or a stalled client: connected, silent.
    let _silent = TcpStream::connect(server.addr).await.expect("connect");
    // A full request after it proves the silent connection has been accepted.
    assert_eq!(server.h1().await.get("/healthz").await.status, StatusCode::OK);
    let started = Instant::now();
    server.fire_shutdown();
    server.stopped().await;
    assert!(
        started.elapsed() < IDLE_SHUTDOWN_BOUND,
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_shutdown_drains_the_review_in_flight() {
    let mut server = TestServer::start(SLOW_CONFIG, &slow_modules()).await;
    let held = HeldRequest::start(
        server.addr,
        server.ca_pem(),
        "/validate/slow",
        slow_review("drained"),
    )
    .await;

    server.fire_shutdown();
    // Unready and closed for new connections while the review is still held.
    let deadline = Instant::now() + STEP;
    while server.readiness.is_ready() {
        assert!(Instant::now() < deadline, "readiness never cleared");
        tokio::task::yield_now().await;
    }
    assert_refused(server.addr).await;

    let (status, body) = held.finish().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["response"], json!({"uid": "drained", "allowed": true}));
    server.stopped().await;
}
