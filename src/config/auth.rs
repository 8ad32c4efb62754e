//! `[auth.NAME]` sections: the authentication providers.

use std::path::PathBuf;
use std::time::Duration;

use serde_spanned::Spanned;

use super::diag::Diagnostics;
use super::model::*;
use super::reader::{MapOf, Table};
use crate::core::alg::Alg;
use crate::core::location::Located;

const DEFAULT_MAX_TOKEN_BYTES: u64 = 8192;
const DEFAULT_FETCH_TIMEOUT_MS: u64 = 5000;

/// Keys of `[auth]` that are settings shared by all providers, not
/// provider names.
const SETTINGS: [&str; 1] = ["revocations_file"];

pub(super) fn providers(d: &mut Diagnostics, root: &Table) -> Vec<AuthProvider> {
    let Some(all) = root.table(d, "auth") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, value) in all.entries(MapOf::Tables) {
        if SETTINGS.contains(name.get_ref()) {
            continue;
        }
        if !matches!(value.get_ref(), toml::de::DeValue::Table(_)) {
            d.error(
                name.span(),
                format!(
                    "unknown setting `{}` in [auth]; [auth] holds `revocations_file` and [auth.NAME] provider tables",
                    name.get_ref()
                ),
            );
            continue;
        }
        if !super::values::valid_name(name.get_ref()) {
            d.error(name.span(), super::values::name_rule(name.get_ref()));
        }
        let Some(t) = all.entry_table(d, name.get_ref(), value) else {
            continue;
        };
        let kind = match t.variant(d, "kind", &["jwt", "introspection", "api_key", "mtls"]) {
            None => {
                d.error(t.span(), format!("[{}] needs `kind`", t.section()));
                None
            }
            Some(k) => {
                match k.get_ref().as_str() {
                    "jwt" => jwt(d, &t).map(AuthKind::Jwt),
                    "introspection" => introspection(d, &t).map(AuthKind::Introspection),
                    "api_key" => api_key(d, &t).map(AuthKind::ApiKey),
                    "mtls" => mtls(d, &t).map(AuthKind::Mtls),
                    other => {
                        d.error(
                        k.span(),
                        format!("unknown auth kind `{other}`; use jwt, introspection, api_key or mtls"),
                    );
                        None
                    }
                }
            }
        };
        t.finish(d);
        if let Some(kind) = kind {
            out.push(AuthProvider {
                name: name.get_ref().to_string(),
                kind,
            });
        }
    }
    out
}

/// The `[auth]` settings beside the providers (CONTRACT §13). The
/// revocations file is read now, so that `check` reports it; a file that
/// does not exist yet is an empty list (the gateway creates it), but its
/// directory must exist.
pub(super) fn settings(d: &mut Diagnostics, root: &Table) -> TokenSettings {
    let mut out = TokenSettings::default();
    let Some(value) = root.raw("auth") else {
        return out;
    };
    let toml::de::DeValue::Table(entries) = value.get_ref() else {
        return out;
    };
    let t = Table::new(entries, value.span(), "auth");
    let Some(file) = super::values::non_empty_string(d, &t, "revocations_file") else {
        return out;
    };
    let path = PathBuf::from(file.get_ref());
    match std::fs::read_to_string(&path) {
        Ok(text) => match super::revocations::parse_file(&path, &text) {
            Ok(entries) => out.revocations = entries,
            Err(e) => d.absorb(file.span(), vec![e]),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => std::path::Path::new("."),
            };
            if !dir.is_dir() {
                d.error(
                    file.span(),
                    format!(
                        "`revocations_file`: the directory of `{}` does not exist",
                        file.get_ref()
                    ),
                );
            }
        }
        Err(e) => d.error(
            file.span(),
            format!("cannot read `{}`: {e}", file.get_ref()),
        ),
    }
    out.revocations_file = Some(Located {
        value: path,
        at: d.location(file.span()),
    });
    out
}

