//! TLS as the kube-apiserver meets it: TLS 1.3 and 1.2 both handshake, only a client trusting
//! the generated CA (for a name in the certificate) gets through, and ALPN settles on h2 or
//! http/1.1 as offered, with the server preferring h2.

mod common;

use common::{Alpn, Client, SERVER_NAME, TestServer, client_config, rustls_error, tls_connect, wat_fixture};
use hyper::StatusCode;
use rustls::{CertificateError, ProtocolVersion};
use tokio::sync::OnceCell;

static SERVER: OnceCell<TestServer> = OnceCell::const_new();

async fn server() -> &'static TestServer {
    SERVER
        .get_or_init(|| async {
            TestServer::start(
                "policies:\n  - {name: allow-all, module: allow_all.wasm}\n",
                &[("allow_all.wasm", wat_fixture("allow_all"))],
            )
            .await
        })
        .await
}

/// Connects with `versions` and `alpn`, then checks `/healthz` over the result.
async fn connect(
    versions: &[&'static rustls::SupportedProtocolVersion],
    offer: &[&[u8]],
    speak: Alpn,
) -> Client {
    let server = server().await;
    let config = client_config(server.ca_pem(), offer, versions);
    let stream = tls_connect(server.addr, config, SERVER_NAME)
        .await
        .expect("handshake");
    let mut client = Client::handshake(stream, speak).await.expect("HTTP handshake");
    let reply = client.get("/healthz").await;
    assert_eq!((reply.status, reply.text().as_str()), (StatusCode::OK, "ok"));
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_handshakes() {
    let client = connect(&[&rustls::version::TLS13], &[b"h2"], Alpn::H2).await;
    assert_eq!(client.tls_version, Some(ProtocolVersion::TLSv1_3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_handshakes() {
    let client = connect(&[&rustls::version::TLS12], &[b"http/1.1"], Alpn::Http1).await;
    assert_eq!(client.tls_version, Some(ProtocolVersion::TLSv1_2));
    let client = connect(&[&rustls::version::TLS12], &[b"h2"], Alpn::H2).await;
    assert_eq!(client.tls_version, Some(ProtocolVersion::TLSv1_2));
    assert_eq!(client.alpn.as_deref(), Some(&b"h2"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_offering_both_gets_the_newest_version() {
    let client = connect(rustls::DEFAULT_VERSIONS, &[b"h2"], Alpn::H2).await;
    assert_eq!(client.tls_version, Some(ProtocolVersion::TLSv1_3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_another_ca_fails_the_handshake() {
    let server = server().await;
    // A CA of another subject: the chain leads nowhere the client trusts.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Some other CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let stranger = params.self_signed(&key).expect("self-signed CA").pem();
    let config = client_config(&stranger, &[b"h2"], rustls::DEFAULT_VERSIONS);
    let error = tls_connect(server.addr, config, SERVER_NAME)
        .await
        .expect_err("must not trust the server");
    assert_eq!(
        rustls_error(&error),
        Some(&rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
        )),
        "{error}"
    );
    // Another generated CA has the same subject but another key: the signature does not verify.
    let other = portcullis::certs::generate(&[SERVER_NAME.to_owned()]).expect("another CA");
    let config = client_config(&other.ca_pem, &[b"h2"], rustls::DEFAULT_VERSIONS);
    let error = tls_connect(server.addr, config, SERVER_NAME)
        .await
        .expect_err("must not trust the server");
    assert_eq!(
        rustls_error(&error),
        Some(&rustls::Error::InvalidCertificate(CertificateError::BadSignature)),
        "{error}"
    );
    // The server is unharmed.
    connect(rustls::DEFAULT_VERSIONS, &[b"h2"], Alpn::H2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_outside_the_certificate_fails_the_handshake() {
    let server = server().await;
    let config = client_config(server.ca_pem(), &[b"h2"], rustls::DEFAULT_VERSIONS);
    let error = tls_connect(server.addr, config, "portcullis.example.com")
        .await
        .expect_err("the certificate is not for that name");
    assert!(
        matches!(
            rustls_error(&error),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{error}"
    );
    // The IP address is in the certificate too.
    let config = client_config(server.ca_pem(), &[b"h2"], rustls::DEFAULT_VERSIONS);
    tls_connect(server.addr, config, "127.0.0.1")
        .await
        .expect("127.0.0.1 is a SAN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_negotiates_what_the_client_offers() {
    let h2 = connect(rustls::DEFAULT_VERSIONS, &[b"h2"], Alpn::H2).await;
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    let h1 = connect(rustls::DEFAULT_VERSIONS, &[b"http/1.1"], Alpn::Http1).await;
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    // Offered both, in the client's order of preference, the server picks h2.
    let both = connect(rustls::DEFAULT_VERSIONS, &[b"http/1.1", b"h2"], Alpn::H2).await;
    assert_eq!(both.alpn.as_deref(), Some(&b"h2"[..]));
    // No ALPN at all: nothing is negotiated and HTTP/1.1 still works.
    let none = connect(rustls::DEFAULT_VERSIONS, &[], Alpn::Http1).await;
    assert_eq!(none.alpn, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_alpn_protocol_is_refused() {
    let server = server().await;
    let config = client_config(server.ca_pem(), &[b"spdy/3"], rustls::DEFAULT_VERSIONS);
    let error = tls_connect(server.addr, config, SERVER_NAME)
        .await
        .expect_err("no protocol in common");
    assert!(
        matches!(
            rustls_error(&error),
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::NoApplicationProtocol
            ))
        ),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_not_served() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = server().await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    // The server answers a plaintext request with (at most) a TLS alert, then closes.
    let read = tokio::time::timeout(common::STEP, tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server must close the connection");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}
