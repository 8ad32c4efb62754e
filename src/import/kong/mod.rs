//! `portcullis import kong FILE.yaml`: a Kong declarative configuration
//! (decK format 3.x) converted into a Portcullis configuration and API keys
//! file (README, "Moving from Kong").
//!
//! Kong's plaintext API keys become SHA-256 hashes and are never written
//! out. Everything the conversion cannot carry over is reported, one
//! `FILE: PATH: not converted: WHY` line each; a construct carried over
//! with a behaviour that differs is reported as `converted approximately`.
//! A route whose security the conversion cannot keep (both key-auth and jwt
//! required, an acl without authentication) is left out rather than opened.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::toml_out::{self as out, string as q, strings as qs};

mod consumers;
mod plugins;
mod routes;
mod services;
#[cfg(test)]
mod tests;

/// Larger inputs are refused unread: a declarative file is configuration.
const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;
/// Kong's default proxy listener.
const LISTEN: &str = "0.0.0.0:8000";
/// Portcullis' default `[limits] max_body_bytes`.
const DEFAULT_MAX_BODY: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: larger than {MAX_INPUT_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: not YAML: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path} exists; choose another --out-dir")]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a conversion produced.
#[derive(Debug)]
pub struct Converted {
    /// The Portcullis configuration.
    pub config: String,
    /// The API keys file (hashes only).
    pub keys: String,
    /// Other files the configuration names (JWT verification keys), by
    /// name within the output directory.
    pub files: Vec<(String, Vec<u8>)>,
    /// `FILE: PATH: not converted: WHY` lines (and `converted
    /// approximately` ones), in the order met.
    pub notes: Vec<String>,
    pub routes: usize,
    pub keys_converted: usize,
}