fn jwt(d: &mut Diagnostics, t: &Table) -> Option<JwtProvider> {
    let issuer = t.string(d, "issuer").map(Spanned::into_inner);
    let audiences = t
        .strings(d, "audiences")
        .unwrap_or_default()
        .into_iter()
        .map(Spanned::into_inner)
        .collect();
    let algorithms = algorithms(d, t);
    let sources = [
        t.string(d, "jwks_uri").map(|v| ("jwks_uri", v)),
        t.string(d, "discovery_url").map(|v| ("discovery_url", v)),
        t.string(d, "jwks_file").map(|v| ("jwks_file", v)),
        t.string(d, "secret_file").map(|v| ("secret_file", v)),
    ];
    let leeway_seconds = t.integer(d, "leeway_seconds", 0..=600).unwrap_or(30);
    let jwks_refresh = t
        .integer(d, "jwks_refresh_seconds", 10..=86_400)
        .unwrap_or(300);
    let token_cache_entries = t
        .integer(d, "token_cache_entries", 0..=10_000_000)
        .unwrap_or(100_000);
    let required_claims = t
        .strings(d, "required_claims")
        .unwrap_or_default()
        .into_iter()
        .map(Spanned::into_inner)
        .collect();
    let max_token_bytes = t
        .integer(d, "max_token_bytes", 256..=65_536)
        .unwrap_or(DEFAULT_MAX_TOKEN_BYTES) as usize;
    let roles_claim = t.string(d, "roles_claim").map(Spanned::into_inner);
    let scopes_claim = t
        .string(d, "scopes_claim")
        .map_or_else(|| "scope".to_string(), Spanned::into_inner);
    let forward_credentials = t.boolean(d, "forward_credentials").unwrap_or(true);
    let fetch_timeout = t
        .integer(d, "fetch_timeout_ms", 100..=60_000)
        .unwrap_or(DEFAULT_FETCH_TIMEOUT_MS);
    let replay_protection = t.boolean(d, "replay_protection").unwrap_or(false);
    let dpop = dpop(d, t);

    let mut given = sources.into_iter().flatten();
    let first = given.next();
    if let Some((key, extra)) = given.next() {
        d.error(
            extra.span(),
            format!("`{key}`: a jwt provider takes exactly one of jwks_uri, discovery_url, jwks_file, secret_file"),
        );
    }
    let Some((key, value)) = first else {
        d.error(
            t.span(),
            format!(
                "[{}] needs one of jwks_uri, discovery_url, jwks_file, secret_file",
                t.section()
            ),
        );
        return None;
    };
    let algorithms = algorithms?;
    let hmac = algorithms.iter().filter(|a| a.is_hmac()).count();
    if key == "secret_file" && hmac != algorithms.len() {
        d.error(
            value.span(),
            "with `secret_file`, `algorithms` may only list HS256, HS384, HS512",
        );
        return None;
    }
    if key != "secret_file" && hmac > 0 {
        d.error(
            value.span(),
            "HS256/HS384/HS512 are only allowed with `secret_file`",
        );
        return None;
    }
    let keys = match key {
        "jwks_uri" => KeySource::JwksUri(http_url(d, &value)?),
        "discovery_url" => {
            if issuer.is_none() {
                d.error(
                    value.span(),
                    "`discovery_url` needs `issuer`: the discovered issuer must match it",
                );
            }
            KeySource::Discovery(http_url(d, &value)?)
        }
        "jwks_file" => {
            let path = PathBuf::from(value.get_ref());
            let json = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    d.error(
                        value.span(),
                        format!("cannot read `{}`: {e}", value.get_ref()),
                    );
                    return None;
                }
            };
            let path = Located {
                value: path,
                at: d.location(value.span()),
            };
            d.pending(Pending::Jwks {
                path: path.clone(),
                json: json.clone(),
                algorithms: algorithms.clone(),
            });
            KeySource::File { path, json }
        }
        _ => {
            let path = PathBuf::from(value.get_ref());
            let secret = super::values::read_secret(d, &value, 32)?;
            KeySource::Secret { path, secret }
        }
    };
    let dpop = dpop?;
    Some(JwtProvider {
        issuer,
        audiences,
        keys,
        algorithms,
        leeway_seconds,
        jwks_refresh: Duration::from_secs(jwks_refresh),
        token_cache_entries,
        required_claims,
        max_token_bytes,
        roles_claim,
        scopes_claim,
        forward_credentials,
        fetch_timeout: Duration::from_millis(fetch_timeout),
        replay_protection,
        dpop,
    })
}

