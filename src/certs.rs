//! TLS material for the webhook: a private CA and a serving certificate signed by it, with the
//! host names and IP addresses the API server will dial as subject alternative names.
//!
//! The API server trusts the webhook through the `caBundle` of the webhook configurations, so
//! the CA certificate is what gets printed (base64) for `deploy/`. The CA key is never written:
//! new material means a new CA, which keeps the blast radius of a leaked directory small.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// File names inside a certificate directory.
pub const CA_FILE: &str = "ca.crt";
/// The serving certificate.
pub const CERT_FILE: &str = "tls.crt";
/// The serving key.
pub const KEY_FILE: &str = "tls.key";
/// The client certificate, when one is asked for (`--client`).
pub const CLIENT_CERT_FILE: &str = "client.crt";
/// The client key.
pub const CLIENT_KEY_FILE: &str = "client.key";

/// How long generated certificates are valid.
const VALIDITY_DAYS: i64 = 365;

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// No host was given.
    #[error("at least one --host is needed")]
    NoHosts,
    /// A host is neither an IP address nor a valid DNS name.
    #[error("invalid host `{host}`: {reason}")]
    InvalidHost {
        /// The host as given.
        host: String,
        /// Why.
        reason: String,
    },
    /// rcgen failed.
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A CA certificate and a serving certificate and key, PEM-encoded.
#[derive(Clone)]
pub struct CertBundle {
    /// The CA certificate (the `caBundle`).
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving key (PKCS#8). Never logged.
    pub key_pem: String,
    /// A client certificate signed by the same CA, when one was asked for.
    pub client: Option<ClientPair>,
}

/// A client certificate (`clientAuth`) and its key, PEM-encoded: what the API server presents
/// to a webhook started with `--client-ca`.
#[derive(Clone)]
pub struct ClientPair {
    /// The certificate.
    pub cert_pem: String,
    /// The key (PKCS#8). Never logged.
    pub key_pem: String,
}

impl std::fmt::Debug for ClientPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPair")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CertBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertBundle")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Where a bundle's files are.
#[derive(Clone, Debug)]
pub struct CertPaths {
    /// `ca.crt`.
    pub ca: PathBuf,
    /// `tls.crt`.
    pub cert: PathBuf,
    /// `tls.key`.
    pub key: PathBuf,
    /// `client.crt` and `client.key`, when the bundle has a client pair.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl CertPaths {
    /// The standard file names inside `dir` (no client pair).
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join(CA_FILE),
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
            client: None,
        }
    }
}

fn san(host: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let invalid = |reason: &str| CertError::InvalidHost {
        host: host.to_owned(),
        reason: reason.to_owned(),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(invalid("not an IP address or DNS name"));
    }
    let name = host
        .to_ascii_lowercase()
        .try_into()
        .map_err(|e: rcgen::Error| invalid(&e.to_string()))?;
    Ok(SanType::DnsName(name))
}

/// Generates a CA and a serving certificate for `hosts` (DNS names and IP addresses).
pub fn generate(hosts: &[String]) -> Result<CertBundle, CertError> {
    generate_with_client(hosts, None)
}

/// [`generate`], and with `client` a client certificate for that name (its common name),
/// signed by the same CA: the CA is then also what `serve --client-ca` trusts.
pub fn generate_with_client(hosts: &[String], client: Option<&str>) -> Result<CertBundle, CertError> {
    if hosts.is_empty() {
        return Err(CertError::NoHosts);
    }
    let sans = hosts.iter().map(|h| san(h)).collect::<Result<Vec<_>, _>>()?;
    let now = time::OffsetDateTime::now_utc();
    let not_before = now - time::Duration::hours(1);
    let not_after = now + time::Duration::days(VALIDITY_DAYS);

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "Portcullis webhook CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name
        .push(DnType::CommonName, hosts[0].as_str());
    leaf.subject_alt_names = sans;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let cert = leaf.signed_by(&key, &issuer)?;

    let client = match client {
        None => None,
        Some(name) => {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.not_before = not_before;
            params.not_after = not_after;
            let cert = params.signed_by(&key, &issuer)?;
            Some(ClientPair {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            })
        }
    };

    Ok(CertBundle {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        client,
    })
}

