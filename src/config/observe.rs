//! The observability keys of CONTRACT §12: the chained security log's keys
//! in `[log]`, and `[alerts]`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::pkcs8::DecodePrivateKey;
use serde_spanned::Spanned;

use super::diag::Diagnostics;
use super::model::{Alerts, Log, LogTarget, SeclogKey};
use super::reader::Table;
use super::values::non_empty_string;

/// Security events an alert can be raised for: those of CONTRACT §6, §11,
/// §13 and §14.
const ALERTABLE_EVENTS: [&str; 24] = [
    "auth_failure",
    "authz_denied",
    "rate_limited",
    "request_rejected",
    "brute_force_lockout",
    "config_reloaded",
    "config_reload_failed",
    "jwks_refreshed",
    "jwks_refresh_failed",
    "upstream_unhealthy",
    "upstream_healthy",
    "upstream_ejected",
    "upstream_restored",
    "rate_limit_store_unavailable",
    "rate_limit_store_recovered",
    "invalid_dpop_proof",
    "invalid_token",
    "token_replayed",
    "token_revoked_used",
    "request_blocked",
    "waf_blocked",
    "waf_detected",
    "log_opened",
    "checkpoint",
];

/// `security_log_chain`, `security_log_key_file` and `max_consumer_labels`.
pub(super) fn log_keys(d: &mut Diagnostics, t: &Table, out: &mut Log) {
    if let Some(on) = t.boolean(d, "security_log_chain") {
        if on && !matches!(out.security_log, LogTarget::File(_)) {
            let span = t.raw("security_log_chain").map_or(t.span(), |v| v.span());
            d.error(
                span,
                "`security_log_chain` needs `security_log` to be a file: the chain is verified per file",
            );
        }
        out.security_log_chain = on;
    }
    if let Some(file) = non_empty_string(d, t, "security_log_key_file") {
        if !out.security_log_chain {
            d.error(
                file.span(),
                "`security_log_key_file` signs the chained log; set `security_log_chain = true`",
            );
        }
        out.security_log_key = signing_key(d, &file);
    }
    if let Some(n) = t.integer(d, "max_consumer_labels", 0..=100_000) {
        out.max_consumer_labels = n as usize;
    }
}

/// The key must be readable by its owner only: whoever reads it can
/// re-sign a rewritten log. Its contents are never echoed.
fn signing_key(d: &mut Diagnostics, file: &Spanned<String>) -> Option<SeclogKey> {
    use std::os::unix::fs::PermissionsExt;
    let path = Path::new(file.get_ref());
    let name = file.get_ref();
    let text = match std::fs::metadata(path).and_then(|m| {
        if m.permissions().mode() & 0o077 != 0 {
            Ok(None)
        } else {
            std::fs::read_to_string(path).map(Some)
        }
    }) {
        Ok(Some(text)) => text,
        Ok(None) => {
            d.error(
                file.span(),
                format!("`{name}` can be read by group or others; make it private (chmod 600)"),
            );
            return None;
        }
        Err(e) => {
            d.error(file.span(), format!("cannot read `{name}`: {e}"));
            return None;
        }
    };
    match ed25519_dalek::SigningKey::from_pkcs8_pem(text.trim()) {
        Ok(key) => Some(SeclogKey {
            path: PathBuf::from(name),
            key: Arc::new(key),
        }),
        Err(_) => {
            d.error(
                file.span(),
                format!(
                    "`{name}` is not an Ed25519 private key in PKCS#8 PEM \
                     (`portcullis seclog keygen` writes one)"
                ),
            );
            None
        }
    }
}

pub(super) fn alerts(d: &mut Diagnostics, root: &Table) -> Option<Alerts> {
    let t = root.table(d, "alerts")?;
    let url = super::values::required_string(d, &t, "webhook_url");
    let events = t.strings(d, "events").unwrap_or_default();
    let spike = t.table(d, "auth_failure_spike").and_then(|s| {
        let n = s.integer(d, "per_minute", 1..=10_000_000);
        if n.is_none() && s.raw("per_minute").is_none() {
            d.error(s.span(), "[alerts.auth_failure_spike] needs `per_minute`");
        }
        s.finish(d);
        n
    });
    t.finish(d);
    let mut names: Vec<String> = Vec::with_capacity(events.len());
    for event in events {
        let name = event.get_ref();
        if !ALERTABLE_EVENTS.contains(&name.as_str()) {
            let hint = match super::diag::did_you_mean(name, ALERTABLE_EVENTS.iter().copied()) {
                Some(known) => format!("; did you mean `{known}`?"),
                None => String::new(),
            };
            d.error(
                event.span(),
                format!("unknown security event `{name}`{hint}"),
            );
        } else if names.contains(name) {
            d.error(event.span(), format!("`{name}` is listed twice"));
        } else {
            names.push(name.clone());
        }
    }
    let url = url?;
    if !valid_webhook_url(url.get_ref()) {
        d.error(
            url.span(),
            "`webhook_url` must be an http:// or https:// URL with a host",
        );
        return None;
    }
    Some(Alerts {
        webhook_url: url.into_inner(),
        events: names,
        auth_failure_spike: spike,
    })
}

fn valid_webhook_url(s: &str) -> bool {
    reqwest::Url::parse(s).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    })
}
