//! TLS listeners: the acceptor, and the certificates and keys chosen per
//! handshake.
//!
//! A TLS listener does not hold its certificate: every handshake takes one
//! (by SNI) from the runtime snapshot it started on, so a reload that
//! replaces the files serves the new certificate on the next handshake,
//! without a restart and without touching established connections. The
//! acceptor (OpenSSL's context, with its session cache and ticket keys) is
//! built anew whenever the trusted client CAs change: a session resumed
//! from before the change would otherwise count as verified by CAs that
//! are no longer trusted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use std::any::Any;

use pingora::tls::ext::{
    ssl_add_chain_cert, ssl_set_verify_cert_store, ssl_use_certificate, ssl_use_private_key,
};
use pingora::tls::hash::MessageDigest;
use pingora::tls::nid::Nid;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::ssl::{
    select_next_proto, AlpnError, NameType, SslAcceptor, SslMethod, SslRef, SslVerifyMode,
};
use pingora::tls::x509::store::{X509Store, X509StoreBuilder};
use pingora::tls::x509::X509VerifyResult;
use pingora::tls::x509::X509;
use sha2::{Digest, Sha256};

use crate::config::ClientAuth;
use crate::core::location::{Located, Location};

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
    #[error("no certificate configured")]
    NoCertificate,
    #[error("{0} holds no PEM CA certificate")]
    Ca(String),
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// The CA certificates of a PEM file: at least one, all of them valid.
pub(crate) fn load_ca_certs(path: &Path) -> Result<Vec<X509>, TlsError> {
    let name = path.display().to_string();
    let pem = std::fs::read(path).map_err(|e| TlsError::Read(name.clone(), e))?;
    let certs = X509::stack_from_pem(&pem).map_err(|_| TlsError::Ca(name.clone()))?;
    if certs.is_empty() {
        return Err(TlsError::Ca(name));
    }
    Ok(certs)
}

/// The CAs an upstream's certificates are verified against, and their
/// fingerprint: a reload that changes the file's certificates builds a new
/// pool (and so new connections), one that leaves them keeps the old.
pub struct UpstreamCa {
    pub certs: Arc<Box<[X509]>>,
    pub fingerprint: [u8; 32],
}

impl UpstreamCa {
    pub(crate) fn load(path: &Path) -> Result<Self, TlsError> {
        let certs = load_ca_certs(path)?;
        let mut fingerprint = Sha256::new();
        for cert in &certs {
            let der = cert
                .to_der()
                .map_err(|_| TlsError::Ca(path.display().to_string()))?;
            fingerprint.update((der.len() as u64).to_be_bytes());
            fingerprint.update(der);
        }
        Ok(UpstreamCa {
            certs: Arc::new(certs.into_boxed_slice()),
            fingerprint: fingerprint.finalize().into(),
        })
    }

    /// Pingora's connection reuse key leaves the trusted CAs out: without
    /// a group of their own, a connection verified against these CAs would
    /// be reused for an upstream at the same address that trusts others
    /// (the system's, or an older file's).
    pub fn reuse_group(&self) -> u64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.fingerprint[..8]);
        u64::from_be_bytes(first) | 1
    }
}

/// A trust store of client-certificate CAs from a PEM file.
pub(crate) fn load_ca(path: &Path) -> Result<X509Store, TlsError> {
    let name = path.display().to_string();
    let certs = load_ca_certs(path)?;
    let mut builder = X509StoreBuilder::new().map_err(|_| TlsError::Ca(name.clone()))?;
    for cert in certs {
        builder
            .add_cert(cert)
            .map_err(|_| TlsError::Ca(name.clone()))?;
    }
    Ok(builder.build())
}

/// The verified client certificate of a connection, as the handshake left
/// it for the request phases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// base64url(SHA-256 of the DER certificate), RFC 8705's `x5t#S256`.
    pub x5t_s256: String,
    pub cn: Option<String>,
    pub san_uris: Vec<String>,
    pub san_dns: Vec<String>,
}

