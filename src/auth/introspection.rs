//! The `introspection` provider: opaque tokens checked with the issuer's
//! RFC 7662 endpoint.
//!
//! Answers are cached (positive and negative) for `cache_seconds`, never
//! beyond the token's `exp`; concurrent lookups of one token share one call;
//! when the endpoint cannot answer the request fails closed (503). A
//! certificate or DPoP binding in the answer is checked on every use.

use crate::core::ttl::{ByValue, Expires};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::future::Cache;
use sha2::{Digest, Sha256};

use super::bearer::authorization_token;
use super::dpop::Dpop;
use super::fetch::{FetchError, Fetcher};
use super::jwt::string_list;
use super::jwt_auth::now_unix;
use super::{AuthError, AuthMethod, Authenticator, Credentials, Identity};
use crate::config::{AuthProvider, DpopMode, IntrospectionProvider};

/// What the endpoint said about one token.
#[derive(Debug)]
enum Outcome {
    Active(Arc<Identity>),
    Inactive,
}

struct Answer {
    outcome: Outcome,
    /// Unix time until which the answer is cached (`cache_seconds`, never
    /// beyond the token's `exp`).
    cache_until: u64,
    /// The token's own `exp`, if the endpoint gave one.
    token_exp: Option<u64>,
}

impl Expires for Answer {
    fn time_to_live(&self) -> Duration {
        Duration::from_secs(self.cache_until.saturating_sub(now_unix()))
    }
}

pub(crate) struct IntrospectionAuthenticator {
    name: Arc<str>,
    provider: AuthProvider,
    config: IntrospectionProvider,
    fetcher: Fetcher,
    cache: Cache<[u8; 32], Arc<Answer>>,
    dpop: Dpop,
}

impl IntrospectionAuthenticator {
    pub(crate) fn new(provider: AuthProvider, config: IntrospectionProvider) -> Self {
        IntrospectionAuthenticator {
            name: provider.name.as_str().into(),
            fetcher: Fetcher::new(config.timeout),
            cache: Cache::builder()
                .max_capacity(config.cache_entries)
                .expire_after(ByValue)
                .build(),
            dpop: Dpop::new(config.dpop.clone()),
            provider,
            config,
        }
    }

    async fn introspect(&self, token: &str) -> Result<Arc<Answer>, FetchError> {
        let body = self
            .fetcher
            .post_form(
                &self.config.endpoint,
                &self.config.client_id,
                self.config.client_secret.expose(),
                &[("token", token), ("token_type_hint", "access_token")],
            )
            .await?;
        let now = now_unix();
        let negative_until = now + self.config.cache_seconds;
        let Ok(serde_json::Value::Object(claims)) = serde_json::from_slice(&body) else {
            // An answer that is not RFC 7662 JSON cannot vouch for anyone.
            return Ok(Arc::new(Answer {
                outcome: Outcome::Inactive,
                cache_until: negative_until,
                token_exp: None,
            }));
        };
        let active = claims.get("active").and_then(|v| v.as_bool()) == Some(true);
        let exp = claims.get("exp").and_then(|v| v.as_u64());
        if !active || exp.is_some_and(|e| e <= now) {
            return Ok(Arc::new(Answer {
                outcome: Outcome::Inactive,
                cache_until: negative_until,
                token_exp: None,
            }));
        }
        let text = |k: &str| claims.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let client_id = text("client_id");
        let identity = Identity {
            method: AuthMethod::Introspection,
            provider: self.name.clone(),
            subject: text("sub")
                .or_else(|| client_id.clone())
                .unwrap_or_default(),
            consumer: text("azp").or(client_id),
            scopes: string_list(&claims, &self.config.scopes_claim),
            roles: string_list(&claims, &self.config.roles_claim),
            claims,
            forwarded: Default::default(),
        };
        let until = now + self.config.cache_seconds;
        Ok(Arc::new(Answer {
            outcome: Outcome::Active(Arc::new(identity)),
            cache_until: exp.map_or(until, |e| until.min(e)),
            token_exp: exp,
        }))
    }
}

#[async_trait]
impl Authenticator for IntrospectionAuthenticator {
    fn method(&self) -> AuthMethod {
        AuthMethod::Introspection
    }

    fn forward_credentials(&self) -> bool {
        self.config.forward_credentials
    }

    fn config(&self) -> &AuthProvider {
        &self.provider
    }

    async fn authenticate(&self, request: &Credentials<'_>) -> Result<Arc<Identity>, AuthError> {
        let (scheme, token) = authorization_token(
            request.headers,
            self.config.max_token_bytes,
            self.dpop.mode() != DpopMode::Off,
        )?;
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Concurrent misses for one token wait for a single call; errors
        // are not cached.
        let answer = self
            .cache
            .try_get_with(key, self.introspect(token))
            .await
            .map_err(|_| AuthError::Unavailable {
                reason: "introspection_unavailable",
            })?;
        match &answer.outcome {
            Outcome::Active(identity) if answer.token_exp.is_none_or(|e| e > now_unix()) => {
                identity.check_certificate_binding(request.client_cert)?;
                self.dpop
                    .check(&self.name, scheme, token, identity, request)
                    .await?;
                Ok(identity.clone())
            }
            Outcome::Active(_) => Err(AuthError::invalid("expired", "the token has expired")),
            Outcome::Inactive => Err(AuthError::invalid("inactive", "the token is not active")),
        }
    }

    fn status(&self) -> serde_json::Value {
        serde_json::json!({"kind": "introspection", "cached_tokens": self.cache.entry_count()})
    }

    fn dpop_algs(&self) -> Option<&str> {
        (self.dpop.mode() != DpopMode::Off).then(|| self.dpop.algs())
    }
}
