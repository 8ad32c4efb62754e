//! Authentication: who the caller is.
//!
//! Every provider implements [`Authenticator`] and returns the same
//! [`Identity`]; a route's providers are tried in order and the first that
//! accepts wins. When all refuse, the most specific refusal is the answer.

pub mod api_key;
pub mod apikey_gen;
pub mod bearer;
pub(crate) mod dpop;
pub(crate) mod fetch;
pub mod identity;
pub(crate) mod introspection;
pub mod jwks;
pub mod jwt;
pub mod jwt_auth;
pub(crate) mod mtls;
pub(crate) mod signature;

use std::sync::Arc;

use async_trait::async_trait;

pub use identity::{AuthError, AuthMethod, Identity};

use crate::config::{AuthKind, AuthProvider};
use crate::observe::Observer;

/// What a provider may look at in a request.
pub struct Credentials<'a> {
    pub headers: &'a http::HeaderMap,
    pub query: Option<&'a str>,
    /// The connection's verified client certificate, if any.
    pub client_cert: Option<&'a crate::tls::ClientCert>,
    /// Where one-time `jti`s are recorded; without it a provider that
    /// needs it fails closed.
    pub once: Option<&'a dyn crate::core::once::SeenOnce>,
    /// The canonical request a DPoP proof must be for; without it no proof
    /// is valid.
    pub target: Option<RequestTarget<'a>>,
}

/// What a DPoP proof's `htm` and `htu` are compared with: the canonical
/// request (CONTRACT §8).
#[derive(Debug, Clone, Copy)]
pub struct RequestTarget<'a> {
    pub method: &'a http::Method,
    /// From the listener, or `x-forwarded-proto` from a trusted proxy.
    pub https: bool,
    /// Lower-case, without port and trailing dot.
    pub host: &'a str,
    /// The port the request named, if any.
    pub port: Option<u16>,
    /// The normalized path, without query.
    pub path: &'a str,
}

impl RequestTarget<'_> {
    /// Whether `htu` names this request: same scheme, host and effective
    /// port (a default port may be given or not), and the same path once
    /// normalized; query and fragment are ignored (RFC 9449 §4.3).
    pub fn matches_htu(&self, htu: &str) -> bool {
        let htu = htu.split_once('#').map_or(htu, |(before, _)| before);
        let Ok(uri) = htu.parse::<http::Uri>() else {
            return false;
        };
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return false;
        };
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return false,
        };
        if authority.as_str().contains('@') || https != self.https {
            return false;
        }
        let default_port = if https { 443 } else { 80 };
        let host = authority.host().to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        if host != self.host
            || authority.port_u16().unwrap_or(default_port) != self.port.unwrap_or(default_port)
        {
            return false;
        }
        let path = match uri.path() {
            "" => "/",
            p => p,
        };
        crate::core::normalize::normalize_path(path).is_ok_and(|p| p == self.path)
    }
}

impl<'a> Credentials<'a> {
    /// The credentials of a request known only by its headers (tools,
    /// benchmarks): no replay cache, no DPoP target.
    pub fn of_headers(headers: &'a http::HeaderMap) -> Self {
        Credentials {
            headers,
            query: None,
            client_cert: None,
            once: None,
            target: None,
        }
    }
}

#[async_trait]
pub trait Authenticator: Send + Sync {
    fn name(&self) -> &str {
        &self.config().name
    }
    fn method(&self) -> AuthMethod;
    /// Bearer providers answer 401s with RFC 6750 `WWW-Authenticate`.
    fn is_bearer(&self) -> bool {
        matches!(self.method(), AuthMethod::Jwt | AuthMethod::Introspection)
    }
    /// Whether the credential reaches the upstream.
    fn forward_credentials(&self) -> bool;
    /// The header that carries the credential (removed before forwarding
    /// unless `forward_credentials`).
    fn credential_header(&self) -> &http::HeaderName {
        &http::header::AUTHORIZATION
    }
    /// A query parameter that carries the credential; always removed before
    /// forwarding.
    fn credential_query(&self) -> Option<&str> {
        None
    }
    /// The configuration it was built from: a reload keeps a provider (its
    /// keys, caches) when this did not change.
    fn config(&self) -> &AuthProvider;
    async fn authenticate(&self, request: &Credentials<'_>) -> Result<Arc<Identity>, AuthError>;
    /// Work before the provider takes traffic (e.g. the first key fetch).
    async fn prepare(&self) {}
    /// Starts periodic work (key refresh); runs inside a Tokio runtime.
    fn start_background(self: Arc<Self>) {}
    /// For the admin `/status`.
    fn status(&self) -> serde_json::Value;
    /// The proof algorithms of the `WWW-Authenticate: DPoP` challenge,
    /// when the provider takes DPoP.
    fn dpop_algs(&self) -> Option<&str> {
        None
    }
}

/// A route's providers tried in order: the first that accepts wins. When
/// all refuse, the most specific refusal and the provider that gave it;
/// `None` when the route has no provider left.
pub async fn first_accepting<'p>(
    providers: impl Iterator<Item = &'p Arc<dyn Authenticator>>,
    credentials: &Credentials<'_>,
) -> Result<
    (Arc<Identity>, &'p Arc<dyn Authenticator>),
    Option<(&'p Arc<dyn Authenticator>, AuthError)>,
> {
    let mut refusal: Option<(&Arc<dyn Authenticator>, AuthError)> = None;
    for provider in providers {
        match provider.authenticate(credentials).await {
            Ok(identity) => return Ok((identity, provider)),
            Err(e) => {
                if refusal.as_ref().is_none_or(|(_, worst)| e.outranks(worst)) {
                    refusal = Some((provider, e));
                }
            }
        }
    }
    Err(refusal)
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("auth provider `{0}`: {1}")]
    Jwt(String, jwt_auth::RefreshError),
}

/// Builds a provider from its configuration.
pub fn build(
    provider: &AuthProvider,
    observer: &Arc<Observer>,
) -> Result<Arc<dyn Authenticator>, BuildError> {
    Ok(match &provider.kind {
        AuthKind::Jwt(jwt) => Arc::new(
            jwt_auth::JwtAuthenticator::new(provider.clone(), jwt.clone(), observer.clone())
                .map_err(|e| BuildError::Jwt(provider.name.clone(), e))?,
        ),
        AuthKind::Introspection(cfg) => Arc::new(introspection::IntrospectionAuthenticator::new(
            provider.clone(),
            cfg.clone(),
        )),
        AuthKind::ApiKey(cfg) => Arc::new(api_key::ApiKeyAuthenticator::new(
            provider.clone(),
            cfg.clone(),
        )),
        AuthKind::Mtls(cfg) => {
            Arc::new(mtls::MtlsAuthenticator::new(provider.clone(), cfg.clone()))
        }
    })
}