/// Reads `file`, converts it, and writes `portcullis.toml`, `api_keys.toml`
/// and the key files into `out_dir` (created if missing; existing files are
/// never overwritten).
pub fn import(file: &Path, out_dir: &Path) -> Result<Converted, ImportError> {
    let read_err = |source| ImportError::Read {
        path: file.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(file).map_err(read_err)?.len();
    if size > MAX_INPUT_BYTES {
        return Err(ImportError::TooLarge {
            path: file.to_path_buf(),
        });
    }
    let text = std::fs::read_to_string(file).map_err(read_err)?;
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImportError::Write { path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(write_err(out_dir))?;
    let dir = std::fs::canonicalize(out_dir).map_err(write_err(out_dir))?;
    let label = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let converted = convert(&label, file, &text, &dir)?;
    let mut outputs = vec![
        (
            "portcullis.toml".to_string(),
            converted.config.clone().into_bytes(),
        ),
        (
            "api_keys.toml".to_string(),
            converted.keys.clone().into_bytes(),
        ),
    ];
    outputs.extend(converted.files.iter().cloned());
    for (name, _) in &outputs {
        let path = dir.join(name);
        if path.exists() {
            return Err(ImportError::Exists { path });
        }
    }
    for (name, bytes) in &outputs {
        write_private(&dir.join(name), bytes)?;
    }
    Ok(converted)
}

/// Written readable by the owner only: the keys file and HMAC secrets are
/// credentials' verifiers, and the configuration names them.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ImportError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| ImportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)
}

/// Converts decK YAML `text`; `label` starts every note, file paths written
/// into the configuration are under `dir`.
pub fn convert(label: &str, file: &Path, text: &str, dir: &Path) -> Result<Converted, ImportError> {
    let doc: Value = serde_norway::from_str(text).map_err(|e| ImportError::Yaml {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    let format_err = |message: &str| ImportError::Format {
        path: file.to_path_buf(),
        message: message.to_string(),
    };
    let root = doc
        .as_object()
        .ok_or_else(|| format_err("the top level must be a mapping"))?;
    match root.get("_format_version").and_then(scalar_text) {
        Some(v) if v.starts_with("3.") => {}
        Some(v) => {
            return Err(format_err(&format!(
                "_format_version \"{v}\": only decK format 3.x is read (deck file convert upgrades older files)"
            )))
        }
        None => return Err(format_err("no _format_version: not a decK declarative file")),
    }
    let mut k = Kong::new(label, dir);
    k.read(root);
    Ok(k.finish())
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A plugin instance and where it applies.
#[derive(Clone)]
struct Plugin {
    name: String,
    config: Map<String, Value>,
    path: String,
    service: Option<String>,
    route: Option<String>,
}

struct Service {
    name: String,
    upstream: Option<String>,
}

struct Route {
    kong_name: String,
    path: String,
    service: Option<String>,
    raw: Map<String, Value>,
}

/// A provider with the settings it was rendered from, so that identical
/// plugin instances share one.
struct Provider {
    name: String,
    body: String,
}

struct Kong<'a> {
    label: &'a str,
    dir: &'a Path,
    notes: Vec<String>,
    services: Vec<Service>,
    routes: Vec<Route>,
    plugins: Vec<Plugin>,
    kong_upstreams: BTreeMap<String, (String, Map<String, Value>)>,
    /// Kong ids → names, for references by id.
    ids: BTreeMap<String, String>,
    // Output.
    names: Vec<String>,
    upstream_out: Vec<String>,
    providers: Vec<Provider>,
    jwt_providers: Vec<String>,
    /// Rendered routes, and whether each keeps the default body limit.
    routes_out: Vec<(String, bool)>,
    keys_out: String,
    keys_converted: usize,
    /// Hashes of the opaque keys written, which must differ.
    opaque_hashes: std::collections::HashSet<String>,
    files: Vec<(String, Vec<u8>)>,
    redis_url: Option<String>,
    on_error: Option<&'static str>,
    max_body: u64,
}

fn obj(v: &Value) -> Option<&Map<String, Value>> {
    v.as_object()
}

fn list(m: &Map<String, Value>, key: &str) -> Vec<Value> {
    m.get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn text(m: &Map<String, Value>, key: &str) -> Option<String> {
    m.get(key).and_then(scalar_text)
}

fn text_list(m: &Map<String, Value>, key: &str) -> Vec<String> {
    list(m, key).iter().filter_map(scalar_text).collect()
}

fn is_default(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_default),
        _ => false,
    }
}

/// A plugin reference (`service: NAME`, `{name: NAME}` or `{id: ID}`).
fn reference(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => text(o, "name").or_else(|| text(o, "id")),
        _ => None,
    }
}

impl<'a> Kong<'a> {
    fn new(label: &'a str, dir: &'a Path) -> Self {
        Kong {
            label,
            dir,
            notes: Vec::new(),
            services: Vec::new(),
            routes: Vec::new(),
            plugins: Vec::new(),
            kong_upstreams: BTreeMap::new(),
            ids: BTreeMap::new(),
            names: Vec::new(),
            upstream_out: Vec::new(),
            providers: Vec::new(),
            jwt_providers: Vec::new(),
            routes_out: Vec::new(),
            keys_out: String::new(),
            keys_converted: 0,
            opaque_hashes: Default::default(),
            files: Vec::new(),
            redis_url: None,
            on_error: None,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    fn not(&mut self, path: &str, why: impl std::fmt::Display) {
        self.notes
            .push(format!("{}: {path}: not converted: {why}", self.label));
    }

    fn approx(&mut self, path: &str, why: impl std::fmt::Display) {
        self.notes.push(format!(
            "{}: {path}: converted approximately: {why}",
            self.label
        ));
    }

    /// Reports every member of `m` that is not in `handled` and not at its
    /// Kong default.
    fn rest(
        &mut self,
        path: &str,
        m: &Map<String, Value>,
        handled: &[&str],
        defaults: &[(&str, Value)],
    ) {
        for (key, value) in m {
            if handled.contains(&key.as_str()) || key.starts_with('_') {
                continue;
            }
            if defaults.iter().any(|(k, d)| k == key && d == value) || is_default(value) {
                continue;
            }
            self.not(&format!("{path}.{key}"), "no Portcullis equivalent");
        }
    }

    fn resolve(&self, r: Option<String>) -> Option<String> {
        r.map(|r| self.ids.get(&r).cloned().unwrap_or(r))
    }

    fn read(&mut self, root: &Map<String, Value>) {
        for (key, value) in root {
            match key.as_str() {
                "services" | "routes" | "upstreams" | "consumers" | "plugins" => {}
                k if k.starts_with('_') => {}
                _ if is_default(value) => {}
                _ => self.not(key, "no Portcullis equivalent"),
            }
        }
        // Names first, so that references by id resolve.
        for v in list(root, "services") {
            if let (Some(o), _) = (obj(&v), ()) {
                if let (Some(id), Some(name)) = (text(o, "id"), text(o, "name")) {
                    self.ids.insert(id, name);
                }
                for r in list(o, "routes") {
                    if let Some(r) = obj(&r) {
                        if let (Some(id), Some(name)) = (text(r, "id"), text(r, "name")) {
                            self.ids.insert(id, name);
                        }
                    }
                }
            }
        }
        for v in list(root, "consumers") {
            if let Some(o) = obj(&v) {
                if let (Some(id), Some(name)) = (text(o, "id"), consumer_name(o)) {
                    self.ids.insert(id, name);
                }
            }
        }
        for (i, v) in list(root, "upstreams").iter().enumerate() {
            let path = format!("upstreams[{i}]");
            match obj(v).and_then(|o| text(o, "name").map(|n| (n, o.clone()))) {
                Some((name, o)) => {
                    self.kong_upstreams.insert(name, (path, o));
                }
                None => self.not(&path, "an upstream needs a name"),
            }
        }
        for (i, v) in list(root, "services").iter().enumerate() {
            let path = format!("services[{i}]");
            let Some(o) = obj(v) else {
                self.not(&path, "not a mapping");
                continue;
            };
            self.service(&path, o);
        }
        for (i, v) in list(root, "routes").iter().enumerate() {
            let path = format!("routes[{i}]");
            let Some(o) = obj(v) else {
                self.not(&path, "not a mapping");
                continue;
            };
            let service = self.resolve(reference(o.get("service")));
            self.route_in(&path, o, service);
        }
        for (i, v) in list(root, "consumers").iter().enumerate() {
            let path = format!("consumers[{i}]");
            let Some(o) = obj(v) else {
                self.not(&path, "not a mapping");
                continue;
            };
            self.consumer(&path, o);
        }
        for (i, v) in list(root, "plugins").iter().enumerate() {
            let path = format!("plugins[{i}]");
            if let Some(o) = obj(v) {
                let service = self.resolve(reference(o.get("service")));
                let route = self.resolve(reference(o.get("route")));
                let consumer = self.resolve(reference(o.get("consumer")));
                self.plugin(&path, o, service, route, consumer);
            }
        }
    }

    fn finish(mut self) -> Converted {
        let routes = std::mem::take(&mut self.routes);
        let plugins = self.plugins.clone();
        // Plugins that name a route or service the file does not have.
        for p in &plugins {
            let route_known = p
                .route
                .as_ref()
                .is_none_or(|r| routes.iter().any(|x| &x.kong_name == r));
            let service_known = p
                .service
                .as_ref()
                .is_none_or(|s| self.services.iter().any(|x| &x.name == s));
            if !route_known || !service_known {
                self.not(&p.path, "names a route or service that is not in the file");
            }
        }
        let mut route_names: Vec<String> = Vec::new();
        let mut converted_routes = 0;
        for r in &routes {
            converted_routes += self.route(r, &plugins, &mut route_names);
        }
        // Plugins of a kind reported once per instance rather than per route.
        for p in plugins.iter().filter(|p| p.name == "jwt") {
            self.jwt_plugin(p);
        }
        self.render(converted_routes)
    }

    fn render(mut self, routes: usize) -> Converted {
        let mut config = format!(
            "# Converted from {} by `portcullis import kong`. Read the lines it\n\
             # printed: what they name is not here, or differs from Kong.\n\
             # Validate with `portcullis check -c THIS_FILE`.\n\n\
             [[listeners]]\nname = \"http\"\nlisten = \"{LISTEN}\"\n",
            self.label
        );
        if self.max_body > DEFAULT_MAX_BODY {
            let _ = write!(config, "\n[limits]\nmax_body_bytes = {}\n", self.max_body);
        }
        if let Some(url) = &self.redis_url {
            let _ = write!(
                config,
                "\n[rate_limit_store]\nkind = \"redis\"\nredis_url = {}\non_error = {}\n",
                q(url),
                q(self.on_error.unwrap_or("local"))
            );
        } else if let Some(on_error) = self.on_error.filter(|e| *e != "local") {
            let _ = write!(
                config,
                "\n[rate_limit_store]\nkind = \"local\"\non_error = {}\n",
                q(on_error)
            );
        }
        for u in &self.upstream_out {
            config.push_str(u);
        }
        // Providers are written once; the keys file exists even when empty.
        for p in &self.providers {
            config.push_str(&p.body);
        }
        let body_line = if self.max_body > DEFAULT_MAX_BODY {
            format!("max_body_bytes = {DEFAULT_MAX_BODY}\n")
        } else {
            String::new()
        };
        for (route, default_body) in &self.routes_out {
            config.push_str(route);
            if *default_body {
                config.push_str(&body_line);
            }
        }
        let keys = format!(
            "# API keys converted from {} (SHA-256 hashes; the keys stay with their owners).\n{}",
            self.label, self.keys_out
        );
        let mut seen = std::collections::HashSet::new();
        self.notes.retain(|n| seen.insert(n.clone()));
        Converted {
            config,
            keys,
            files: self.files,
            notes: self.notes,
            routes,
            keys_converted: self.keys_converted,
        }
    }
}

fn consumer_name(o: &Map<String, Value>) -> Option<String> {
    text(o, "username").or_else(|| text(o, "custom_id"))
}
