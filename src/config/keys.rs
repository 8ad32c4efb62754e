//! The API keys file: `[[keys]]` entries holding only SHA-256 hashes.

use std::path::Path;

use serde_spanned::Spanned;
use toml::de::DeValue;

use super::diag::{ConfigError, Diagnostics};
use super::model::ApiKey;
use super::reader::Table;

/// Parses a keys file; errors carry the keys file's own `FILE:LINE:COL`.
///
/// Keys files can hold hundreds of thousands of entries, so a valid file
/// takes a fast typed path; only a file with errors is read again with the
/// span-aware reader, to report every error with its place.
pub fn load(path: &Path) -> Result<Vec<ApiKey>, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: path.to_path_buf(),
            position: None,
            message: format!("cannot read the keys file: {e}"),
        }]
    })?;
    parse_str(path, &text)
}

/// Parses keys-file text as if it were read from `path`.
pub fn parse_str(path: &Path, text: &str) -> Result<Vec<ApiKey>, Vec<ConfigError>> {
    if let Some(keys) = fast(text) {
        return Ok(keys);
    }
    let mut d = Diagnostics::new(path, text);
    let (doc, parse_errors) = toml::de::DeTable::parse_recoverable(text);
    if !parse_errors.is_empty() {
        for e in parse_errors {
            d.error(e.span().unwrap_or(0..0), e.message().trim_end().to_string());
        }
        return Err(d.into_errors());
    }
    let root = Table::new(doc.get_ref(), doc.span(), "");
    let keys = file(&mut d, &root);
    root.finish(&mut d);
    if d.has_errors() {
        Err(d.into_errors())
    } else {
        Ok(keys)
    }
}

/// The `[[keys]]` of a keys file.
pub(super) fn file(d: &mut Diagnostics, root: &Table) -> Vec<ApiKey> {
    let mut keys: Vec<ApiKey> = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let mut opaque = std::collections::HashSet::new();
    for t in root.tables(d, "keys") {
        if let Some(key) = key(d, &t) {
            if !ids.insert(key.id.clone()) {
                d.error(t.span(), format!("duplicate key id `{}`", key.id));
            }
            if key.opaque && !opaque.insert(key.hash) {
                d.error(
                    t.span(),
                    format!("key `{}`: another opaque key has the same hash", key.id),
                );
            }
            keys.push(key);
        }
        t.finish(d);
    }
    keys
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    keys: Vec<RawKey>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: String,
    consumer: String,
    hash: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    expires_at: Option<toml::Value>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    opaque: bool,
}

/// The typed path: `None` at the first problem of any kind. Entries are
/// independent, so the file is cut at `[[keys]]` lines into small chunks
/// parsed on every core; a file the cut would break (say, a multi-line
/// string holding `[[keys]]`) fails here and is read whole by the careful
/// path.
fn fast(text: &str) -> Option<Vec<ApiKey>> {
    // Small chunks keep the parser's token buffers small (a 17 MB file
    // parsed whole costs ~400 MB and as much time in page faults as in
    // parsing); the chunks are shared out between the cores.
    const CHUNK_BYTES: usize = 256 * 1024;
    let chunks = split_at_entries(text, text.len() / CHUNK_BYTES + 1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = chunks.len().div_ceil(cores);
    let parsed: Vec<Option<Vec<ApiKey>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .chunks(per_thread.max(1))
            .map(|mine| {
                scope.spawn(move || {
                    let mut keys = Vec::new();
                    for chunk in mine {
                        keys.extend(fast_chunk(chunk)?);
                    }
                    Some(keys)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect()
    });
    let mut keys = Vec::new();
    for part in parsed {
        keys.extend(part?);
    }
    let mut ids = std::collections::HashSet::with_capacity(keys.len());
    let mut opaque = std::collections::HashSet::new();
    keys.iter()
        .all(|k| ids.insert(k.id.as_str()) && (!k.opaque || opaque.insert(k.hash)))
        .then_some(keys)
}

/// About `parts` slices of `text`, each starting at a `[[keys]]` line
/// (except the first, which keeps any preamble).
fn split_at_entries(text: &str, parts: usize) -> Vec<&str> {
    let target = text.len() / parts.max(1) + 1;
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    while text.len() - start > target {
        let from = start + target;
        match text[from..].find("\n[[keys]]") {
            Some(i) => {
                let cut = from + i + 1;
                out.push(&text[start..cut]);
                start = cut;
            }
            None => break,
        }
    }
    out.push(&text[start..]);
    out
}

fn fast_chunk(text: &str) -> Option<Vec<ApiKey>> {
    let file: RawFile = toml::from_str(text).ok()?;
    file.keys
        .into_iter()
        .map(|k| {
            let expires_at = match &k.expires_at {
                None => None,
                Some(toml::Value::String(s)) => Some(rfc3339(s)?),
                Some(toml::Value::Datetime(dt)) => Some(rfc3339(&dt.to_string())?),
                Some(_) => return None,
            };
            valid_id(&k.id).then_some(())?;
            Some(ApiKey {
                hash: parse_hash(&k.hash)?,
                id: k.id,
                consumer: k.consumer,
                scopes: k.scopes,
                roles: k.roles,
                expires_at,
                disabled: k.disabled,
                opaque: k.opaque,
            })
        })
        .collect()
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn parse_hash(hash: &str) -> Option<[u8; 32]> {
    hash.strip_prefix("sha256:")
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
}

fn rfc3339(text: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
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
    let opaque = t.boolean(d, "opaque").unwrap_or(false);
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
    if !valid_id(id.get_ref()) {
        d.error(id.span(), "a key id is 1-64 characters of A-Z a-z 0-9");
        return None;
    }
    let hash = hash?;
    let Some(digest) = parse_hash(hash.get_ref()) else {
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
        opaque,
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
    match rfc3339(&text) {
        Some(at) => Some(Some(at)),
        None => {
            d.error(
                value.span(),
                "`expires_at` must be an RFC 3339 time such as 2027-01-01T00:00:00Z",
            );
            None
        }
    }
}
