//! Secrets from files: never printed, compared in constant time.

/// A secret read from a file; never printed, compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one place that must send it (e.g. HTTP
    /// Basic to an introspection endpoint). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison, so response timing reveals nothing about
    /// how much of a guess was right.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        // Hashing first makes the comparison independent of the lengths too.
        let want = Sha256::digest(self.0.as_bytes());
        let got = Sha256::digest(candidate);
        want.ct_eq(&got).into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
