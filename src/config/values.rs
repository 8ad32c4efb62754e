//! Typed readers of single values shared by the sections: CIDRs, header
//! names, strings that must be there, files, secrets, names.

use std::path::PathBuf;

use http::HeaderName;
use ipnet::IpNet;
use serde_spanned::Spanned;

use super::diag::Diagnostics;
use super::reader::Table;
use crate::core::secret::Secret;

/// Headers whose framing meaning the gateway owns; letting configuration
/// rewrite them would open request smuggling.
const FRAMING_HEADERS: [&str; 5] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
];

/// An address or a CIDR; a bare address is a /32 or /128.
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

pub(super) fn header_name(d: &mut Diagnostics, name: &Spanned<&str>) -> Option<HeaderName> {
    let lower = name.get_ref().to_ascii_lowercase();
    if FRAMING_HEADERS.contains(&lower.as_str()) {
        d.error(
            name.span(),
            format!("header `{lower}` controls message framing and cannot be changed"),
        );
        return None;
    }
    match HeaderName::from_bytes(lower.as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            d.error(
                name.span(),
                format!("`{}` is not a valid header name", name.get_ref()),
            );
            None
        }
    }
}

pub(super) fn required_string(
    d: &mut Diagnostics,
    t: &Table,
    key: &'static str,
) -> Option<Spanned<String>> {
    let v = t.string(d, key);
    if v.is_none() && t.raw(key).is_none() {
        d.error(t.span(), format!("[{}] needs `{key}`", t.section()));
    }
    v
}

pub(super) fn non_empty_string(
    d: &mut Diagnostics,
    t: &Table,
    key: &'static str,
) -> Option<Spanned<String>> {
    let v = t.string(d, key)?;
    if v.get_ref().is_empty() {
        d.error(v.span(), format!("`{key}` must not be empty"));
        return None;
    }
    Some(v)
}

pub(super) fn existing_file(d: &mut Diagnostics, p: Spanned<String>) -> Option<PathBuf> {
    let path = PathBuf::from(p.get_ref());
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Some(path),
        Ok(_) => {
            d.error(p.span(), format!("`{}` is not a file", p.get_ref()));
            None
        }
        Err(e) => {
            d.error(p.span(), format!("cannot read `{}`: {e}", p.get_ref()));
            None
        }
    }
}

/// A secret from a file: trimmed, at least `min_len` characters.
pub(super) fn read_secret(
    d: &mut Diagnostics,
    file: &Spanned<String>,
    min_len: usize,
) -> Option<Secret> {
    match std::fs::read_to_string(file.get_ref()) {
        Ok(text) if text.trim().len() >= min_len => Some(Secret::new(text.trim().to_string())),
        Ok(_) => {
            d.error(
                file.span(),
                format!(
                    "the secret in `{}` must be at least {min_len} characters",
                    file.get_ref()
                ),
            );
            None
        }
        Err(e) => {
            d.error(
                file.span(),
                format!("cannot read `{}`: {e}", file.get_ref()),
            );
            None
        }
    }
}

/// Names appear in metrics labels and logs, so they are kept to a safe set.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub(super) fn name_rule(name: &str) -> String {
    format!("name `{name}` must be 1-64 characters of A-Z a-z 0-9 - _ .")
}
