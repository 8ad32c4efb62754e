//! The configuration reader and the API keys file reader.
//!
//! Input: UTF-8 text, read as the gateway's configuration file. When the
//! text mentions `keys` it is also read as an API keys file.
//!
//! `portcullis::config::keys` is a private module, so the keys file is
//! reached the way the gateway reaches it: the text is written to a
//! per-process file that a fixed, valid configuration names as the
//! `keys_file` of an `api_key` provider.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::config::{parse_str, AuthKind, ConfigError};
use sha2::{Digest, Sha256};

const CONFIG: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_config(text);
    if text.contains("keys") {
        check_keys_file(text);
    }
});

fn check_config(text: &str) {
    match parse_str(Path::new(CONFIG), text) {
        Ok(config) => {
            assert_eq!(config.path, Path::new(CONFIG));
            assert_eq!(config.sha256, hex::encode(Sha256::digest(text.as_bytes())));
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error without a message");
            for e in &errors.0 {
                if e.file == Path::new(CONFIG) {
                    check_rendering(e, text);
                } else {
                    // An error of a file the configuration names (a keys
                    // file): rendered with that file's own name.
                    let shown = e.to_string();
                    let prefix = format!("{}:", e.file.display());
                    assert!(shown.starts_with(&prefix), "{shown:?}");
                }
            }
            let all = errors.to_string();
            assert_eq!(all.lines().count() >= errors.0.len(), true, "{all:?}");
        }
    }
}

/// `fuzz.toml:LINE:COL: message`, at a place inside the text.
fn check_rendering(e: &ConfigError, text: &str) {
    let shown = e.to_string();
    assert!(shown.starts_with("fuzz.toml:"), "{shown:?}");
    let (line, col) = e.position.unwrap_or_else(|| panic!("no place: {shown:?}"));
    assert!(
        shown.starts_with(&format!("fuzz.toml:{line}:{col}: ")),
        "{shown:?}"
    );
    let lines = text.split('\n').count();
    assert!(line >= 1 && line <= lines, "line {line} of {lines}: {shown:?}");
    let line_chars = text.split('\n').nth(line - 1).map_or(0, |l| l.chars().count());
    assert!(col >= 1 && col <= line_chars + 1, "col {col} of {line_chars}: {shown:?}");
    assert!(!e.message.is_empty(), "{shown:?}");
}

fn keys_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("portcullis-fuzz-keys-{}.toml", std::process::id()))
    })
}

fn keys_config() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            r#"
[[listeners]]
name = "http"
listen = "127.0.0.1:8080"

[auth.k]
kind = "api_key"
keys_file = {path:?}

[upstreams.app]
targets = ["127.0.0.1:9001"]

[[routes]]
name = "r"
path_prefix = "/r"
auth = ["k"]
upstream = "app"
"#,
            path = keys_path().display().to_string()
        )
    })
}

fn check_keys_file(text: &str) {
    let path = keys_path();
    std::fs::write(path, text).expect("write the keys file");
    match parse_str(Path::new(CONFIG), keys_config()) {
        Ok(config) => {
            let keys = config
                .auth
                .iter()
                .find_map(|p| match &p.kind {
                    AuthKind::ApiKey(k) => Some(k.keys.clone()),
                    _ => None,
                })
                .expect("the api_key provider");
            let mut ids = std::collections::HashSet::new();
            for key in keys.iter() {
                assert_eq!(key.hash.len(), 32);
                assert!(
                    !key.id.is_empty()
                        && key.id.len() <= 64
                        && key.id.bytes().all(|b| b.is_ascii_alphanumeric()),
                    "key id {:?}",
                    key.id
                );
                assert!(ids.insert(key.id.clone()), "duplicate key id {:?}", key.id);
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            for e in &errors.0 {
                let shown = e.to_string();
                if e.file == *path {
                    check_keys_rendering(e, text, path);
                } else {
                    // The fixed configuration is valid: only an empty keys
                    // file may make it fail.
                    assert!(e.file == Path::new(CONFIG), "{shown:?}");
                    check_rendering(e, keys_config());
                }
            }
        }
    }
}

/// `KEYSFILE:LINE:COL: message`, at a place inside the keys text.
fn check_keys_rendering(e: &ConfigError, text: &str, path: &Path) {
    let shown = e.to_string();
    let (line, col) = e.position.unwrap_or_else(|| panic!("no place: {shown:?}"));
    assert!(
        shown.starts_with(&format!("{}:{line}:{col}: ", path.display())),
        "{shown:?}"
    );
    let lines = text.split('\n').count();
    assert!(line >= 1 && line <= lines, "line {line} of {lines}: {shown:?}");
    let line_chars = text.split('\n').nth(line - 1).map_or(0, |l| l.chars().count());
    assert!(col >= 1 && col <= line_chars + 1, "col {col} of {line_chars}: {shown:?}");
}
