//! The HTTP layer's bounds, tested with real clients over real TLS on 127.0.0.1: a body over
//! the limit gets a 413 that the client reads (hyper, raw HTTP/1.1 with `Expect`, curl and
//! Python, on both protocols); the default limit admits an UPDATE review of the largest
//! objects the API server stores; and each abusive client (slow headers, slow body, HTTP/2
//! stream flood, connection flood, oversized headers, TLS garbage, idle and unresponsive
//! peers, many large bodies at once) is cut off within its bound, the bound shows in the
//! server's peak gauges, and a good client is answered meanwhile.
//!
//! Abuse is bounded: at most a few dozen connections or streams, each test's limits a few
//! hundred milliseconds, everything on loopback.

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::{
    Alpn, Knobs, STEP, TestServer, client_config, deployment, pod, review, tls_connect, wat_fixture,
};
use hyper::body::{Bytes, Frame};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::server::load::Gauge;
use portcullis::server::{BodyLimit, HttpLimits};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const CONFIG: &str = "policies:\n  - {name: allow-all, module: allow_all.wasm}\n";

/// The body limit of the servers that refuse large bodies here.
const LIMIT: usize = 1024 * 1024;

/// What the clients upload past it: well beyond what loopback socket buffers absorb, so a
/// server that closed without reading would reset the connection while the client sends.
const UPLOAD: usize = 32 * LIMIT;

/// The 413's text, exactly.
fn too_large_text(limit: usize) -> String {
    format!("request body exceeds the limit of {limit} bytes\n")
}

async fn start(body_limit: usize, http: HttpLimits) -> TestServer {
    let knobs = Knobs {
        body_limit,
        http,
        ..Knobs::default()
    };
    TestServer::start_with(
        Some(CONFIG),
        &[("allow_all.wasm", wat_fixture("allow_all"))],
        knobs,
    )
    .await
}

fn pod_review(uid: &str) -> Value {
    review("Pod", pod("p"), "CREATE", "ml", uid, false)
}

/// Asserts that `server` answers a review over a fresh connection of each protocol within
/// `within`, and returns the slowest answer's latency.
async fn good_client_is_answered(server: &TestServer, within: Duration) -> Duration {
    let mut slowest = Duration::ZERO;
    for alpn in Alpn::BOTH {
        let started = Instant::now();
        let mut client = server.client(alpn).await;
        let response = client.review("/validate", &pod_review("good")).await;
        let took = started.elapsed();
        assert_eq!(response["allowed"], true, "{alpn:?}");
        assert!(took < within, "{alpn:?}: a good review took {took:?}");
        slowest = slowest.max(took);
    }
    slowest
}

/// Waits (bounded) until `condition` holds, re-checking every millisecond.
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + STEP;
    while !condition() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Reads until the peer closes (EOF or reset) and returns what arrived.
