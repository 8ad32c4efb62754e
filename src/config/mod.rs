//! Configuration: the TOML file parsed, validated and reported with places.

mod auth;
mod authz;
mod cache;
pub mod diag;
pub mod keys;
mod listeners;
pub mod model;
mod observe;
mod parse;
mod protect;
pub(crate) mod reader;
pub mod revocations;
mod routes;
pub mod schema;
mod trace;
mod upstreams;
mod values;
mod waf;

use std::path::Path;

use sha2::{Digest, Sha256};

pub use diag::{ConfigError, ConfigErrors};
pub use model::*;
pub use values::parse_cidr;

use diag::Diagnostics;
use reader::Table;

/// Reads, parses and validates the configuration at `path`, reporting every
/// problem at once.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError::in_file(
            path,
            format!("cannot read configuration: {e}"),
        )])
    })?;
    parse_str(path, &text)
}

/// Like [`load`], but a file with errors also yields the values the
/// runtime would have compiled, so that `check` reports their errors too.
pub fn load_for_check(path: &Path) -> Result<Config, (ConfigErrors, Vec<Pending>)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        (
            ConfigErrors(vec![ConfigError::in_file(
                path,
                format!("cannot read configuration: {e}"),
            )]),
            Vec::new(),
        )
    })?;
    parse_parts(path, &text)
}

/// Validates configuration text as if it were read from `path`.
pub fn parse_str(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    parse_parts(path, text).map_err(|(errors, _)| errors)
}

fn parse_parts(path: &Path, text: &str) -> Result<Config, (ConfigErrors, Vec<Pending>)> {
    let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
    let mut d = Diagnostics::new(path, text);
    let (doc, parse_errors) = toml::de::DeTable::parse_recoverable(text);
    if !parse_errors.is_empty() {
        for e in parse_errors {
            let span = e.span().unwrap_or(0..0);
            d.error(span, e.message().trim_end().to_string());
        }
        return Err((ConfigErrors(d.into_errors()), Vec::new()));
    }
    let root = Table::new(doc.get_ref(), doc.span(), "");
    let config = parse::config(&mut d, &root, path, sha256);
    root.finish(&mut d);
    match config {
        Some(c) if !d.has_errors() => Ok(c),
        _ => {
            let pending = d.take_pending();
            Err((ConfigErrors(d.into_errors()), pending))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
