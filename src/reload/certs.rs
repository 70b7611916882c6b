//! Certificate reload: when the serving certificate or key files change, load the new pair and
//! hand it to the [`CertResolver`]; when the new pair is broken, keep serving the old one.
//!
//! New handshakes use the new pair; connections already open keep theirs (TLS authenticates
//! once). A rotation that writes the certificate and the key one after the other may be seen
//! half done: the certificate of the new pair with the key of the old. That pair is refused
//! like any broken one, and the write of the key is a change of its own that is tried next.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::reload::fingerprint::{Fingerprint, Prints};
use crate::server::tls::{self, CertResolver, TlsError};

/// Why a new certificate pair was refused (the old one keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum CertReloadError {
    /// The files do not hold a certificate chain and a matching key.
    #[error("new certificate pair refused, the old one keeps serving: {0}")]
    Load(#[source] TlsError),
    /// The blocking task that read the files did not finish.
    #[error("the certificate reload task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// What a check found.
#[derive(Debug)]
pub enum CertCheck {
    /// The files hold the bytes they held at the last check.
    Unchanged,
    /// A new pair loaded and serves from the next handshake on; its certificate chain, leaf
    /// first.
    Serving(Vec<CertificateDer<'static>>),
}

/// The certificate and key files, what was last read from them, and where a good pair goes.
pub struct CertReload {
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<CertResolver>,
    last: Fingerprint,
}

impl CertReload {
    /// Reloads `cert` and `key` into `resolver`; the pair serving now was loaded from them
    /// after [`fingerprint`] gave `print`.
    pub fn new(cert: PathBuf, key: PathBuf, resolver: Arc<CertResolver>, print: Fingerprint) -> Self {
        let last = print;
        Self {
            cert,
            key,
            resolver,
            last,
        }
    }

    /// The directories whose changes may change the pair.
    pub fn dirs(&self) -> Vec<PathBuf> {
        [&self.cert, &self.key].into_iter().map(|p| parent(p)).collect()
    }

    /// Reads the files; when their bytes differ from the last read, loads the pair and, when it
    /// loads, serves it. Blocking (file reads): call it from a blocking thread.
    pub fn check(&mut self) -> Result<CertCheck, CertReloadError> {
        let now = fingerprint(&self.cert, &self.key);
        if now == self.last {
            return Ok(CertCheck::Unchanged);
        }
        // A refused pair is not retried until the files change again.
        self.last = now;
        let key = tls::load_certified_key(&self.cert, &self.key).map_err(CertReloadError::Load)?;
        let chain = key.cert.clone();
        self.resolver.replace(key);
        Ok(CertCheck::Serving(chain))
    }
}

/// The fingerprint of the certificate and key files. Taken before the pair is loaded: a write
/// in between makes the next check differ and load again, where the other order could take the
/// new bytes for already loaded.
pub fn fingerprint(cert: &Path, key: &Path) -> Fingerprint {
    let mut prints = Prints::new();
    prints.file(cert);
    prints.file(key);
    prints.finish()
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