fn algorithms(d: &mut Diagnostics, t: &Table) -> Option<Vec<Alg>> {
    let Some(list) = t.strings(d, "algorithms") else {
        return Some(vec![Alg::RS256, Alg::ES256]);
    };
    let mut out = Vec::new();
    for a in list {
        match Alg::parse(a.get_ref()) {
            Some(alg) if !out.contains(&alg) => out.push(alg),
            Some(_) => {}
            None => d.error(
                a.span(),
                format!(
                    "algorithm `{}` is not allowed; use RS256/384/512, PS256/384/512, ES256, ES384, EdDSA or (with secret_file) HS256/384/512",
                    a.get_ref()
                ),
            ),
        }
    }
    if out.is_empty() {
        d.error(t.span(), "`algorithms` must not be empty");
        return None;
    }
    Some(out)
}

fn introspection(d: &mut Diagnostics, t: &Table) -> Option<IntrospectionProvider> {
    let endpoint = t.string(d, "endpoint");
    let client_id = t.string(d, "client_id");
    let secret_file = t.string(d, "client_secret_file");
    let cache_seconds = t.integer(d, "cache_seconds", 0..=86_400).unwrap_or(60);
    let cache_entries = t
        .integer(d, "cache_entries", 1..=10_000_000)
        .unwrap_or(100_000);
    let max_token_bytes = t
        .integer(d, "max_token_bytes", 16..=65_536)
        .unwrap_or(DEFAULT_MAX_TOKEN_BYTES) as usize;
    let forward_credentials = t.boolean(d, "forward_credentials").unwrap_or(true);
    let timeout = t
        .integer(d, "timeout_ms", 100..=60_000)
        .unwrap_or(DEFAULT_FETCH_TIMEOUT_MS);
    let roles_claim = t
        .string(d, "roles_claim")
        .map_or_else(|| "roles".to_string(), Spanned::into_inner);
    let scopes_claim = t
        .string(d, "scopes_claim")
        .map_or_else(|| "scope".to_string(), Spanned::into_inner);
    let dpop = dpop(d, t);
    let mut missing = |key: &str| d.error(t.span(), format!("[{}] needs `{key}`", t.section()));
    let (Some(endpoint), Some(client_id), Some(secret_file)) = (endpoint, client_id, secret_file)
    else {
        for (key, present) in [
            ("endpoint", t.raw("endpoint").is_some()),
            ("client_id", t.raw("client_id").is_some()),
            ("client_secret_file", t.raw("client_secret_file").is_some()),
        ] {
            if !present {
                missing(key);
            }
        }
        return None;
    };
    let endpoint = http_url(d, &endpoint)?;
    let client_secret = super::values::read_secret(d, &secret_file, 1)?;
    let dpop = dpop?;
    Some(IntrospectionProvider {
        endpoint,
        client_id: client_id.into_inner(),
        client_secret,
        cache_seconds,
        cache_entries,
        max_token_bytes,
        forward_credentials,
        timeout: Duration::from_millis(timeout),
        roles_claim,
        scopes_claim,
        dpop,
    })
}

/// Proof algorithms when `dpop_algorithms` is not given.
const DPOP_ALGORITHMS: [Alg; 5] = [Alg::ES256, Alg::ES384, Alg::RS256, Alg::PS256, Alg::EdDSA];