impl ClientCert {
    fn of(cert: &X509) -> Option<Self> {
        use base64::Engine;
        let digest = cert.digest(MessageDigest::sha256()).ok()?;
        let sans = cert.subject_alt_names();
        let collect = |f: fn(&pingora::tls::x509::GeneralNameRef) -> Option<&str>| -> Vec<String> {
            sans.as_ref()
                .map(|list| {
                    list.iter()
                        .filter_map(|n| f(n).map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(ClientCert {
            x5t_s256: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest),
            cn: cert
                .subject_name()
                .entries_by_nid(Nid::COMMONNAME)
                .next()
                .and_then(|e| e.data().to_string().ok()),
            san_uris: collect(|n| n.uri()),
            san_dns: collect(|n| n.dnsname()),
        })
    }
}

/// A certificate chain (leaf first) and its private key.
pub struct CertPair {
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
}

/// Loads and cross-checks a certificate chain and key, so that a wrong pair
/// is a configuration error rather than a failing handshake.
pub(crate) fn load_pair(cert: &Path, key: &Path) -> Result<CertPair, TlsError> {
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

/// A listener's certificates: the first is the default, the others are
/// chosen when the client's SNI names one of their DNS names.
pub struct CertStore {
    pairs: Vec<CertPair>,
    /// Client-certificate verification, set per handshake so that a reload
    /// can change the trusted CAs too.
    client_ca: Option<(X509Store, ClientAuth)>,
    /// SHA-256 over the CA file and the mode: what a resumed session must
    /// have been verified under.
    client_ca_fingerprint: [u8; 32],
    exact: HashMap<String, usize>,
    /// `*.example.com` certificates, keyed by `example.com`.
    wildcard: HashMap<String, usize>,
}

impl CertStore {
    /// Loads every (certificate, key) pair; names come from each leaf's
    /// DNS subject alternative names, or its CN when it has none.
    /// The listener's files as configured; an error names the place of
    /// the file it is about.
    pub fn load(
        files: &[(Located<PathBuf>, PathBuf)],
        client_ca: Option<&(Located<PathBuf>, ClientAuth)>,
    ) -> Result<Self, (Option<Location>, TlsError)> {
        let mut fingerprint = Sha256::new();
        let client_ca = match client_ca {
            Some((path, mode)) => {
                let at = || Some(path.at.clone());
                let pem = std::fs::read(&path.value)
                    .map_err(|e| (at(), TlsError::Read(path.value.display().to_string(), e)))?;
                fingerprint.update(&pem);
                fingerprint.update([*mode as u8]);
                Some((load_ca(&path.value).map_err(|e| (at(), e))?, *mode))
            }
            None => None,
        };
        let mut store = CertStore {
            client_ca,
            client_ca_fingerprint: fingerprint.finalize().into(),
            pairs: Vec::with_capacity(files.len()),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        for (i, (cert, key)) in files.iter().enumerate() {
            let pair = load_pair(&cert.value, key).map_err(|e| (Some(cert.at.clone()), e))?;
            for name in names(&pair) {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(parent) => store.wildcard.entry(parent.to_string()).or_insert(i),
                    None => store.exact.entry(name).or_insert(i),
                };
            }
            store.pairs.push(pair);
        }
        if store.pairs.is_empty() {
            return Err((None, TlsError::NoCertificate));
        }
        Ok(store)
    }

    /// The certificate for a client's SNI (exact name, then wildcard, then
    /// the default).
    pub fn select(&self, sni: Option<&str>) -> &CertPair {
        let index = sni
            .map(str::to_ascii_lowercase)
            .and_then(|name| {
                self.exact.get(&name).copied().or_else(|| {
                    name.split_once('.')
                        .and_then(|(_, parent)| self.wildcard.get(parent).copied())
                })
            })
            .unwrap_or(0);
        &self.pairs[index.min(self.pairs.len() - 1)]
    }
}

fn names(pair: &CertPair) -> Vec<String> {
    let Some(leaf) = pair.chain.first() else {
        return Vec::new();
    };
    let sans: Vec<String> = leaf
        .subject_alt_names()
        .map(|list| {
            list.iter()
                .filter_map(|n| n.dnsname().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if !sans.is_empty() {
        return sans;
    }
    leaf.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .filter_map(|e| e.data().to_string().ok())
        .collect()
}

/// A TLS listener of one runtime snapshot: its acceptor and certificates.
pub struct TlsListener {
    pub name: String,
    pub acceptor: Arc<SslAcceptor>,
    store: CertStore,
    http2: bool,
}

impl TlsListener {
    /// Takes the acceptor over from `previous` when the trusted client CAs
    /// (and the ALPN offer) are the same, so that sessions stay resumable
    /// across a reload that did not change them. `http2` offers h2 by ALPN
    /// beside http/1.1.
    pub fn new(
        name: String,
        store: CertStore,
        http2: bool,
        previous: Option<&TlsListener>,
    ) -> Result<Self, TlsError> {
        let acceptor = match previous {
            Some(p)
                if p.store.client_ca_fingerprint == store.client_ca_fingerprint
                    && p.http2 == http2 =>
            {
                p.acceptor.clone()
            }
            _ => Arc::new(acceptor(&store.client_ca_fingerprint, http2)?),
        };
        Ok(TlsListener {
            name,
            acceptor,
            store,
            http2,
        })
    }
}

/// What the admin dashboard shows of a TLS listener: never a key.
pub struct TlsSummary {
    pub http2: bool,
    /// Client certificates: `None` when not asked for.
    pub client_auth: Option<ClientAuth>,
    pub certificates: Vec<CertSummary>,
}

/// A listener certificate's leaf.
pub struct CertSummary {
    pub names: Vec<String>,
    pub subject: String,
    /// Seconds since the Unix epoch (negative before it).
    pub not_after: Option<i64>,
}

impl TlsListener {
    pub fn summary(&self) -> TlsSummary {
        TlsSummary {
            http2: self.http2,
            client_auth: self.store.client_ca.as_ref().map(|(_, mode)| *mode),
            certificates: self.store.pairs.iter().map(cert_summary).collect(),
        }
    }
}

fn cert_summary(pair: &CertPair) -> CertSummary {
    let leaf = pair.chain.first();
    let subject = leaf
        .map(|l| {
            l.subject_name()
                .entries()
                .filter_map(|e| {
                    let key = e.object().nid().short_name().ok()?;
                    let value = String::from_utf8_lossy(e.data().as_slice());
                    Some(format!("{key}={value}"))
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let not_after = leaf.and_then(|l| {
        let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
        let diff = epoch.diff(l.not_after()).ok()?;
        Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
    });
    CertSummary {
        names: names(pair),
        subject,
        not_after,
    }
}

/// Mozilla's intermediate settings, HTTP/2 (when offered) preferred by
/// ALPN, and a session id context tied to the trusted client CAs: a
/// session from another acceptor (an earlier set of CAs) is never resumed.
fn acceptor(session_context: &[u8; 32], http2: bool) -> Result<SslAcceptor, TlsError> {
    let setup = |e: pingora::tls::error::ErrorStack| TlsError::Setup(e.to_string());
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(setup)?;
    let protocols: &'static [u8] = if http2 {
        b"\x02h2\x08http/1.1"
    } else {
        b"\x08http/1.1"
    };
    builder.set_alpn_select_callback(move |_, offered| {
        select_next_proto(protocols, offered).ok_or(AlpnError::NOACK)
    });
    builder
        .set_session_id_context(session_context)
        .map_err(setup)?;
    Ok(builder.build())
}

#[async_trait]
impl TlsAccept for TlsListener {
    async fn certificate_callback(&self, ssl: &mut SslRef) {
        let store = &self.store;
        let sni = ssl.servername(NameType::HOST_NAME).map(str::to_string);
        let pair = store.select(sni.as_deref());
        let installed = pair
            .chain
            .first()
            .map_or(Ok(()), |leaf| ssl_use_certificate(ssl, leaf))
            .and_then(|_| ssl_use_private_key(ssl, &pair.key))
            .and_then(|_| {
                pair.chain
                    .iter()
                    .skip(1)
                    .try_for_each(|c| ssl_add_chain_cert(ssl, c))
            });
        if let Err(e) = installed {
            tracing::error!(listener = %self.name, "cannot install the TLS certificate: {e}");
            return;
        }
        if let Some((trusted, mode)) = &store.client_ca {
            let flags = match mode {
                ClientAuth::Required => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
                ClientAuth::Optional => SslVerifyMode::PEER,
            };
            if let Err(e) = ssl_set_verify_cert_store(ssl, trusted) {
                tracing::error!(listener = %self.name, "cannot install the client CA: {e}");
                return;
            }
            ssl.set_verify(flags);
        }
    }

    /// Records the verified client certificate for the request phases
    /// (`mtls` provider, certificate-bound tokens).
    async fn handshake_complete_callback(
        &self,
        ssl: &SslRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        if ssl.verify_result() != X509VerifyResult::OK {
            return None;
        }
        let cert = ssl.peer_certificate()?;
        ClientCert::of(&cert).map(|c| Arc::new(c) as Arc<dyn Any + Send + Sync>)
    }
}
