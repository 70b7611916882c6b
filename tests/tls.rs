//! TLS as the kube-apiserver meets it: TLS 1.3 and 1.2 both handshake, only a client trusting
//! the generated CA (for a name in the certificate) gets through, and ALPN settles on h2 or
//! http/1.1 as offered, with the server preferring h2. With `--client-ca`, only a client
//! presenting a certificate from that CA gets through, on either version, with ALPN unchanged.

mod common;

use common::{
    Alpn, Client, ClientIdentity, Knobs, SERVER_NAME, TestServer, Workspace, client_config, client_config_as,
    rustls_error, tls_connect, wat_fixture,
};
use hyper::StatusCode;
use portcullis::app;
use rustls::{AlertDescription, CertificateError, ProtocolVersion};
use tokio::sync::OnceCell;

static SERVER: OnceCell<TestServer> = OnceCell::const_new();
static MTLS_SERVER: OnceCell<TestServer> = OnceCell::const_new();

const ALLOW_ALL: &str = "policies:\n  - {name: allow-all, module: allow_all.wasm}\n";

/// The subject of the client CA the mTLS server trusts.
const CLIENT_CA: &str = "Portcullis test client CA";

async fn server() -> &'static TestServer {
    SERVER
        .get_or_init(|| async {
            TestServer::start(ALLOW_ALL, &[("allow_all.wasm", wat_fixture("allow_all"))]).await
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

/// A server started with `--client-ca`; its harness clients present a certificate from it.
async fn mtls_server() -> &'static TestServer {
    MTLS_SERVER
        .get_or_init(|| async {
            TestServer::start_requiring(
                Some(ALLOW_ALL),
                &[("allow_all.wasm", wat_fixture("allow_all"))],
                Knobs::default(),
                Some(ClientIdentity::generate(CLIENT_CA, "kube-apiserver")),
            )
            .await
        })
        .await
}

static VERSIONS: [&[&rustls::SupportedProtocolVersion]; 2] =
    [&[&rustls::version::TLS13], &[&rustls::version::TLS12]];

/// Connects to the mTLS server with `config` and returns the error that ends the exchange.
/// Under TLS 1.2 the server's verdict on the client certificate ends the handshake itself;
/// under TLS 1.3 the client has finished its side of the handshake when it sends its
/// certificate, so the verdict arrives as an alert on the first read.
async fn refused(config: std::sync::Arc<rustls::ClientConfig>) -> std::io::Error {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = mtls_server().await;
    let mut stream = match tls_connect(server.addr, config, SERVER_NAME).await {
        Ok(stream) => stream,
        Err(error) => return error,
    };
    if let Err(error) = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
    {
        return error;
    }
    let mut answer = [0u8; 256];
    match tokio::time::timeout(common::STEP, stream.read(&mut answer))
        .await
        .expect("the server answers or closes in time")
    {
        Err(error) => error,
        Ok(n) => panic!(
            "served without a valid client certificate: {:?}",
            String::from_utf8_lossy(&answer[..n])
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_the_client_ca_is_served() {
    let server = mtls_server().await;
    let identity = server
        .identity
        .as_ref()
        .expect("the mTLS server has a client identity");
    for (versions, version) in VERSIONS
        .iter()
        .zip([ProtocolVersion::TLSv1_3, ProtocolVersion::TLSv1_2])
    {
        for alpn in Alpn::BOTH {
            let offer: &[&[u8]] = match alpn {
                Alpn::H2 => &[b"h2"],
                Alpn::Http1 => &[b"http/1.1"],
            };
            let config = client_config_as(server.ca_pem(), offer, versions, Some(identity));
            let stream = tls_connect(server.addr, config, SERVER_NAME)
                .await
                .unwrap_or_else(|e| panic!("{version:?} {alpn:?}: {e}"));
            let mut client = Client::handshake(stream, alpn).await.expect("HTTP handshake");
            assert_eq!(client.tls_version, Some(version));
            assert_eq!(
                client.alpn.as_deref(),
                Some(offer[0]),
                "ALPN is unchanged by mTLS"
            );
            let reply = client.get("/healthz").await;
            assert_eq!((reply.status, reply.text().as_str()), (StatusCode::OK, "ok"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_fails_the_handshake() {
    let server = mtls_server().await;
    for versions in VERSIONS {
        let config = client_config(server.ca_pem(), &[b"h2"], versions);
        let error = refused(config).await;
        // rustls's server sends certificate_required for an empty client Certificate message,
        // under TLS 1.2 as under 1.3.
        assert_eq!(
            rustls_error(&error),
            Some(&rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired
            )),
            "{versions:?}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_fails_the_handshake() {
    let server = mtls_server().await;
    // Another subject: the chain leads to no CA the server trusts.
    let stranger = ClientIdentity::generate("Some other client CA", "kube-apiserver");
    // The same subject as the trusted CA but another key: the signature does not verify.
    let impostor = ClientIdentity::generate(CLIENT_CA, "kube-apiserver");
    for versions in VERSIONS {
        let config = client_config_as(server.ca_pem(), &[b"h2"], versions, Some(&stranger));
        let error = refused(config).await;
        assert_eq!(
            rustls_error(&error),
            Some(&rustls::Error::AlertReceived(AlertDescription::UnknownCA)),
            "{versions:?}: {error}"
        );
        let config = client_config_as(server.ca_pem(), &[b"h2"], versions, Some(&impostor));
        let error = refused(config).await;
        assert_eq!(
            rustls_error(&error),
            Some(&rustls::Error::AlertReceived(AlertDescription::DecryptError)),
            "{versions:?}: {error}"
        );
    }
    // The server is unharmed.
    let mut client = server.h2().await;
    assert_eq!(client.get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_client_ca_file_is_a_start_up_error_naming_it() {
    let ws = Workspace::new(Some(ALLOW_ALL), &[("allow_all.wasm", wat_fixture("allow_all"))]);
    let garbage = ws.dir.path().join("garbage.crt");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let empty = ws.dir.path().join("empty.crt");
    std::fs::write(&empty, "no PEM block here\n").expect("write");
    let missing = ws.dir.path().join("missing.crt");
    for (path, expected) in [
        (&missing, "cannot read the client CA file"),
        (&garbage, "cannot read the client CA file"),
        (&empty, "holds no CERTIFICATE block"),
    ] {
        let mut options = ws.options(Knobs::default());
        options.client_ca = Some(path.clone());
        let prepared = tokio::task::spawn_blocking(move || app::prepare(&options))
            .await
            .expect("prepare task");
        let Err(error) = prepared else {
            panic!("{} was accepted as a client CA", path.display());
        };
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(expected), "{message}");
    }
}
