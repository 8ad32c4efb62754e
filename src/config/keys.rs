//! The API keys file: `[[keys]]` entries holding only SHA-256 hashes.

use std::path::Path;

use serde_spanned::Spanned;
use toml::de::DeValue;

use super::diag::{ConfigError, Diagnostics};
use super::model::ApiKey;
use super::reader::Table;

/// Parses a keys file; errors carry the keys file's own `FILE:LINE:COL`.
pub fn load(path: &Path) -> Result<Vec<ApiKey>, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: path.to_path_buf(),
            position: None,
            message: format!("cannot read the keys file: {e}"),
        }]
    })?;
    let mut d = Diagnostics::new(path, &text);
    let (doc, parse_errors) = toml::de::DeTable::parse_recoverable(&text);
    if !parse_errors.is_empty() {
        for e in parse_errors {
            d.error(e.span().unwrap_or(0..0), e.message().trim_end().to_string());
        }
        return Err(d.into_errors());
    }
    let root = Table::new(doc.get_ref(), doc.span(), "");
    let mut keys: Vec<ApiKey> = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for t in root.tables(&mut d, "keys") {
        if let Some(key) = key(&mut d, &t) {
            if !ids.insert(key.id.clone()) {
                d.error(t.span(), format!("duplicate key id `{}`", key.id));
            }
            keys.push(key);
        }
        t.finish(&mut d);
    }
    root.finish(&mut d);
    if d.has_errors() {
        Err(d.into_errors())
    } else {
        Ok(keys)
    }
}

fn key(d: &mut Diagnostics, t: &Table) -> Option<ApiKey> {
    let id = t.string(d, "id");
    let consumer = t.string(d, "consumer");
    let hash = t.string(d, "hash");
    let list = |d: &mut Diagnostics, k| -> Vec<String> {
        t.strings(d, k)
            .unwrap_or_default()
            .into_iter()
            .map(Spanned::into_inner)
            .collect()
    };
    let scopes = list(d, "scopes");
    let roles = list(d, "roles");
    let expires_at = expires_at(d, t);
    let disabled = t.boolean(d, "disabled").unwrap_or(false);
    for (name, present) in [
        ("id", id.is_some()),
        ("consumer", consumer.is_some()),
        ("hash", hash.is_some()),
    ] {
        if !present && t.raw(name).is_none() {
            d.error(t.span(), format!("[{}] needs `{name}`", t.section()));
        }
    }
    let id = id?;
    if id.get_ref().is_empty()
        || id.get_ref().len() > 64
        || !id.get_ref().bytes().all(|b| b.is_ascii_alphanumeric())
    {
        d.error(id.span(), "a key id is 1-64 characters of A-Z a-z 0-9");
        return None;
    }
    let hash = hash?;
    let Some(digest) = hash
        .get_ref()
        .strip_prefix("sha256:")
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
    else {
        d.error(
            hash.span(),
            "`hash` must be \"sha256:\" followed by 64 hex digits (never the key itself)",
        );
        return None;
    };
    Some(ApiKey {
        id: id.into_inner(),
        consumer: consumer?.into_inner(),
        hash: digest,
        scopes,
        roles,
        expires_at: expires_at?,
        disabled,
    })
}

/// `expires_at` as an RFC 3339 string or a TOML date-time; `Some(None)`
/// when absent, `None` on error.
fn expires_at(d: &mut Diagnostics, t: &Table) -> Option<Option<u64>> {
    let Some(value) = t.raw("expires_at") else {
        return Some(None);
    };
    let text = match value.get_ref() {
        DeValue::String(s) => s.to_string(),
        DeValue::Datetime(dt) => dt.to_string(),
        _ => String::new(),
    };
    match humantime::parse_rfc3339_weak(&text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
    {
        Some(since) => Some(Some(since.as_secs())),
        None => {
            d.error(
                value.span(),
                "`expires_at` must be an RFC 3339 time such as 2027-01-01T00:00:00Z",
            );
            None
        }
    }
}
