//! The `mtls` provider: the identity is the client certificate that the
//! TLS stack verified against the listener's `client_ca`.

use std::sync::Arc;

use async_trait::async_trait;

use super::{AuthError, AuthMethod, Authenticator, Credentials, Identity};
use crate::config::{AuthProvider, MtlsProvider, SubjectFrom};

pub(crate) struct MtlsAuthenticator {
    name: Arc<str>,
    provider: AuthProvider,
    config: MtlsProvider,
}

impl MtlsAuthenticator {
    pub(crate) fn new(provider: AuthProvider, config: MtlsProvider) -> Self {
        MtlsAuthenticator {
            name: provider.name.as_str().into(),
            provider,
            config,
        }
    }
}

/// `*` matches any run of characters (SPIFFE-style patterns such as
/// `spiffe://corp.example/ns/billing/*`); everything else literally.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let Some((first, rest)) = parts.split_first() else {
        return false;
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for part in middle {
        match remaining.find(part) {
            Some(i) => remaining = &remaining[i + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

#[async_trait]
impl Authenticator for MtlsAuthenticator {
    fn method(&self) -> AuthMethod {
        AuthMethod::Mtls
    }

    fn forward_credentials(&self) -> bool {
        true
    }

    fn config(&self) -> &AuthProvider {
        &self.provider
    }

    async fn authenticate(&self, request: &Credentials<'_>) -> Result<Arc<Identity>, AuthError> {
        let cert = request.client_cert.ok_or(AuthError::Missing)?;
        let candidates: Vec<&str> = match self.config.subject_from {
            SubjectFrom::Cn => cert.cn.as_deref().into_iter().collect(),
            SubjectFrom::SanUri => cert.san_uris.iter().map(String::as_str).collect(),
            SubjectFrom::SanDns => cert.san_dns.iter().map(String::as_str).collect(),
        };
        let subject = candidates
            .into_iter()
            .find(|s| {
                self.config.allowed_subjects.is_empty()
                    || self
                        .config
                        .allowed_subjects
                        .iter()
                        .any(|p| glob_match(p, s))
            })
            .ok_or(AuthError::invalid(
                "subject_not_allowed",
                "the client certificate's subject is not allowed",
            ))?;
        Ok(Arc::new(Identity {
            method: AuthMethod::Mtls,
            provider: self.name.clone(),
            subject: subject.to_string(),
            consumer: None,
            scopes: Vec::new(),
            roles: Vec::new(),
            claims: serde_json::Map::new(),
            forwarded: Default::default(),
        }))
    }

    fn status(&self) -> serde_json::Value {
        serde_json::json!({"kind": "mtls"})
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match(
            "spiffe://corp/ns/billing/*",
            "spiffe://corp/ns/billing/sa/api"
        ));
        assert!(!glob_match(
            "spiffe://corp/ns/billing/*",
            "spiffe://corp/ns/orders/sa/api"
        ));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("*.corp", "api.corp"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXc"));
        assert!(glob_match("*", "anything"));
    }
}