impl CertBundle {
    /// Writes `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`, creating it, and
    /// `client.crt` and `client.key` (mode 0600) when the bundle has a client pair.
    pub fn write(&self, dir: &Path) -> Result<CertPaths, CertError> {
        let mut paths = CertPaths::in_dir(dir);
        let fail = |path: &Path| {
            let path = path.display().to_string();
            move |source| CertError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(fail(dir))?;
        std::fs::write(&paths.ca, &self.ca_pem).map_err(fail(&paths.ca))?;
        std::fs::write(&paths.cert, &self.cert_pem).map_err(fail(&paths.cert))?;
        write_private(&paths.key, self.key_pem.as_bytes()).map_err(fail(&paths.key))?;
        if let Some(client) = &self.client {
            let (cert, key) = (dir.join(CLIENT_CERT_FILE), dir.join(CLIENT_KEY_FILE));
            std::fs::write(&cert, &client.cert_pem).map_err(fail(&cert))?;
            write_private(&key, client.key_pem.as_bytes()).map_err(fail(&key))?;
            paths.client = Some((cert, key));
        }
        Ok(paths)
    }

    /// The CA certificate as the base64 `caBundle` of a webhook configuration.
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// The hosts `serve` puts in certificates it creates on its own: loopback for local use and
/// the in-cluster service names of `deploy/`.
pub fn default_hosts() -> Vec<String> {
    [
        "localhost",
        "127.0.0.1",
        "::1",
        "portcullis",
        "portcullis.portcullis.svc",
        "portcullis.portcullis.svc.cluster.local",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Ensures `dir` holds a certificate and key, generating a bundle for [`default_hosts`] when
/// either is missing. Returns the paths and whether new material was written.
pub fn ensure(dir: &Path) -> Result<(CertPaths, bool), CertError> {
    let paths = CertPaths::in_dir(dir);
    if paths.cert.exists() && paths.key.exists() {
        return Ok((paths, false));
    }
    let paths = generate(&default_hosts())?.write(dir)?;
    Ok((paths, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_become_ip_or_dns_sans() {
        assert!(matches!(san("127.0.0.1"), Ok(SanType::IpAddress(_))));
        assert!(matches!(san("::1"), Ok(SanType::IpAddress(_))));
        assert!(matches!(
            san("portcullis.portcullis.svc"),
            Ok(SanType::DnsName(_))
        ));
        for bad in ["", "a..b", "-a.b", "a_b.c", "with space"] {
            assert!(matches!(san(bad), Err(CertError::InvalidHost { .. })), "{bad}");
        }
        assert!(matches!(generate(&[]), Err(CertError::NoHosts)));
    }

    /// The client pair verifies against the CA file as `serve --client-ca` loads it; the
    /// serving certificate, from the same CA, does not (it is not for client authentication).
    #[test]
    fn the_client_pair_is_what_client_ca_accepts() {
        use rustls::pki_types::{CertificateDer, UnixTime, pem::PemObject as _};
        let bundle = generate_with_client(&["localhost".into()], Some("kube-apiserver")).expect("generate");
        let dir = std::env::temp_dir().join(format!("portcullis-client-certs-{}", std::process::id()));
        let paths = bundle.write(&dir).expect("write");
        let (client_cert, client_key) = paths.client.clone().expect("client paths");
        assert!(client_key.exists());
        let crate::server::tls::ClientAuth::Required(verifier) =
            crate::server::tls::load_client_ca(&paths.ca).expect("the CA loads")
        else {
            panic!("a client CA requires client certificates");
        };
        let der = |path: &Path| CertificateDer::from_pem_file(path).expect("certificate PEM");
        verifier
            .verify_client_cert(&der(&client_cert), &[], UnixTime::now())
            .expect("the client certificate verifies");
        let refused = verifier.verify_client_cert(&der(&paths.cert), &[], UnixTime::now());
        assert!(
            matches!(
                refused,
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::InvalidPurpose
                        | rustls::CertificateError::InvalidPurposeContext { .. }
                ))
            ),
            "{refused:?}"
        );
        assert!(!format!("{bundle:?}").contains("PRIVATE KEY"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn generated_pair_loads_into_rustls() {
        let bundle = generate(&["localhost".into(), "127.0.0.1".into()]).expect("generate");
        let dir = std::env::temp_dir().join(format!("portcullis-certs-{}", std::process::id()));
        let paths = bundle.write(&dir).expect("write");
        let key = crate::server::tls::load_certified_key(&paths.cert, &paths.key).expect("loads");
        assert_eq!(key.cert.len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&paths.key).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            !format!("{bundle:?}").contains("PRIVATE KEY"),
            "Debug must not print the key"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
