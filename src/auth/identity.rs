//! Who the caller is, as every authentication provider reports it.

use std::sync::{Arc, OnceLock};

use http::HeaderValue;

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Jwt,
    ApiKey,
    Mtls,
    Introspection,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Mtls => "mtls",
            AuthMethod::Introspection => "introspection",
        }
    }
}

/// The authenticated caller. Shared (`Arc`) because cached identities are
/// handed to many requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub method: AuthMethod,
    /// The configured provider that accepted the credential.
    pub provider: Arc<str>,
    pub subject: String,
    pub consumer: Option<String>,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    /// The token's claims (JWT, introspection); empty otherwise.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Made from the fields above on first use.
    pub forwarded: ForwardedHeaders,
}

/// The identity's header values for the upstream, made once and then
/// shared by every request a cached identity serves.
#[derive(Debug, Clone, Default)]
pub struct ForwardedHeaders(OnceLock<Vec<(&'static str, HeaderValue)>>);

impl PartialEq for ForwardedHeaders {
    /// Derived from the identity's other fields, so never a difference.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The headers that carry an identity to the upstream (CONTRACT §5); a
/// client's own copies are always removed before these are set.
pub const IDENTITY_HEADERS: [&str; 5] = [
    "x-auth-method",
    "x-auth-subject",
    "x-auth-consumer",
    "x-auth-scopes",
    "x-auth-roles",
];

impl Identity {
    /// RFC 8705: a token whose claims (or introspection answer) carry
    /// `cnf.x5t#S256` is accepted only on a connection whose verified
    /// client certificate has that thumbprint. Checked on every use: the
    /// binding belongs to the connection, not to the cached token.
    pub fn check_certificate_binding(
        &self,
        client_cert: Option<&crate::tls::ClientCert>,
    ) -> Result<(), AuthError> {
        let Some(bound) = self.claims.get("cnf").and_then(|c| c.get("x5t#S256")) else {
            return Ok(());
        };
        let presented = client_cert.map(|c| c.x5t_s256.as_str());
        match (bound.as_str(), presented) {
            (Some(want), Some(got))
                if subtle::ConstantTimeEq::ct_eq(want.as_bytes(), got.as_bytes()).into() =>
            {
                Ok(())
            }
            _ => Err(AuthError::invalid(
                "cert_binding_mismatch",
                "The access token is bound to another client certificate",
            )),
        }
    }

    /// The values of [`IDENTITY_HEADERS`], in that order. A value that
    /// cannot be a header (control characters in a claim) or is empty is
    /// left out rather than mangled.
    pub fn header_values(&self) -> &[(&'static str, HeaderValue)] {
        self.forwarded.0.get_or_init(|| {
            let values = [
                Some(HeaderValue::from_static(self.method.as_str())),
                HeaderValue::from_str(&self.subject).ok(),
                self.consumer
                    .as_deref()
                    .and_then(|c| HeaderValue::from_str(c).ok()),
                HeaderValue::from_str(&self.scopes.join(" ")).ok(),
                HeaderValue::from_str(&self.roles.join(",")).ok(),
            ];
            IDENTITY_HEADERS
                .into_iter()
                .zip(values)
                .filter_map(|(name, value)| Some((name, value?)).filter(|(_, v)| !v.is_empty()))
                .collect()
        })
    }
}

/// Why a provider did not accept a request, ordered by specificity: when
/// every provider of a route refuses, the most specific refusal is the
/// answer (a broken credential says more than an absent one, and an
/// unreachable identity service must fail closed rather than look like a
/// bad credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No credential for this provider in the request.
    Missing,
    /// A credential was presented and refused; `reason` is a short,
    /// fixed identifier for logs and metrics (`expired`, `bad_signature`,
    /// ...), `description` a fixed human text that never echoes the
    /// credential.
    Invalid {
        reason: &'static str,
        description: &'static str,
    },
    /// The token came with a DPoP proof that is missing, broken or not
    /// for this request (RFC 9449): 401 `invalid_dpop_proof`.
    DpopProof {
        reason: &'static str,
        description: &'static str,
    },
    /// The provider cannot decide now (keys never fetched, introspection
    /// endpoint down): 503, fail closed.
    Unavailable { reason: &'static str },
}

impl AuthError {
    pub fn invalid(reason: &'static str, description: &'static str) -> Self {
        AuthError::Invalid {
            reason,
            description,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            AuthError::Missing => 0,
            AuthError::Invalid { .. } | AuthError::DpopProof { .. } => 1,
            AuthError::Unavailable { .. } => 2,
        }
    }

    /// Whether this refusal says more than `other` (a provider that could
    /// not answer says more than a bad credential, which says more than
    /// none); on a tie the first one seen wins.
    pub fn outranks(&self, other: &AuthError) -> bool {
        self.rank() > other.rank()
    }

    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Invalid { reason, .. } | AuthError::DpopProof { reason, .. } => reason,
            AuthError::Unavailable { reason } => reason,
        }
    }
}
