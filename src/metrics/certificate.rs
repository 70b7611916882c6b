//! When the serving certificate expires: the leaf's `notAfter`, read from its DER.
//!
//! rustls serves the chain without parsing dates, so the expiry gauge reads them itself, once
//! per certificate load rather than per scrape.

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// Why a certificate's expiry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExpiryError {
    /// The chain has no certificate.
    #[error("the certificate chain is empty")]
    EmptyChain,
    /// The leaf is not a DER X.509 certificate.
    #[error("the serving certificate cannot be parsed")]
    Parse(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
}

/// The leaf's `notAfter` (the first certificate of `chain`), in seconds since the Unix epoch.
pub fn not_after(chain: &[CertificateDer<'_>]) -> Result<i64, ExpiryError> {
    let leaf = chain.first().ok_or(ExpiryError::EmptyChain)?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(ExpiryError::Parse)?;
    Ok(cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_leafs_not_after() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2031, 7, 14);
        let cert = params.self_signed(&key).expect("certificate");
        let chain = [cert.der().clone()];
        // 2031-07-14T00:00:00Z
        assert_eq!(not_after(&chain).expect("parses"), 1_941_753_600);
        assert!(matches!(not_after(&[]), Err(ExpiryError::EmptyChain)));
        let garbage = [CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01])];
        assert!(matches!(not_after(&garbage), Err(ExpiryError::Parse(_))));
    }
}
