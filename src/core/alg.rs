//! JOSE signature algorithm names, as the configuration and token headers
//! spell them.

/// The signature algorithms a provider may allow.
///
/// `none` is deliberately not representable: an unsigned token can never be
/// accepted, whatever the configuration says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Alg {
    /// Every supported algorithm, for configuration diagnostics.
    pub const ALL: [Alg; 12] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
    ];

    /// The algorithm with this JOSE name (case-sensitive, as RFC 7518
    /// spells them); `None` for `none` and anything unsupported.
    pub fn parse(s: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|alg| alg.as_str() == s)
    }

    /// The JOSE name, as it appears in a token header and in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    /// Shared-secret algorithms: only ever verified with a `secret_file`
    /// key, never with anything a JWKS document contains.
    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }
}
