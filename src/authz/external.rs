//! `authz_url`: a decision asked of an external service, forward-auth
//! style (as Traefik and APISIX do). Only a 2xx answer allows; no answer at
//! all fails closed.
//!
//! Decisions are cached per caller, method, host, path and query — never
//! across paths, since a decision may be about one object — and identical
//! questions in flight at once share one call.

use crate::core::ttl::{ByValue, Expires};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use moka::future::Cache;
use sha2::{Digest, Sha256};

use crate::auth::fetch::{FetchError, Fetcher};
use crate::auth::Identity;
use crate::config::ExternalAuthzConfig;

/// How many decisions one route keeps.
const CACHE_ENTRIES: u64 = 100_000;

/// What the service said.
#[derive(Debug)]
pub enum Decision {
    /// Allowed, with the `authz_response_headers` it answered.
    Allow(Vec<(HeaderName, HeaderValue)>),
    Deny,
}

/// One decision and how long it may be reused.
#[derive(Debug)]
struct Answer {
    decision: Arc<Decision>,
    ttl: Duration,
}

impl Expires for Answer {
    fn time_to_live(&self) -> Duration {
        self.ttl
    }
}

/// What the gateway asks about.
pub struct Question<'a> {
    pub method: &'a str,
    /// Normalized path and the query, as the upstream would see them.
    pub uri: &'a str,
    pub host: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub identity: Option<&'a Identity>,
    pub request_id: &'a str,
}

#[derive(Debug, thiserror::Error)]
#[error("authorization service: {0}")]
pub struct Unavailable(Arc<FetchError>);

pub struct ExternalAuthz {
    pub config: ExternalAuthzConfig,
    fetcher: Fetcher,
    cache: Cache<[u8; 32], Arc<Answer>>,
}

impl ExternalAuthz {
    pub fn new(config: ExternalAuthzConfig) -> Self {
        ExternalAuthz {
            fetcher: Fetcher::new(config.timeout),
            cache: Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                .expire_after(ByValue)
                .build(),
            config,
        }
    }

    pub async fn decide(&self, question: &Question<'_>) -> Result<Arc<Decision>, Unavailable> {
        let headers = self.headers(question);
        let key = cache_key(&headers);
        // With caching off the answer expires at once, but callers that
        // were waiting for it still share it: that is the coalescing.
        self.cache
            .try_get_with(key, self.ask(headers))
            .await
            .map(|answer| answer.decision.clone())
            .map_err(Unavailable)
    }

    fn headers(&self, q: &Question<'_>) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(12);
        let mut put = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        };
        put("x-forwarded-method", q.method);
        put("x-forwarded-uri", q.uri);
        if let Some(host) = q.host {
            put("x-forwarded-host", host);
        }
        if let Some(ip) = q.client_ip {
            put("x-forwarded-for", &ip.to_string());
        }
        if let Some(identity) = q.identity {
            for (name, value) in identity.header_values() {
                headers.insert(*name, value.clone());
            }
        }
        // Not part of the cache key: a correlation aid only.
        if let Ok(v) = HeaderValue::from_str(q.request_id) {
            headers.insert("x-request-id", v);
        }
        headers
    }

    async fn ask(&self, headers: HeaderMap) -> Result<Arc<Answer>, FetchError> {
        let (status, answer_headers) = self.fetcher.ask(&self.config.url, headers).await?;
        let answer = if (200..300).contains(&status) {
            let copied = self
                .config
                .response_headers
                .iter()
                .flat_map(|name| {
                    answer_headers
                        .get_all(name)
                        .iter()
                        .map(move |v| (name.clone(), v.clone()))
                })
                .collect();
            Answer {
                decision: Arc::new(Decision::Allow(copied)),
                ttl: self.config.cache,
            }
        } else {
            // A refusal is a decision and may be cached; any other answer
            // (a 5xx, a redirect) denies this request only.
            let ttl = if matches!(status, 401 | 403) {
                self.config.cache
            } else {
                Duration::ZERO
            };
            Answer {
                decision: Arc::new(Decision::Deny),
                ttl,
            }
        };
        Ok(Arc::new(answer))
    }
}

/// Everything the question says except the request id: the caller, the
/// method, host, path and query.
fn cache_key(headers: &HeaderMap) -> [u8; 32] {
    let mut hash = Sha256::new();
    for (name, value) in headers {
        if name == "x-request-id" {
            continue;
        }
        hash.update(name.as_str().as_bytes());
        hash.update([0]);
        hash.update(value.as_bytes());
        hash.update([0]);
    }
    hash.finalize().into()
}