/// `dpop`, `dpop_proof_lifetime_seconds`, `dpop_algorithms`.
fn dpop(d: &mut Diagnostics, t: &Table) -> Option<DpopConfig> {
    let mode = t.keyword(
        d,
        "dpop",
        DpopMode::Off,
        &[
            ("off", DpopMode::Off),
            ("optional", DpopMode::Optional),
            ("required", DpopMode::Required),
        ],
    );
    let proof_lifetime_seconds = t
        .integer(d, "dpop_proof_lifetime_seconds", 1..=3600)
        .unwrap_or(60);
    let algorithms = match t.strings(d, "dpop_algorithms") {
        None => Some(DPOP_ALGORITHMS.to_vec()),
        Some(list) => {
            let mut out = Vec::new();
            for a in &list {
                match Alg::parse(a.get_ref()) {
                    Some(alg) if alg.is_hmac() => d.error(
                        a.span(),
                        format!("`{}`: a DPoP proof is signed with the client's own key pair; use an asymmetric algorithm", a.get_ref()),
                    ),
                    Some(alg) if !out.contains(&alg) => out.push(alg),
                    Some(_) => {}
                    None => d.error(
                        a.span(),
                        format!(
                            "algorithm `{}` is not allowed; use RS256/384/512, PS256/384/512, ES256, ES384 or EdDSA",
                            a.get_ref()
                        ),
                    ),
                }
            }
            if out.is_empty() && list.is_empty() {
                d.error(t.span(), "`dpop_algorithms` must not be empty");
            }
            (!out.is_empty()).then_some(out)
        }
    };
    Some(DpopConfig {
        mode: mode?,
        proof_lifetime_seconds,
        algorithms: algorithms?,
    })
}

fn api_key(d: &mut Diagnostics, t: &Table) -> Option<ApiKeyProvider> {
    let keys_file = t.string(d, "keys_file");
    let header = t.string(d, "header");
    let query_param = t.string(d, "query_param").map(Spanned::into_inner);
    let forward_credentials = t.boolean(d, "forward_credentials").unwrap_or(false);
    let Some(keys_file) = keys_file else {
        d.error(t.span(), format!("[{}] needs `keys_file`", t.section()));
        return None;
    };
    let header = match header {
        None => http::HeaderName::from_static("x-api-key"),
        Some(h) => {
            match http::HeaderName::from_bytes(h.get_ref().to_ascii_lowercase().as_bytes()) {
                Ok(name) if name != http::header::AUTHORIZATION => name,
                _ => {
                    d.error(h.span(), format!("`{}` cannot carry API keys", h.get_ref()));
                    return None;
                }
            }
        }
    };
    let path = PathBuf::from(keys_file.get_ref());
    let keys = match super::keys::load(&path) {
        Ok(keys) => keys,
        Err(errors) => {
            d.absorb(keys_file.span(), errors);
            return None;
        }
    };
    Some(ApiKeyProvider {
        keys_file: path,
        keys: std::sync::Arc::new(keys),
        header,
        query_param: query_param.filter(|q| !q.is_empty()),
        forward_credentials,
    })
}

fn mtls(d: &mut Diagnostics, t: &Table) -> Option<MtlsProvider> {
    let subject_from = t.keyword(
        d,
        "subject_from",
        SubjectFrom::Cn,
        &[
            ("cn", SubjectFrom::Cn),
            ("san_uri", SubjectFrom::SanUri),
            ("san_dns", SubjectFrom::SanDns),
        ],
    )?;
    let allowed_subjects = t
        .strings(d, "allowed_subjects")
        .unwrap_or_default()
        .into_iter()
        .map(Spanned::into_inner)
        .collect();
    Some(MtlsProvider {
        subject_from,
        allowed_subjects,
    })
}

/// An absolute http(s) URL with a host.
fn http_url(d: &mut Diagnostics, value: &Spanned<String>) -> Option<String> {
    match value.get_ref().parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
            Some(value.get_ref().clone())
        }
        _ => {
            d.error(
                value.span(),
                format!("`{}` is not an http(s) URL", value.get_ref()),
            );
            None
        }
    }
}