async fn read_to_close<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(STEP, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the server did not close in time; got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

/// A TLS connection speaking exactly `alpn`, for requests written by hand.
async fn raw_tls(server: &TestServer, alpn: &'static [u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = client_config(server.ca_pem(), &[alpn], rustls::DEFAULT_VERSIONS);
    tls_connect(server.addr, config, common::SERVER_NAME)
        .await
        .expect("TLS handshake")
}

/// An HTTP/1.1 response read whole: status line, lower-cased head, body.
struct RawResponse {
    status: u16,
    head: String,
    body: String,
}

fn parse_response(raw: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {text:?}"));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    RawResponse {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// A streaming hyper client: the body comes from a channel, chunk by chunk, so the client is
// still sending when the server answers.

struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// Sends `total` bytes in 64 KiB chunks until done or the request body is dropped (the
/// client stopped sending). Returns the bytes handed over.
async fn produce(tx: mpsc::Sender<Bytes>, total: usize) -> usize {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let mut sent = 0;
    while sent < total {
        if tx.send(chunk.clone()).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    sent
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<ChannelBody>),
    H2(hyper::client::conn::http2::SendRequest<ChannelBody>),
}

impl Sender {
    async fn connect(server: &TestServer, alpn: Alpn) -> Self {
        let offer: &'static [u8] = match alpn {
            Alpn::Http1 => b"http/1.1",
            Alpn::H2 => b"h2",
        };
        let io = TokioIo::new(raw_tls(server, offer).await);
        match alpn {
            Alpn::Http1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io).await.expect("h1");
                tokio::spawn(conn);
                Self::Http1(sender)
            }
            Alpn::H2 => {
                let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .expect("h2");
                tokio::spawn(conn);
                Self::H2(sender)
            }
        }
    }

    /// Sends `request` and reads the whole response: status, headers, body.
    async fn send(&mut self, request: Request<ChannelBody>) -> (StatusCode, hyper::HeaderMap, String) {
        use http_body_util::BodyExt as _;
        let exchange = async {
            let response = match self {
                Self::Http1(s) => {
                    s.ready().await.expect("ready");
                    s.send_request(request).await
                }
                Self::H2(s) => {
                    s.ready().await.expect("ready");
                    s.send_request(request).await
                }
            }
            .expect("response");
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("response body").to_bytes();
            (
                parts.status,
                parts.headers,
                String::from_utf8_lossy(&body).into_owned(),
            )
        };
        tokio::time::timeout(STEP, exchange)
            .await
            .expect("answered in time")
    }

    /// POSTs `body` to `path` as one chunk (with its length declared).
    async fn post(&mut self, path: &str, body: Vec<u8>) -> (StatusCode, hyper::HeaderMap, String) {
        let (tx, rx) = mpsc::channel(1);
        let length = body.len();
        tx.try_send(Bytes::from(body)).expect("channel has room");
        drop(tx);
        let request = self.request(path).header(hyper::header::CONTENT_LENGTH, length);
        self.send(request.body(ChannelBody(rx)).expect("request")).await
    }

    fn request(&self, path: &str) -> hyper::http::request::Builder {
        let builder = Request::builder()
            .method(Method::POST)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        match self {
            Self::Http1(_) => builder.uri(path).header(hyper::header::HOST, common::SERVER_NAME),
            Self::H2(_) => builder.uri(format!("https://{}{path}", common::SERVER_NAME)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Body size and the 413.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_a_413_the_client_reads_while_still_sending() {
    let server = start(LIMIT, HttpLimits::default()).await;
    for alpn in Alpn::BOTH {
        let mut sender = Sender::connect(&server, alpn).await;
        // Undeclared length (chunked on HTTP/1.1): the server finds out while reading.
        let (tx, rx) = mpsc::channel(1);
        let producer = tokio::spawn(produce(tx, UPLOAD));
        let request = sender
            .request("/validate")
            .body(ChannelBody(rx))
            .expect("request");
        let (status, headers, text) = sender.send(request).await;
        assert_eq!(
            (status, text.as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, too_large_text(LIMIT).as_str()),
            "{alpn:?}"
        );
        // The server read the rest and let the client finish, so nothing was reset.
        let sent = producer.await.expect("producer");
        assert_eq!(sent, UPLOAD, "{alpn:?}: the client could send its whole body");
        match alpn {
            Alpn::Http1 => assert_eq!(
                headers.get("connection").map(|v| v.as_bytes()),
                Some(&b"close"[..])
            ),
            Alpn::H2 => {
                // The stream closed cleanly; the connection goes on serving.
                let body = serde_json::to_vec(&pod_review("after-413")).expect("JSON");
                let (status, _, text) = sender.post("/validate", body).await;
                assert_eq!(status, StatusCode::OK, "{text}");
            }
        }
    }
    wait_until("body reservations given back", || {
        server.load.body_bytes.current() == 0
    })
    .await;
    assert!(
        server.load.body_bytes.peak() <= LIMIT as u64 + 4096,
        "a refused body reserved no more than the limit: {}",
        server.load.body_bytes.peak()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_oversize_body_is_refused_before_it_is_read() {
    let server = start(LIMIT, HttpLimits::default()).await;
    // HTTP/2 with Content-Length over the limit: answered at once, then drained.
    let mut sender = Sender::connect(&server, Alpn::H2).await;
    let (tx, rx) = mpsc::channel(1);
    let producer = tokio::spawn(produce(tx, UPLOAD));
    let request = sender
        .request("/validate")
        .header(hyper::header::CONTENT_LENGTH, UPLOAD)
        .body(ChannelBody(rx))
        .expect("request");
    let (status, _, text) = sender.send(request).await;
    assert_eq!(
        (status, text),
        (StatusCode::PAYLOAD_TOO_LARGE, too_large_text(LIMIT))
    );
    assert_eq!(producer.await.expect("producer"), UPLOAD);
    assert_eq!(server.load.body_bytes.peak(), 0, "nothing was reserved for it");

    // HTTP/1.1 with `Expect: 100-continue`: the 413 comes instead of `100 Continue`, so the
    // client never sends its body, and the connection closes cleanly after it.
    let mut stream = raw_tls(&server, b"http/1.1").await;
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {UPLOAD}\r\nExpect: 100-continue\r\n\r\n",
        common::SERVER_NAME
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.flush().await.expect("flush");
    let response = parse_response(&read_to_close(&mut stream).await);
    assert_eq!(response.status, 413, "{}", response.head);
    assert!(
        response.head.contains("\r\nconnection: close"),
        "{}",
        response.head
    );
    assert_eq!(response.body, too_large_text(LIMIT));
}

/// Runs `program` with `args`, if it is installed; `None` when it is not.
fn run(program: &str, args: &[&str]) -> Option<std::process::Output> {
    match std::process::Command::new(program).args(args).output() {
        Ok(output) => Some(output),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("{program} is not installed; skipping its case");
            None
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_python_read_the_413_on_both_protocols() {
    let server = start(LIMIT, HttpLimits::default()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let upload = dir.path().join("upload.json");
    std::fs::write(&upload, vec![b'x'; UPLOAD]).expect("write upload");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, server.ca_pem()).expect("write CA");
    let port = server.addr.port();
    let url = format!("https://{}:{port}/validate", common::SERVER_NAME);
    let resolve = format!("{}:{port}:127.0.0.1", common::SERVER_NAME);
    let data = format!("@{}", upload.display());
    let ca_arg = ca.display().to_string();
    // Before this server answered oversized bodies so, curl exited 55 (HTTP/1.1 without
    // `Expect`: the reset broke its send) or 92 (HTTP/2: it fails a stream reset while it
    // uploads, even with NO_ERROR after a whole response), and Python saw an EOF.
    let cases: [(&str, &[&str]); 3] = [
        ("HTTP/1.1 with Expect", &["--http1.1"]),
        ("HTTP/1.1 without Expect", &["--http1.1", "-H", "Expect:"]),
        ("HTTP/2", &["--http2"]),
    ];
    for (case, flags) in cases {
        let mut args = vec![
            "-sS",
            "--cacert",
            &ca_arg,
            "--resolve",
            &resolve,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &data,
            "-w",
            "%{http_code}",
        ];
        args.extend_from_slice(flags);
        args.push(&url);
        let Some(output) = tokio::task::block_in_place(|| run("curl", &args)) else {
            break;
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            (output.status.code(), stdout.as_ref()),
            (Some(0), format!("{}413", too_large_text(LIMIT)).as_str()),
            "curl {case}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let script = r#"
import http.client, ssl, sys
context = ssl.create_default_context(cafile=sys.argv[1])
connection = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[2]), context=context)
connection.request("POST", "/validate", body=open(sys.argv[3], "rb").read(), headers={"Content-Type": "application/json"})
response = connection.getresponse()
sys.stdout.write("%d %s" % (response.status, response.read().decode()))
"#;
    let port = port.to_string();
    let upload = upload.display().to_string();
    if let Some(output) =
        tokio::task::block_in_place(|| run("python3", &["-c", script, &ca_arg, &port, &upload]))
    {
        assert_eq!(
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).into_owned()
            ),
            (Some(0), format!("413 {}", too_large_text(LIMIT))),
            "python: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A Deployment whose JSON is just over `bytes`, with managedFields for every env var, the
/// way a big object looks when the API server sends it.
fn big_deployment(bytes: usize) -> Value {
    let mut object = deployment("big");
    object["metadata"]["namespace"] = json!("ml");
    let mut env = Vec::new();
    let mut fields = serde_json::Map::new();
    let mut size = object.to_string().len();
    let mut i = 0;
    while size < bytes {
        let name = format!("MODEL_SETTING_{i:06}");
        let var = json!({"name": name, "value": format!("{:<48}", i)});
        let field = format!("k:{{\"name\":\"{name}\"}}");
        size += var.to_string().len() + field.len() + 40;
        fields.insert(field, json!({".": {}, "f:name": {}, "f:value": {}}));
        env.push(var);
        i += 1;
    }
    object["spec"]["template"]["spec"]["containers"][0]["env"] = json!(env);
    object["metadata"]["managedFields"] = json!([{
        "manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"main\"}": {"f:env": fields}}}}}}
    }]);
    object
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_limit_admits_an_update_of_the_largest_object_the_api_server_stores() {
    // The API server decodes request bodies up to 3 MiB (MaxRequestBodyBytes in
    // staging/src/k8s.io/apiserver/pkg/server/config.go: twice etcd's 1.5 MiB request limit),
    // and an UPDATE review carries the object twice: `object` and `oldObject`.
    let old = big_deployment(3 * 1024 * 1024);
    let mut new = old.clone();
    new["metadata"]["labels"] = json!({"team": "ml"});
    let mut update = review("Deployment", new, "UPDATE", "ml", "big-update", false);
    update["request"]["oldObject"] = old;
    let body = serde_json::to_vec(&update).expect("JSON");
    assert!(
        body.len() > 2 * 3 * 1024 * 1024 && body.len() < BodyLimit::DEFAULT.0,
        "{} bytes: over the old 3 MiB limit twice, under the default",
        body.len()
    );
    // The HTTP layer is under test, not the policy: give it time to copy 6 MiB in on a busy
    // machine.
    let knobs = Knobs {
        body_limit: BodyLimit::DEFAULT.0,
        ..Knobs::default()
    };
    let server = TestServer::start_with(
        Some("policies:\n  - {name: allow-all, module: allow_all.wasm, timeout_ms: 10000}\n"),
        &[("allow_all.wasm", wat_fixture("allow_all"))],
        knobs,
    )
    .await;
    for alpn in Alpn::BOTH {
        let mut sender = Sender::connect(&server, alpn).await;
        let (status, _, text) = sender.post("/validate", body.clone()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{alpn:?}: {}",
            &text[..text.len().min(300)]
        );
        let answer: Value = serde_json::from_str(&text).expect("AdmissionReview");
        assert_eq!(
            answer["response"],
            json!({"uid": "big-update", "allowed": true}),
            "{alpn:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Slow clients.

fn fast(http: HttpLimits) -> HttpLimits {
    HttpLimits {
        handshake_timeout: Duration::from_millis(500),
        header_read_timeout: Duration::from_millis(500),
        body_read_timeout: Duration::from_millis(500),
        ..http
    }
}

/// The slack a timeout may take to fire on a busy two-core machine.
const SLACK: Duration = Duration::from_millis(1500);

/// What a good client may take while an attack is held: far less than the attacker's hold.
const GOOD: Duration = Duration::from_millis(400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_at_the_header_read_timeout() {
    let http = fast(HttpLimits::default());
    let server = start(LIMIT, http).await;
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut stream = raw_tls(&server, b"http/1.1").await;
        stream
            .write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: appl")
            .await
            .expect("write part of a head");
        stream.flush().await.expect("flush");
        slow.push(stream);
    }
    let started = Instant::now();
    good_client_is_answered(&server, GOOD).await;
    for mut stream in slow {
        let rest = read_to_close(&mut stream).await;
        let took = started.elapsed();
        assert!(
            rest.is_empty() || String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408"),
            "{:?}",
            String::from_utf8_lossy(&rest)
        );
        assert!(took < http.header_read_timeout + SLACK, "closed after {took:?}");
        eprintln!("slow head closed after {took:?}");
    }
    assert!(
        started.elapsed() + Duration::from_millis(50) >= http.header_read_timeout,
        "not before the timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_a_408_at_the_body_read_timeout_and_gives_its_share_back() {
    let http = fast(HttpLimits::default());
    let server = start(LIMIT, http).await;
    let mut stream = raw_tls(&server, b"http/1.1").await;
    stream
        .write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"apiVers")
        .await
        .expect("write head and a little body");
    stream.flush().await.expect("flush");
    let started = Instant::now();
    wait_until("the slow body reserved its length", || {
        server.load.body_bytes.current() == 1000
    })
    .await;
    good_client_is_answered(&server, GOOD).await;
    let response = parse_response(&read_to_close(&mut stream).await);
    let took = started.elapsed();
    assert_eq!(response.status, 408, "{}", response.head);
    assert!(
        response.head.contains("\r\nconnection: close"),
        "{}",
        response.head
    );
    assert_eq!(response.body, "request body not received within 500 ms\n");
    assert!(
        took + Duration::from_millis(50) >= http.body_read_timeout,
        "{took:?}"
    );
    assert!(took < http.body_read_timeout + SLACK, "{took:?}");
    eprintln!("slow body answered 408 after {took:?}");
    wait_until("its share given back", || server.load.body_bytes.current() == 0).await;
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 by hand, for clients that ignore what the server advertises.

mod h2raw {
    use super::*;

    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const ACK: u8 = 0x1;
    pub const REFUSED_STREAM: u32 = 0x7;

    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// An HPACK integer with a 7-bit prefix (string lengths, Huffman off).
    fn length(out: &mut Vec<u8>, n: usize) {
        if n < 127 {
            out.push(n as u8);
        } else {
            out.push(127);
            let mut rest = n - 127;
            while rest >= 128 {
                out.push((rest % 128) as u8 | 0x80);
                rest /= 128;
            }
            out.push(rest as u8);
        }
    }

    /// HEADERS for `POST path` on `stream`: literal fields, never indexed, no Huffman.
    pub fn post(stream: u32, path: &str, extra: &[(&str, String)], end_stream: bool) -> Vec<u8> {
        let mut block = Vec::new();
        let mut field = |name: &str, value: &str| {
            block.push(0x00);
            length(&mut block, name.len());
            block.extend_from_slice(name.as_bytes());
            length(&mut block, value.len());
            block.extend_from_slice(value.as_bytes());
        };
        field(":method", "POST");
        field(":scheme", "https");
        field(":authority", common::SERVER_NAME);
        field(":path", path);
        field("content-type", "application/json");
        for (name, value) in extra {
            field(name, value);
        }
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        frame(HEADERS, flags, stream, &block)
    }

    /// Opens an HTTP/2 connection: preface and empty SETTINGS.
    pub async fn open(server: &TestServer) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut stream = raw_tls(server, b"h2").await;
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        stream.write_all(&hello).await.expect("preface");
        stream.flush().await.expect("flush");
        stream
    }

    /// The next frame, or `None` when the server closed the connection.
    pub async fn read<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> Option<Frame> {
        let mut head = [0u8; 9];
        match tokio::time::timeout(STEP, stream.read_exact(&mut head)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return None,
            Err(_) => panic!("no frame and no close in time"),
        }
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.ok()?;
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: id,
            payload,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_flood_is_held_to_the_stream_limit_and_the_connection_share() {
    const BODY: usize = 64 * 1024;
    let http = HttpLimits {
        h2_max_concurrent_streams: std::num::NonZeroU32::new(4).expect("nonzero"),
        connection_body_budget: portcullis::server::limits::BodyBudget(2 * BODY),
        body_budget: portcullis::server::limits::BodyBudget(16 * BODY),
        body_read_timeout: Duration::from_millis(1500),
        ..HttpLimits::default()
    };
    let server = start(BODY, http).await;
    let before = good_client_is_answered(&server, STEP).await;
    // Twenty streams at once on one connection, each declaring a body of the largest size
    // and never sending it.
    let mut flood = h2raw::open(&server).await;
    let streams: Vec<u32> = (0..20).map(|i| 1 + 2 * i).collect();
    let mut frames = Vec::new();
    for id in &streams {
        frames.extend(h2raw::post(
            *id,
            "/validate",
            &[("content-length", BODY.to_string())],
            false,
        ));
    }
    flood.write_all(&frames).await.expect("write the flood");
    flood.flush().await.expect("flush");
    wait_until("the flood holds every stream it may", || {
        server.load.requests.current() == 4
    })
    .await;
    let during = good_client_is_answered(&server, GOOD).await;
    assert_eq!(server.load.requests.current(), 4, "the flood is still held");
    eprintln!("good client: {before:?} before the flood, {during:?} during it");

    // Every stream past the fourth is refused; the four admitted get a 408 (two had a share of
    // the connection's budget) or a 503 (two waited for one) at the body-read timeout.
    let mut refused = 0;
    let mut answered = std::collections::BTreeSet::new();
    while refused + answered.len() < streams.len() {
        let Some(frame) = h2raw::read(&mut flood).await else {
            panic!("closed after {refused} refusals and {} answers", answered.len());
        };
        match frame.kind {
            h2raw::RST_STREAM => {
                let code = u32::from_be_bytes(frame.payload[..4].try_into().expect("4 bytes"));
                if code == h2raw::REFUSED_STREAM {
                    refused += 1;
                }
            }
            h2raw::HEADERS => {
                answered.insert(frame.stream);
            }
            h2raw::SETTINGS if frame.flags & h2raw::ACK == 0 => {
                flood
                    .write_all(&h2raw::frame(h2raw::SETTINGS, h2raw::ACK, 0, &[]))
                    .await
                    .expect("ack");
            }
            _ => {}
        }
    }
    assert_eq!((refused, answered.len()), (16, 4));
    assert_eq!(
        server.load.requests.peak(),
        4 + 1,
        "the flood's four and one good review"
    );
    let good = serde_json::to_vec(&pod_review("good")).expect("JSON").len() as u64;
    assert!(
        server.load.body_bytes.peak() <= 2 * BODY as u64 + good,
        "the flood reserved at most its connection's share: {}",
        server.load.body_bytes.peak()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_held_to_the_connection_cap() {
    let http = HttpLimits {
        max_connections: std::num::NonZeroUsize::new(4).expect("nonzero"),
        ..fast(HttpLimits::default())
    };
    let server = start(LIMIT, http).await;
    // The API server's connection is open before the flood and keeps being served.
    let mut established = server.h2().await;
    let mut flood = Vec::new();
    for _ in 0..12 {
        flood.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    wait_until("the cap is reached", || server.load.connections.current() == 4).await;
    for i in 0..5 {
        let started = Instant::now();
        let response = established
            .review("/validate", &pod_review(&format!("kept-{i}")))
            .await;
        assert_eq!(response["allowed"], true);
        assert!(started.elapsed() < GOOD, "{:?}", started.elapsed());
    }
    // A new client waits its turn: silent connections are let go at the handshake timeout,
    // three at a time, so at most four rounds.
    let started = Instant::now();
    let mut late = server.h1().await;
    assert_eq!(
        late.review("/validate", &pod_review("late")).await["allowed"],
        true
    );
    assert!(
        started.elapsed() < 4 * http.handshake_timeout + SLACK,
        "{:?}",
        started.elapsed()
    );
    eprintln!(
        "a new client behind 12 silent connections answered after {:?}",
        started.elapsed()
    );
    assert_eq!(server.load.connections.peak(), 4, "never more open than the cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_a_431_on_both_protocols() {
    let server = start(LIMIT, HttpLimits::default()).await;
    let limit = HttpLimits::default().max_header_bytes.bytes();
    // HTTP/1.1: a head past the limit.
    let mut stream = raw_tls(&server, b"http/1.1").await;
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(limit + 1024)
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.flush().await.expect("flush");
    let response = read_to_close(&mut stream).await;
    assert!(
        String::from_utf8_lossy(&response).starts_with("HTTP/1.1 431 "),
        "{:?}",
        String::from_utf8_lossy(&response)
    );
    // HTTP/2: a header list past the limit; and one within it passes.
    let mut sender = Sender::connect(&server, Alpn::H2).await;
    for (padding, expected) in [
        (limit + 1024, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        (limit / 2, StatusCode::OK),
    ] {
        let body = serde_json::to_vec(&pod_review("padded")).expect("JSON");
        let (tx, rx) = mpsc::channel(1);
        tx.try_send(Bytes::from(body)).expect("room");
        drop(tx);
        let request = sender
            .request("/validate")
            .header("x-padding", "a".repeat(padding))
            .body(ChannelBody(rx))
            .expect("request");
        let (status, _, _) = sender.send(request).await;
        assert_eq!(status, expected, "{padding} bytes of padding");
    }
    good_client_is_answered(&server, GOOD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_garbage_is_dropped_at_once() {
    let server = start(LIMIT, HttpLimits::default()).await;
    // Bytes from a linear congruential generator, and plain HTTP: neither is a ClientHello.
    let mut x: u32 = 12345;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    for garbage in [
        noise,
        b"POST /validate HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
    ] {
        let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
        let started = Instant::now();
        // The server may close before all of it is written.
        let _ = tcp.write_all(&garbage).await;
        let _ = read_to_close(&mut tcp).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        eprintln!("garbage dropped after {:?}", started.elapsed());
    }
    wait_until("the connections are gone", || {
        server.load.connections.current() == 0
    })
    .await;
    good_client_is_answered(&server, GOOD).await;
}

// ---------------------------------------------------------------------------------------------
// Idle and unresponsive peers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_at_the_idle_timeout() {
    let http = HttpLimits {
        idle_timeout: Duration::from_millis(500),
        ..HttpLimits::default()
    };
    let server = start(LIMIT, http).await;
    // HTTP/2 with no stream: a GOAWAY, then the close.
    let mut idle = h2raw::open(&server).await;
    let started = Instant::now();
    let mut goaway = false;
    while let Some(frame) = h2raw::read(&mut idle).await {
        goaway |= frame.kind == h2raw::GOAWAY;
        // A well-behaved client: it acknowledges SETTINGS and answers PINGs (the server's
        // graceful GOAWAY waits for one).
        let ack = match frame.kind {
            h2raw::SETTINGS if frame.flags & h2raw::ACK == 0 => {
                h2raw::frame(h2raw::SETTINGS, h2raw::ACK, 0, &[])
            }
            h2raw::PING if frame.flags & h2raw::ACK == 0 => {
                h2raw::frame(h2raw::PING, h2raw::ACK, 0, &frame.payload)
            }
            _ => continue,
        };
        let _ = idle.write_all(&ack).await;
        let _ = idle.flush().await;
    }
    let took = started.elapsed();
    assert!(goaway, "an HTTP/2 client is told with GOAWAY");
    eprintln!("idle HTTP/2 connection closed after {took:?}");
    assert!(
        took + Duration::from_millis(50) >= http.idle_timeout && took < http.idle_timeout + SLACK,
        "{took:?}"
    );
    // HTTP/1.1 after a request: keep-alive, then closed.
    let mut stream = raw_tls(&server, b"http/1.1").await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    stream.flush().await.expect("flush");
    let started = Instant::now();
    let response = read_to_close(&mut stream).await;
    let took = started.elapsed();
    assert!(String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200 "));
    assert!(
        took + Duration::from_millis(50) >= http.idle_timeout && took < http.idle_timeout + SLACK,
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_peer_that_stops_answering_pings_is_closed() {
    let http = HttpLimits {
        h2_keep_alive: Duration::from_millis(300),
        ..HttpLimits::default()
    };
    let server = start(LIMIT, http).await;
    // A stream in flight (its body never comes), so the connection is not idle; the peer
    // answers nothing, PINGs included.
    let mut dead = h2raw::open(&server).await;
    dead.write_all(&h2raw::post(
        1,
        "/validate",
        &[("content-length", "10".to_owned())],
        false,
    ))
    .await
    .expect("write");
    dead.flush().await.expect("flush");
    let started = Instant::now();
    let mut pings = 0;
    while let Some(frame) = h2raw::read(&mut dead).await {
        if frame.kind == h2raw::PING && frame.flags & h2raw::ACK == 0 {
            pings += 1;
        }
    }
    let took = started.elapsed();
    assert!(pings >= 1, "the server pinged");
    assert!(took < 2 * http.h2_keep_alive + SLACK, "closed after {took:?}");
    eprintln!("unresponsive HTTP/2 peer closed after {took:?}, {pings} PING(s)");
    wait_until("the stream's slot is given back", || {
        server.load.requests.current() == 0
    })
    .await;
    good_client_is_answered(&server, GOOD).await;
}

// ---------------------------------------------------------------------------------------------
// Many large bodies at once.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_wait_for_the_budget_and_all_get_answers() {
    const BODY: usize = 256 * 1024;
    let http = HttpLimits {
        body_budget: portcullis::server::limits::BodyBudget(2 * BODY),
        connection_body_budget: portcullis::server::limits::BodyBudget(2 * BODY),
        requests_in_flight: std::num::NonZeroUsize::new(3).expect("nonzero"),
        ..HttpLimits::default()
    };
    let server = Arc::new(start(BODY, http).await);
    let mut clients = Vec::new();
    for i in 0..8 {
        let server = Arc::clone(&server);
        clients.push(tokio::spawn(async move {
            let mut r = pod_review(&format!("large-{i}"));
            r["request"]["object"]["metadata"]["annotations"] = json!({"padding": "x".repeat(200 * 1024)});
            let alpn = Alpn::BOTH[i % 2];
            let response = server.client(alpn).await.review("/validate", &r).await;
            assert_eq!(response["allowed"], true, "{alpn:?}");
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    let peak = |g: &Gauge| g.peak();
    assert!(
        peak(&server.load.body_bytes) <= 2 * BODY as u64,
        "bodies held at once stay within the budget: {}",
        peak(&server.load.body_bytes)
    );
    assert!(peak(&server.load.body_bytes) >= 200 * 1024);
    assert!(
        peak(&server.load.requests) <= 3,
        "{}",
        peak(&server.load.requests)
    );
}
