//! The `jwt` provider: bearer JWTs verified against keys from a JWKS URL,
//! an OpenID Connect discovery document, a JWKS file or an HMAC secret.
//!
//! Key rotation must never break valid tokens: keys are refreshed in the
//! background, a token naming an unknown `kid` triggers one (rate-limited,
//! single-flight) refetch, and a failed refresh keeps the last good keys.
//! Verified tokens are cached by their SHA-256, never beyond their `exp`.
//! What belongs to the request rather than the token (a certificate or
//! DPoP binding, the one use of a `replay_protection` token) is checked on
//! every use, cached or not.

use crate::core::ttl::{ByValue, Expires};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use moka::sync::Cache;
use sha2::{Digest, Sha256};

use super::bearer::authorization_token;
use super::dpop::Dpop;
use super::fetch::Fetcher;
use super::jwks::KeySet;
use super::jwt::{verify, JwtRules, VerifyError};
use super::{AuthError, AuthMethod, Authenticator, Credentials, Identity};
use crate::config::{AuthProvider, DpopMode, JwtProvider, KeySource};
use crate::observe::security::SecurityEvent;
use crate::observe::Observer;

/// At most one unknown-`kid` refetch per provider in this window: a flood
/// of tokens with invented kids must not become a flood of JWKS requests.
const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("fetching {0}: {1}")]
    Fetch(&'static str, super::fetch::FetchError),
    #[error("the discovery document is not valid JSON with `issuer` and `jwks_uri`")]
    Discovery,
    #[error("the discovered issuer does not match the configured one")]
    IssuerMismatch,
    #[error("the JWKS: {0}")]
    Keys(#[from] super::jwks::JwksError),
}

struct CachedToken {
    identity: Arc<Identity>,
    /// The fingerprint of the key that verified it: the entry is good only
    /// while that very key is in the set.
    key: [u8; 32],
    exp: u64,
}

/// Cache entries live until the token's own `exp`, never longer.
impl Expires for CachedToken {
    fn time_to_live(&self) -> Duration {
        Duration::from_secs(self.exp.saturating_sub(now_unix()))
    }
}

pub struct JwtAuthenticator {
    name: Arc<str>,
    provider: AuthProvider,
    config: JwtProvider,
    rules: JwtRules,
    keys: ArcSwapOption<KeySet>,
    last_refresh: Mutex<Option<SystemTime>>,
    /// Bumped on every successful refresh, so waiters on the refetch lock
    /// can tell that someone else already refreshed.
    key_generation: AtomicU64,
    /// Single flight for every fetch (scheduled, first, on demand).
    fetch_lock: tokio::sync::Mutex<()>,
    /// When the last on-demand refetch (unknown `kid`, no keys) ran: only
    /// those are rate-limited, so a scheduled refresh never delays the
    /// refetch that a freshly rotated key needs.
    last_refetch: Mutex<Option<Instant>>,
    cache: Option<Cache<[u8; 32], Arc<CachedToken>>>,
    fetcher: Fetcher,
    observer: Arc<Observer>,
    dpop: Dpop,
}

impl JwtAuthenticator {
    pub fn new(
        provider: AuthProvider,
        config: JwtProvider,
        observer: Arc<Observer>,
    ) -> Result<Self, RefreshError> {
        let rules = JwtRules {
            issuer: config.issuer.clone(),
            audiences: config.audiences.clone(),
            algorithms: config.algorithms.clone(),
            leeway_seconds: config.leeway_seconds,
            required_claims: config.required_claims.clone(),
            roles_claim: config.roles_claim.clone(),
            scopes_claim: config.scopes_claim.clone(),
        };
        let local = match &config.keys {
            KeySource::File { json, .. } => Some(KeySet::from_jwks(json, &config.algorithms)?),
            KeySource::Secret { secret, .. } => Some(KeySet::from_secret(
                secret.expose().as_bytes(),
                &config.algorithms,
            )?),
            KeySource::JwksUri(_) | KeySource::Discovery(_) => None,
        };
        let cache = (config.token_cache_entries > 0).then(|| {
            Cache::builder()
                .max_capacity(config.token_cache_entries)
                .expire_after(ByValue)
                .support_invalidation_closures()
                .build()
        });
        let loaded = local.is_some();
        let me = JwtAuthenticator {
            name: provider.name.as_str().into(),
            fetcher: Fetcher::new(config.fetch_timeout),
            provider,
            rules,
            keys: ArcSwapOption::new(local.map(Arc::new)),
            last_refresh: Mutex::new(loaded.then(SystemTime::now)),
            key_generation: AtomicU64::new(0),
            fetch_lock: tokio::sync::Mutex::new(()),
            last_refetch: Mutex::new(None),
            cache,
            dpop: Dpop::new(config.dpop.clone()),
            config,
            observer,
        };
        Ok(me)
    }

    fn is_remote(&self) -> bool {
        matches!(
            self.config.keys,
            KeySource::JwksUri(_) | KeySource::Discovery(_)
        )
    }

    async fn fetch_keys(&self) -> Result<KeySet, RefreshError> {
        let jwks_uri = match &self.config.keys {
            KeySource::JwksUri(uri) => uri.clone(),
            KeySource::Discovery(url) => self.discover(url).await?,
            KeySource::File { .. } | KeySource::Secret { .. } => {
                return Err(RefreshError::Discovery);
            }
        };
        let body = self
            .fetcher
            .get(&jwks_uri)
            .await
            .map_err(|e| RefreshError::Fetch("jwks_uri", e))?;
        Ok(KeySet::from_jwks(&body, &self.config.algorithms)?)
    }

    /// OIDC discovery: the document must name the configured issuer.
    async fn discover(&self, url: &str) -> Result<String, RefreshError> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let body = self
            .fetcher
            .get(url)
            .await
            .map_err(|e| RefreshError::Fetch("discovery_url", e))?;
        let doc: Discovery = serde_json::from_slice(&body).map_err(|_| RefreshError::Discovery)?;
        if self.config.issuer.as_deref() != Some(doc.issuer.as_str()) {
            return Err(RefreshError::IssuerMismatch);
        }
        Ok(doc.jwks_uri)
    }

    /// Fetches and installs keys; on failure keeps the last good ones.
    async fn refresh(&self) -> bool {
        let outcome = self.fetch_keys().await;
        let metrics = &self.observer.metrics;
        match outcome {
            Ok(keys) => {
                let keys = Arc::new(keys);
                if let Some(cache) = &self.cache {
                    // Tokens verified by a key that was withdrawn or
                    // replaced (even under the same kid) are verified
                    // again from now on; lookups check the key as well.
                    let current = keys.clone();
                    let _ = cache.invalidate_entries_if(move |_, v| !current.contains_key(&v.key));
                }
                let kids = keys.kids();
                self.keys.store(Some(keys));
                self.key_generation.fetch_add(1, Ordering::Release);
                if let Ok(mut at) = self.last_refresh.lock() {
                    *at = Some(SystemTime::now());
                }
                metrics
                    .jwks_refresh
                    .with_label_values(&[&*self.name, "ok"])
                    .inc();
                self.observer.security_event(
                    &SecurityEvent::new("jwks_refreshed", "keys fetched")
                        .field("provider", &*self.name)
                        .field("kids", kids),
                );
                true
            }
            Err(e) => {
                metrics
                    .jwks_refresh
                    .with_label_values(&[&*self.name, "error"])
                    .inc();
                self.observer.security_event(
                    &SecurityEvent::new("jwks_refresh_failed", e.to_string())
                        .field("provider", &*self.name),
                );
                false
            }
        }
    }

    /// A fetch on demand (unknown `kid`, or no keys yet): single flight,
    /// at most once per [`REFETCH_INTERVAL`]. True when keys changed since
    /// `seen_generation`.
    async fn refetch(&self, seen_generation: u64) -> bool {
        if !self.is_remote() {
            return false;
        }
        let _single_flight = self.fetch_lock.lock().await;
        if self.key_generation.load(Ordering::Acquire) != seen_generation {
            return true;
        }
        {
            let Ok(mut last) = self.last_refetch.lock() else {
                return false;
            };
            if last.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.refresh().await
    }

    /// The identity of `token` and its `exp`: from the cache when a
    /// still-present key verified it, else verified now (and cached).
    async fn verified(&self, token: &str) -> Result<(Arc<Identity>, u64), AuthError> {
        let key = self.cache.as_ref().map(|_| token_key(token));
        if let (Some(cache), Some(key)) = (&self.cache, &key) {
            if let Some(hit) = cache.get(key) {
                let key_present = self
                    .keys
                    .load()
                    .as_ref()
                    .is_some_and(|keys| keys.contains_key(&hit.key));
                if hit.exp > now_unix() && key_present {
                    return Ok((hit.identity.clone(), hit.exp));
                }
            }
        }
        let generation = self.key_generation.load(Ordering::Acquire);
        let keys = match self.keys.load_full() {
            Some(keys) => keys,
            None => {
                self.refetch(generation).await;
                self.keys
                    .load_full()
                    .ok_or(AuthError::Unavailable { reason: "no_keys" })?
            }
        };
        let verified = match verify(token, &keys, &self.rules, now_unix()) {
            Err(VerifyError::UnknownKid(_)) if self.refetch(generation).await => {
                let keys = self
                    .keys
                    .load_full()
                    .ok_or(AuthError::Unavailable { reason: "no_keys" })?;
                verify(token, &keys, &self.rules, now_unix())
            }
            other => other,
        }
        .map_err(|e| e.to_auth_error())?;
        let verified_by = verified.key;
        let exp = verified.exp;
        let identity = self.identity(verified);
        if let (Some(cache), Some(key)) = (&self.cache, key) {
            cache.insert(
                key,
                Arc::new(CachedToken {
                    identity: identity.clone(),
                    key: verified_by,
                    exp,
                }),
            );
        }
        Ok((identity, exp))
    }

    /// `replay_protection`: the token's `jti` is accepted once, until its
    /// `exp` (plus leeway, as long as it verifies).
    async fn use_once(
        &self,
        identity: &Identity,
        exp: u64,
        request: &Credentials<'_>,
    ) -> Result<(), AuthError> {
        let Some(jti) = identity
            .claims
            .get("jti")
            .and_then(|v| v.as_str())
            .filter(|j| !j.is_empty())
        else {
            return Err(AuthError::invalid(
                "missing_jti",
                "The access token has no jti and can only be used once",
            ));
        };
        let unavailable = AuthError::Unavailable {
            reason: "replay_cache_unavailable",
        };
        let once = request.once.ok_or(unavailable.clone())?;
        let ttl = Duration::from_secs(
            exp.saturating_add(self.config.leeway_seconds)
                .saturating_sub(now_unix())
                .max(1),
        );
        match once
            .first_use(&once_key(b"jti", &self.name, jti), ttl)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(AuthError::invalid(
                "replayed",
                "The access token was already used",
            )),
            Err(_) => Err(unavailable),
        }
    }

    fn identity(&self, v: super::jwt::Verified) -> Arc<Identity> {
        Arc::new(Identity {
            method: AuthMethod::Jwt,
            provider: self.name.clone(),
            subject: v.subject,
            consumer: v.consumer,
            scopes: v.scopes,
            roles: v.roles,
            claims: v.claims,
            forwarded: Default::default(),
        })
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The replay-cache key of a `jti` (or a DPoP proof's) of one provider:
/// hashed, so a key is small whatever the token says.
pub(crate) fn once_key(kind: &[u8], provider: &str, jti: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(kind);
    h.update([0]);
    h.update(provider.as_bytes());
    h.update([0]);
    h.update(jti.as_bytes());
    h.finalize().into()
}

fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[async_trait]
impl Authenticator for JwtAuthenticator {
    fn method(&self) -> AuthMethod {
        AuthMethod::Jwt
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
        let (identity, exp) = self.verified(token).await?;
        // The bindings and the one-time use belong to this request, not to
        // the cached token: checked on every use.
        identity.check_certificate_binding(request.client_cert)?;
        self.dpop
            .check(&self.name, scheme, token, &identity, request)
            .await?;
        if self.config.replay_protection {
            self.use_once(&identity, exp, request).await?;
        }
        Ok(identity)
    }

    async fn prepare(&self) {
        if self.is_remote() && self.keys.load().is_none() {
            let _single_flight = self.fetch_lock.lock().await;
            self.refresh().await;
        }
    }

    fn start_background(self: Arc<Self>) {
        if !self.is_remote() {
            return;
        }
        let every = self.config.jwks_refresh;
        let weak: Weak<JwtAuthenticator> = Arc::downgrade(&self);
        drop(self);
        let guard = crate::core::tasks::TaskGuard::new();
        tokio::spawn(async move {
            let _guard = guard;
            let mut first = true;
            loop {
                if !first {
                    tokio::time::sleep(every).await;
                }
                let Some(me) = weak.upgrade() else { break };
                // A provider prepared by a reload already has its keys.
                if !(first && me.keys.load().is_some()) {
                    let _single_flight = me.fetch_lock.lock().await;
                    me.refresh().await;
                }
                first = false;
            }
        });
    }

    fn status(&self) -> serde_json::Value {
        let kids = self
            .keys
            .load()
            .as_ref()
            .map(|k| k.kids())
            .unwrap_or_default();
        let last = self
            .last_refresh
            .lock()
            .ok()
            .and_then(|at| *at)
            .map(|t| humantime::format_rfc3339_millis(t).to_string());
        serde_json::json!({"kind": "jwt", "kids": kids, "last_refresh": last})
    }

    fn dpop_algs(&self) -> Option<&str> {
        (self.dpop.mode() != DpopMode::Off).then(|| self.dpop.algs())
    }
}
