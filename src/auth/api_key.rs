//! The `api_key` provider: keys of the form `pc_<id>_<secret>`, looked up
//! by id and checked by comparing the SHA-256 of the whole key with the
//! stored hash in constant time. Keys of any other form (`opaque = true`,
//! e.g. carried over from Kong) are looked up by that SHA-256 itself: the
//! lookup's timing depends on a digest the client cannot steer, never on
//! the key. Plaintext keys exist only in the client's request; logs name
//! the key id at most.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use http::HeaderName;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::jwt_auth::now_unix;
use super::{AuthError, AuthMethod, Authenticator, Credentials, Identity};
use crate::config::{ApiKey, ApiKeyProvider, AuthProvider};

/// Keys longer than this are refused unread.
const MAX_KEY_BYTES: usize = 256;

pub struct ApiKeyAuthenticator {
    provider: AuthProvider,
    config: ApiKeyProvider,
    by_id: HashMap<String, KeyEntry>,
    by_hash: HashMap<[u8; 32], KeyEntry>,
}

struct KeyEntry {
    key: ApiKey,
    /// Built once: every request with this key shares it.
    identity: Arc<Identity>,
}

impl ApiKeyAuthenticator {
    pub fn new(provider: AuthProvider, config: ApiKeyProvider) -> Self {
        let name: Arc<str> = provider.name.as_str().into();
        let mut by_id = HashMap::new();
        let mut by_hash = HashMap::new();
        for k in config.keys.iter() {
            let identity = Arc::new(Identity {
                method: AuthMethod::ApiKey,
                provider: name.clone(),
                subject: k.consumer.clone(),
                consumer: Some(k.consumer.clone()),
                scopes: k.scopes.clone(),
                roles: k.roles.clone(),
                claims: serde_json::Map::new(),
                forwarded: Default::default(),
            });
            let entry = KeyEntry {
                key: k.clone(),
                identity,
            };
            if k.opaque {
                by_hash.insert(k.hash, entry);
            } else {
                by_id.insert(k.id.clone(), entry);
            }
        }
        ApiKeyAuthenticator {
            provider,
            config,
            by_id,
            by_hash,
        }
    }

    /// The presented key: the header, or (only when configured) the query
    /// parameter.
    fn presented<'a>(&self, request: &Credentials<'a>) -> Result<&'a str, AuthError> {
        let mut values = request.headers.get_all(&self.config.header).iter();
        if let Some(value) = values.next() {
            if values.next().is_some() {
                return Err(AuthError::invalid(
                    "malformed",
                    "more than one API key header",
                ));
            }
            return value
                .to_str()
                .map_err(|_| AuthError::invalid("malformed", "the API key is malformed"));
        }
        let Some(param) = &self.config.query_param else {
            return Err(AuthError::Missing);
        };
        let query = request.query.unwrap_or("");
        let copies = query
            .split('&')
            .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) == param)
            .count();
        if copies > 1 {
            return Err(AuthError::invalid(
                "malformed",
                "more than one API key parameter",
            ));
        }
        query_value(query, param).ok_or(AuthError::Missing)
    }
}

/// The value of `name` in a query string (first occurrence).
pub fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// `pc_<id>_<secret>` → id.
fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("pc_")?;
    let (id, secret) = rest.split_once('_')?;
    let ok = !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_alphanumeric())
        && !secret.is_empty()
        && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then_some(id)
}

#[async_trait]
impl Authenticator for ApiKeyAuthenticator {
    fn method(&self) -> AuthMethod {
        AuthMethod::ApiKey
    }

    fn forward_credentials(&self) -> bool {
        self.config.forward_credentials
    }

    fn credential_header(&self) -> &HeaderName {
        &self.config.header
    }

    fn credential_query(&self) -> Option<&str> {
        self.config.query_param.as_deref()
    }

    fn config(&self) -> &AuthProvider {
        &self.provider
    }

    async fn authenticate(&self, request: &Credentials<'_>) -> Result<Arc<Identity>, AuthError> {
        let presented = self.presented(request)?;
        if presented.is_empty() || presented.len() > MAX_KEY_BYTES {
            return Err(AuthError::invalid("malformed", "the API key is malformed"));
        }
        let unknown = AuthError::invalid("unknown_key", "the API key is not valid");
        let id = key_id(presented);
        let digest = || -> [u8; 32] { Sha256::digest(presented.as_bytes()).into() };
        let entry = match id.and_then(|id| self.by_id.get(id)) {
            Some(entry) if bool::from(digest().ct_eq(&entry.key.hash)) => entry,
            Some(_) => return Err(unknown),
            // Without opaque keys, nothing but a pc_ id can match: no hash.
            None if self.by_hash.is_empty() => {
                return Err(match id {
                    Some(_) => unknown,
                    None => AuthError::invalid("malformed", "the API key is malformed"),
                })
            }
            None => self.by_hash.get(&digest()).ok_or(unknown)?,
        };
        if entry.key.disabled {
            return Err(AuthError::invalid("disabled", "the API key is disabled"));
        }
        if entry.key.expires_at.is_some_and(|at| at <= now_unix()) {
            return Err(AuthError::invalid("expired", "the API key has expired"));
        }
        Ok(entry.identity.clone())
    }

    fn status(&self) -> serde_json::Value {
        serde_json::json!({"kind": "api_key", "keys": self.by_id.len() + self.by_hash.len()})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids() {
        assert_eq!(key_id("pc_abc123_Secret9"), Some("abc123"));
        assert_eq!(key_id("pc__secret"), None);
        assert_eq!(key_id("pc_abc_"), None);
        assert_eq!(key_id("xx_abc_secret"), None);
        assert_eq!(key_id("pc_a-b_secret"), None);
        assert_eq!(key_id("pc_abc_sec_ret"), None);
    }

    #[test]
    fn query_values() {
        assert_eq!(
            query_value("a=1&api_key=pc_x_y&b=2", "api_key"),
            Some("pc_x_y")
        );
        assert_eq!(query_value("api_keyx=1", "api_key"), None);
        assert_eq!(query_value("", "api_key"), None);
    }
}
