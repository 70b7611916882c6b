//! TLS for the webhook: rustls with TLS 1.2 and 1.3, ALPN for HTTP/2 and HTTP/1.1, a
//! certificate resolver whose key pair can be swapped atomically, and optionally client
//! certificates required from one CA (mutual TLS).
//!
//! The `ServerConfig` is built once; rotating certificates (`reload::certs`) only swaps the
//! [`CertResolver`]'s key, and a pair that fails to load leaves the old one serving.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or parsed.
    #[error("cannot read certificate chain {path}: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The key file could not be read or parsed.
    #[error("cannot read private key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration or the key.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA file could not be read, or holds a malformed PEM block.
    #[error("cannot read the client CA file {path}")]
    ClientCaRead {
        /// The file.
        path: String,
        /// What went wrong.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The client CA file holds no certificate.
    #[error("the client CA file {path} holds no CERTIFICATE block")]
    ClientCaEmpty {
        /// The file.
        path: String,
    },
    /// A certificate of the client CA file cannot be a trust anchor.
    #[error("the client CA file {path} holds a certificate that cannot be trusted as a CA")]
    ClientCaInvalid {
        /// The file.
        path: String,
        /// What webpki said.
        #[source]
        source: rustls::Error,
    },
    /// rustls would not build a client verifier over the client CA file's certificates.
    #[error("cannot verify client certificates against {path}")]
    ClientVerifier {
        /// The file.
        path: String,
        /// What rustls said.
        #[source]
        source: VerifierBuilderError,
    },
}

/// Whether the server asks for client certificates.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// No client certificate is asked for (the API server authenticates the webhook, not the
    /// other way round).
    None,
    /// Every client must present a certificate that chains to the CA the verifier holds.
    Required(Arc<dyn ClientCertVerifier>),
}

/// A verifier requiring client certificates that chain to a CA of the PEM file `path`
/// (`--client-ca`).
pub fn load_client_ca(path: &Path) -> Result<ClientAuth, TlsError> {
    let name = || path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::ClientCaRead { path: name(), source })?;
    if certs.is_empty() {
        return Err(TlsError::ClientCaEmpty { path: name() });
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|source| TlsError::ClientCaInvalid { path: name(), source })?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|source| TlsError::ClientVerifier { path: name(), source })?;
    Ok(ClientAuth::Required(verifier))
}

/// The crypto provider Portcullis uses everywhere (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a PEM certificate chain and PEM private key into a key pair rustls can serve.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_err = |reason: String| TlsError::Certificate {
        path: cert.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block found".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError::Key {
            path: key.display().to_string(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: format!("does not match the certificate: {e}"),
    })?;
    Ok(certified)
}

/// Serves whichever key pair is current; [`CertResolver::replace`] swaps it atomically.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    /// A resolver serving `key`.
    pub fn new(key: CertifiedKey) -> Self {
        Self {
            current: ArcSwap::from_pointee(key),
        }
    }

    /// Serves `key` from the next handshake on; handshakes under way finish with the old one.
    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The server configuration: TLS 1.3 and 1.2, client certificates as `client_auth` says,
/// ALPN h2 then http/1.1.
pub fn server_config(
    resolver: Arc<CertResolver>,
    client_auth: ClientAuth,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required(verifier) => builder.with_client_cert_verifier(verifier),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
