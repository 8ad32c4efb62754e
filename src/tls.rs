//! Certificates and keys of TLS listeners.

use std::path::Path;

use pingora::tls::pkey::{PKey, Private};
use pingora::tls::x509::X509;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0} holds no PEM certificate")]
    Cert(String),
    #[error("{0} holds no PEM private key")]
    Key(String),
    #[error("the private key {0} does not belong to the certificate {1}")]
    Mismatch(String, String),
}

/// A certificate chain (leaf first) and its private key.
pub struct CertPair {
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
}

/// Loads and cross-checks a certificate chain and key, so that a wrong pair
/// is a configuration error rather than a failing handshake.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertPair, TlsError> {
    let name = |p: &Path| p.display().to_string();
    let cert_pem = std::fs::read(cert).map_err(|e| TlsError::Read(name(cert), e))?;
    let key_pem = std::fs::read(key).map_err(|e| TlsError::Read(name(key), e))?;
    let chain = X509::stack_from_pem(&cert_pem).map_err(|_| TlsError::Cert(name(cert)))?;
    let leaf = chain.first().ok_or_else(|| TlsError::Cert(name(cert)))?;
    let key_pair = PKey::private_key_from_pem(&key_pem).map_err(|_| TlsError::Key(name(key)))?;
    let matches = leaf
        .public_key()
        .map(|public| public.public_eq(&key_pair))
        .unwrap_or(false);
    if !matches {
        return Err(TlsError::Mismatch(name(key), name(cert)));
    }
    Ok(CertPair {
        chain,
        key: key_pair,
    })
}
