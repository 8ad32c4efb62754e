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

/// Larger inputs are refused unread: a declarative file is configuration.
const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;
/// Kong's default proxy listener.
const LISTEN: &str = "0.0.0.0:8000";
/// Portcullis' default `[limits] max_body_bytes`.
const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
/// What `secret_file` needs for an HS* provider.
const MIN_HMAC_SECRET: usize = 32;
/// Below this, a key carried over is reported as guessable from its hash.
const MIN_OPAQUE_KEY: usize = 20;

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

    fn plugin(
        &mut self,
        path: &str,
        o: &Map<String, Value>,
        service: Option<String>,
        route: Option<String>,
        consumer: Option<String>,
    ) {
        let Some(name) = text(o, "name") else {
            self.not(path, "a plugin needs a name");
            return;
        };
        if o.get("enabled") == Some(&Value::Bool(false)) {
            self.not(path, format!("plugin {name} is disabled in Kong"));
            return;
        }
        let known = [
            "key-auth",
            "jwt",
            "acl",
            "rate-limiting",
            "cors",
            "ip-restriction",
            "request-size-limiting",
            "request-transformer",
        ];
        if !known.contains(&name.as_str()) {
            self.not(path, format!("plugin {name} has no Portcullis equivalent"));
            return;
        }
        if let Some(c) = &consumer {
            self.not(
                path,
                format!("plugin {name} for consumer {c}: Portcullis settings apply per route, not per consumer"),
            );
            return;
        }
        for key in ["ordering", "instance_name"] {
            if o.get(key).is_some_and(|v| !is_default(v)) {
                self.not(&format!("{path}.{key}"), "no Portcullis equivalent");
            }
        }
        let protocols = text_list(o, "protocols");
        if !protocols.is_empty() && !protocols.iter().any(|p| p == "http" || p == "https") {
            self.not(
                path,
                format!("plugin {name} only for {}", protocols.join(", ")),
            );
            return;
        }
        let config = o
            .get("config")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        self.plugins.push(Plugin {
            name,
            config,
            path: path.to_string(),
            service,
            route,
        });
    }

    fn service(&mut self, path: &str, o: &Map<String, Value>) {
        let kong_name = text(o, "name").or_else(|| text(o, "id"));
        let Some(kong_name) = kong_name else {
            self.not(path, "a service needs a name");
            return;
        };
        for (i, p) in list(o, "plugins").iter().enumerate() {
            if let Some(p) = obj(p) {
                self.plugin(
                    &format!("{path}.plugins[{i}]"),
                    p,
                    Some(kong_name.clone()),
                    None,
                    None,
                );
            }
        }
        for (i, r) in list(o, "routes").iter().enumerate() {
            let rp = format!("{path}.routes[{i}]");
            match obj(r) {
                Some(r) => self.route_in(&rp, r, Some(kong_name.clone())),
                None => self.not(&rp, "not a mapping"),
            }
        }
        if o.get("enabled") == Some(&Value::Bool(false)) {
            self.not(
                path,
                "the service is disabled in Kong; its routes are left out",
            );
            self.services.push(Service {
                name: kong_name,
                upstream: None,
            });
            return;
        }
        let (mut protocol, mut host, mut port, mut svc_path) = (
            text(o, "protocol").unwrap_or_else(|| "http".into()),
            text(o, "host"),
            text(o, "port"),
            text(o, "path"),
        );
        if let Some(url) = text(o, "url") {
            match split_url(&url) {
                Some((p, h, po, pa)) => {
                    protocol = p;
                    host = Some(h);
                    port = po;
                    svc_path = pa;
                }
                None => {
                    self.not(
                        &format!("{path}.url"),
                        format!("`{url}` is not an http(s) URL"),
                    );
                    self.services.push(Service {
                        name: kong_name,
                        upstream: None,
                    });
                    return;
                }
            }
        }
        let upstream = self.upstream(path, o, &kong_name, &protocol, host, port, svc_path);
        self.services.push(Service {
            name: kong_name,
            upstream,
        });
    }

    /// The Portcullis upstream for a service, rendered; its name.
    #[allow(clippy::too_many_arguments)]
    fn upstream(
        &mut self,
        path: &str,
        o: &Map<String, Value>,
        kong_name: &str,
        protocol: &str,
        host: Option<String>,
        port: Option<String>,
        svc_path: Option<String>,
    ) -> Option<String> {
        let tls = match protocol {
            "http" => false,
            "https" => true,
            other => {
                self.not(
                    path,
                    format!("protocol {other}: Portcullis proxies HTTP and HTTPS services"),
                );
                return None;
            }
        };
        if let Some(p) = svc_path.as_deref().filter(|p| !p.is_empty() && *p != "/") {
            self.not(
                &format!("{path}.path"),
                format!("Portcullis does not prepend a path (`{p}`) to the upstream request; the service's routes are left out"),
            );
            return None;
        }
        let Some(host) = host else {
            self.not(path, "a service needs a host or url");
            return None;
        };
        let name = out::name(kong_name, &mut self.names);
        let mut body = format!("\n[upstreams.{}]\n", q(&name));
        if let Some((up_path, up)) = self.kong_upstreams.get(&host).cloned() {
            self.kong_upstream(&mut body, &up_path, &up, tls);
        } else {
            let port = port.unwrap_or_else(|| if tls { "443" } else { "80" }.into());
            let _ = writeln!(body, "targets = [{}]", q(&join_host_port(&host, &port)));
            if tls && host.parse::<std::net::IpAddr>().is_err() {
                let _ = writeln!(body, "sni = {}", q(&host));
            }
        }
        if tls {
            body.push_str("tls = true\n");
        }
        let ms = |v: Option<&Value>| v.and_then(Value::as_u64);
        if let Some(t) = ms(o.get("connect_timeout")) {
            let _ = writeln!(body, "connect_timeout_ms = {}", t.clamp(1, 3_600_000));
        }
        if let Some(t) = ms(o.get("read_timeout")) {
            let _ = writeln!(body, "read_timeout_ms = {}", t.clamp(1, 3_600_000));
        }
        if let Some(r) = ms(o.get("retries")) {
            if r > 10 {
                self.approx(
                    &format!("{path}.retries"),
                    format!("{r} retries capped at 10"),
                );
            }
            let _ = writeln!(body, "retries = {}", r.min(10));
        }
        self.rest(
            path,
            o,
            &[
                "name",
                "id",
                "url",
                "protocol",
                "host",
                "port",
                "path",
                "routes",
                "plugins",
                "connect_timeout",
                "read_timeout",
                "retries",
                "tags",
                "enabled",
                "created_at",
                "updated_at",
            ],
            &[("write_timeout", Value::from(60000))],
        );
        self.upstream_out.push(body);
        Some(name)
    }

    fn kong_upstream(&mut self, body: &mut String, path: &str, up: &Map<String, Value>, tls: bool) {
        let mut targets = Vec::new();
        for (i, t) in list(up, "targets").iter().enumerate() {
            let tp = format!("{path}.targets[{i}]");
            let Some(t) = obj(t) else { continue };
            let Some(addr) = text(t, "target") else {
                self.not(&tp, "a target needs `target`");
                continue;
            };
            let weight = t.get("weight").and_then(Value::as_u64).unwrap_or(100);
            if weight == 0 {
                self.not(&tp, "weight 0 (disabled in Kong): left out");
                continue;
            }
            let addr = if has_port(&addr) {
                addr
            } else {
                join_host_port(&addr, "8000")
            };
            targets.push((addr, weight));
        }
        if targets.is_empty() {
            self.not(
                path,
                "no target with a weight; the upstream has nothing to send to",
            );
        }
        // Portcullis weights are 1-1000 and a balancer cycles through each
        // target `weight` times in a row: weights are reduced by their
        // common divisor (Kong's default 100 each becomes 1 each).
        let common = targets.iter().fold(0, |g, t| gcd(g, t.1)).max(1);
        let max = targets.iter().map(|t| t.1 / common).max().unwrap_or(1);
        let rounding = max.div_ceil(1000).max(1);
        if rounding > 1 {
            self.approx(
                path,
                format!("target weights divided by {rounding} (Portcullis allows 1-1000)"),
            );
        }
        let scale = common * rounding;
        let rendered: Vec<String> = targets
            .iter()
            .map(|(a, w)| format!("{{ address = {}, weight = {} }}", q(a), (w / scale).max(1)))
            .collect();
        let _ = writeln!(body, "targets = [{}]", rendered.join(", "));
        match text(up, "algorithm").as_deref() {
            None | Some("round-robin") => {}
            Some("consistent-hashing") => {
                let key = match (text(up, "hash_on").as_deref(), text(up, "hash_on_header")) {
                    (Some("consumer"), _) => Some("consumer".to_string()),
                    (Some("ip"), _) => Some("client_ip".to_string()),
                    (Some("header"), Some(h)) => Some(format!("header:{}", h.to_ascii_lowercase())),
                    (other, _) => {
                        self.not(
                            &format!("{path}.hash_on"),
                            format!(
                                "hashing on {} has no Portcullis equivalent; round robin",
                                other.unwrap_or("none")
                            ),
                        );
                        None
                    }
                };
                if let Some(key) = key {
                    let _ = writeln!(
                        body,
                        "balance = \"consistent_hash\"\nhash_key = {}",
                        q(&key)
                    );
                }
            }
            Some(other) => self.approx(
                &format!("{path}.algorithm"),
                format!("{other}: Portcullis balances round robin (weighted)"),
            ),
        }
        if let Some(hc) = up.get("healthchecks").and_then(Value::as_object) {
            self.health(body, &format!("{path}.healthchecks"), hc, tls);
        }
        self.rest(
            path,
            up,
            &[
                "name",
                "id",
                "targets",
                "algorithm",
                "hash_on",
                "hash_on_header",
                "healthchecks",
                "tags",
                "created_at",
                "updated_at",
            ],
            &[
                ("slots", Value::from(10000)),
                ("hash_fallback", Value::from("none")),
                ("hash_on_cookie_path", Value::from("/")),
                ("use_srv_name", Value::Bool(false)),
            ],
        );
    }

    fn health(&mut self, body: &mut String, path: &str, hc: &Map<String, Value>, tls: bool) {
        let active = hc.get("active").and_then(Value::as_object);
        let num = |m: Option<&Map<String, Value>>, a: &str, b: &str| {
            m.and_then(|m| m.get(a))
                .and_then(Value::as_object)
                .and_then(|x| x.get(b))
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
        };
        let healthy_every = num(active, "healthy", "interval");
        let unhealthy_every = num(active, "unhealthy", "interval");
        if let Some(active) = active.filter(|_| healthy_every > 0.0 || unhealthy_every > 0.0) {
            let every = if healthy_every > 0.0 {
                healthy_every
            } else {
                unhealthy_every
            };
            let kind = text(active, "type").unwrap_or_else(|| "http".into());
            let probe = match kind.as_str() {
                "tcp" => "kind = \"tcp\"".to_string(),
                "http" | "https" => {
                    if (kind == "https") != tls {
                        self.approx(
                            &format!("{path}.active.type"),
                            "checks use the upstream's own TLS setting",
                        );
                    }
                    format!(
                        "kind = \"http\", path = {}",
                        q(&text(active, "http_path").unwrap_or_else(|| "/".into()))
                    )
                }
                other => {
                    self.not(&format!("{path}.active.type"), format!("{other} checks"));
                    return;
                }
            };
            let timeout = active.get("timeout").and_then(Value::as_f64).unwrap_or(1.0);
            let failures = num(Some(active), "unhealthy", "http_failures")
                .max(num(Some(active), "unhealthy", "tcp_failures"))
                .max(num(Some(active), "unhealthy", "timeouts"));
            let successes = num(Some(active), "healthy", "successes");
            let _ = writeln!(
                body,
                "health_check = {{ {probe}, interval_ms = {}, timeout_ms = {}, unhealthy_threshold = {}, healthy_threshold = {} }}",
                ((every * 1000.0) as u64).clamp(10, 3_600_000),
                ((timeout * 1000.0) as u64).clamp(1, 3_600_000),
                (failures as u64).clamp(1, 100),
                (successes as u64).clamp(1, 100),
            );
        }
        if let Some(passive) = hc.get("passive").and_then(Value::as_object) {
            let p = Some(passive);
            if num(p, "unhealthy", "http_failures") > 0.0
                || num(p, "unhealthy", "tcp_failures") > 0.0
                || num(p, "unhealthy", "timeouts") > 0.0
            {
                self.not(
                    &format!("{path}.passive"),
                    "Kong's passive checks: use Portcullis' outlier_detection (README, Resilience)",
                );
            }
        }
    }

    fn route_in(&mut self, path: &str, o: &Map<String, Value>, service: Option<String>) {
        let kong_name = text(o, "name")
            .or_else(|| text(o, "id"))
            .unwrap_or_else(|| format!("{}-route", service.clone().unwrap_or_default()));
        for (i, p) in list(o, "plugins").iter().enumerate() {
            if let Some(p) = obj(p) {
                self.plugin(
                    &format!("{path}.plugins[{i}]"),
                    p,
                    None,
                    Some(kong_name.clone()),
                    None,
                );
            }
        }
        self.routes.push(Route {
            kong_name,
            path: path.to_string(),
            service,
            raw: o.clone(),
        });
    }

    fn consumer(&mut self, path: &str, o: &Map<String, Value>) {
        let Some(name) = consumer_name(o) else {
            self.not(path, "a consumer needs a username or custom_id");
            return;
        };
        for (i, p) in list(o, "plugins").iter().enumerate() {
            if let Some(p) = obj(p) {
                self.plugin(
                    &format!("{path}.plugins[{i}]"),
                    p,
                    None,
                    None,
                    Some(name.clone()),
                );
            }
        }
        let groups: Vec<String> = list(o, "acls")
            .iter()
            .filter_map(|a| obj(a).and_then(|a| text(a, "group")))
            .collect();
        for (i, cred) in list(o, "keyauth_credentials").iter().enumerate() {
            let cp = format!("{path}.keyauth_credentials[{i}]");
            let Some(cred) = obj(cred) else { continue };
            self.api_key(&cp, cred, &name, &groups);
        }
        for (i, secret) in list(o, "jwt_secrets").iter().enumerate() {
            let sp = format!("{path}.jwt_secrets[{i}]");
            let Some(secret) = obj(secret) else { continue };
            self.jwt_secret(&sp, secret, &name);
        }
        self.rest(
            path,
            o,
            &[
                "username",
                "custom_id",
                "id",
                "acls",
                "keyauth_credentials",
                "jwt_secrets",
                "plugins",
                "tags",
                "created_at",
                "updated_at",
            ],
            &[],
        );
    }

    /// One `[[keys]]` entry: the hash of Kong's key, never the key.
    fn api_key(
        &mut self,
        path: &str,
        cred: &Map<String, Value>,
        consumer: &str,
        groups: &[String],
    ) {
        let Some(key) = text(cred, "key") else {
            self.not(
                path,
                "no key (Kong generates one at creation; export it with deck dump)",
            );
            return;
        };
        let (id, opaque) = match portcullis_key_id(&key) {
            Some(id) => (id.to_string(), false),
            None => (opaque_key_id(cred, self.keys_converted + 1), true),
        };
        if self.keys_out.contains(&format!("id = {}\n", q(&id))) {
            self.not(path, format!("a second key with id {id}"));
            return;
        }
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        if opaque && !self.opaque_hashes.insert(hash.clone()) {
            self.not(path, "the same key as an earlier credential");
            return;
        }
        if opaque && key.chars().count() < MIN_OPAQUE_KEY {
            self.approx(
                path,
                format!(
                    "a key of {} characters can be guessed from its hash if the keys file leaks; \
                     replace it with `portcullis apikey generate --consumer NAME`",
                    key.chars().count()
                ),
            );
        }
        if cred.get("ttl").is_some_and(|v| !is_default(v)) {
            self.not(
                &format!("{path}.ttl"),
                "set expires_at in the keys file instead",
            );
        }
        let _ = write!(
            self.keys_out,
            "\n[[keys]]\nid = {}\nconsumer = {}\nhash = {}\nroles = {}\n{}",
            q(&id),
            q(consumer),
            q(&format!("sha256:{hash}")),
            qs(groups),
            if opaque { "opaque = true\n" } else { "" },
        );
        self.keys_converted += 1;
    }

    /// One `jwt` provider per Kong JWT credential: the credential's `key`
    /// is the issuer, its secret or public key the only key.
    fn jwt_secret(&mut self, path: &str, s: &Map<String, Value>, consumer: &str) {
        let Some(issuer) = text(s, "key") else {
            self.not(path, "no key (the iss value)");
            return;
        };
        let alg = text(s, "algorithm").unwrap_or_else(|| "HS256".into());
        let name = out::name(&format!("jwt-{consumer}"), &mut self.names);
        let file = format!(
            "{name}.{}",
            if alg.starts_with("HS") {
                "secret"
            } else {
                "jwks.json"
            }
        );
        let source = if alg.starts_with("HS") {
            let Some(secret) = text(s, "secret") else {
                self.not(path, "no secret");
                return;
            };
            if secret != secret.trim() || secret.trim().len() < MIN_HMAC_SECRET {
                self.not(
                    &format!("{path}.secret"),
                    format!("Portcullis needs an HMAC secret of at least {MIN_HMAC_SECRET} characters without surrounding spaces"),
                );
                return;
            }
            if !matches!(alg.as_str(), "HS256" | "HS384" | "HS512") {
                self.not(
                    &format!("{path}.algorithm"),
                    format!("{alg}: Portcullis knows HS256, HS384, HS512"),
                );
                return;
            }
            self.files.push((file.clone(), secret.into_bytes()));
            "secret_file"
        } else {
            let Some(pem) = text(s, "rsa_public_key") else {
                self.not(path, format!("{alg} without rsa_public_key"));
                return;
            };
            match jwk_from_pem(&pem, &alg) {
                Ok(jwk) => {
                    let jwks = serde_json::json!({ "keys": [jwk] });
                    self.files
                        .push((file.clone(), jwks.to_string().into_bytes()));
                }
                Err(why) => {
                    self.not(&format!("{path}.rsa_public_key"), why);
                    return;
                }
            }
            "jwks_file"
        };
        let file_path = self.dir.join(&file);
        let mut body = format!("\n[auth.{}]\nkind = \"jwt\"\n", q(&name));
        let _ = writeln!(body, "issuer = {}", q(&issuer));
        body.push_str("audiences = []\n");
        let _ = writeln!(body, "algorithms = [{}]", q(&alg));
        let _ = writeln!(body, "{source} = {}", q(&file_path.to_string_lossy()));
        body.push_str("required_claims = []\n");
        self.jwt_providers.push(name.clone());
        self.providers.push(Provider { name, body });
    }

    /// A key-auth plugin instance as a provider (shared by identical ones).
    fn key_auth_provider(&mut self, p: &Plugin) -> String {
        let c = &p.config;
        let names = text_list(c, "key_names");
        let names = if names.is_empty() {
            vec!["apikey".to_string()]
        } else {
            names
        };
        if names.len() > 1 {
            self.not(
                &format!("{}.config.key_names", p.path),
                format!("only the first key name ({}) is read", names[0]),
            );
        }
        let key_name = names[0].to_ascii_lowercase();
        let in_header = c.get("key_in_header") != Some(&Value::Bool(false));
        let in_query = c.get("key_in_query") != Some(&Value::Bool(false));
        let hide = c.get("hide_credentials") == Some(&Value::Bool(true));
        let keys_file = self.dir.join("api_keys.toml");
        let mut body = String::from("kind = \"api_key\"\n");
        let _ = writeln!(body, "keys_file = {}", q(&keys_file.to_string_lossy()));
        if in_header {
            let _ = writeln!(body, "header = {}", q(&key_name));
        } else {
            self.approx(
                &format!("{}.config.key_in_header", p.path),
                "Portcullis always reads the key header too",
            );
            let _ = writeln!(body, "header = {}", q(&key_name));
        }
        if in_query {
            let _ = writeln!(body, "query_param = {}", q(&names[0]));
        }
        let _ = writeln!(body, "forward_credentials = {}", !hide);
        for (key, why) in [
            ("key_in_body", "keys in request bodies are not read"),
            (
                "anonymous",
                "Portcullis has no anonymous consumer; a route is public or authenticated",
            ),
        ] {
            if c.get(key).is_some_and(|v| !is_default(v)) {
                self.not(&format!("{}.config.{key}", p.path), why);
            }
        }
        self.rest(
            &format!("{}.config", p.path),
            c,
            &[
                "key_names",
                "key_in_header",
                "key_in_query",
                "hide_credentials",
                "key_in_body",
                "anonymous",
            ],
            &[
                ("run_on_preflight", Value::Bool(true)),
                ("realm", Value::Null),
            ],
        );
        if let Some(existing) = self.providers.iter().find(|x| x.body.ends_with(&body)) {
            return existing.name.clone();
        }
        let name = out::name("key-auth", &mut self.names);
        self.providers.push(Provider {
            name: name.clone(),
            body: format!("\n[auth.{}]\n{body}", q(&name)),
        });
        name
    }

    /// The jwt plugin's settings that have no provider equivalent.
    fn jwt_plugin(&mut self, p: &Plugin) {
        let c = &p.config;
        let path = format!("{}.config", p.path);
        let uri = text_list(c, "uri_param_names");
        if c.get("uri_param_names").is_none() || !uri.is_empty() {
            self.not(
                &format!("{path}.uri_param_names"),
                "tokens in query parameters are not read; only the Authorization header",
            );
        }
        if !text_list(c, "cookie_names").is_empty() {
            self.not(
                &format!("{path}.cookie_names"),
                "tokens in cookies are not read",
            );
        }
        let headers = text_list(c, "header_names");
        if headers
            .iter()
            .any(|h| !h.eq_ignore_ascii_case("authorization"))
        {
            self.not(
                &format!("{path}.header_names"),
                "only the Authorization header is read",
            );
        }
        if text(c, "key_claim_name").is_some_and(|k| k != "iss") {
            self.not(
                &format!("{path}.key_claim_name"),
                "credentials are told apart by `iss`",
            );
        }
        if !text_list(c, "claims_to_verify").iter().any(|x| x == "exp") {
            self.approx(
                &format!("{path}.claims_to_verify"),
                "Portcullis always requires and checks exp (and nbf when present)",
            );
        }
        if c.get("secret_is_base64") == Some(&Value::Bool(true)) {
            self.not(
                &format!("{path}.secret_is_base64"),
                "secrets are used as written",
            );
        }
        if c.get("maximum_expiration")
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
            > 0.0
        {
            self.not(
                &format!("{path}.maximum_expiration"),
                "no Portcullis equivalent",
            );
        }
        if c.get("anonymous").is_some_and(|v| !is_default(v)) {
            self.not(
                &format!("{path}.anonymous"),
                "Portcullis has no anonymous consumer",
            );
        }
        self.rest(
            &path,
            c,
            &[
                "uri_param_names",
                "cookie_names",
                "header_names",
                "key_claim_name",
                "claims_to_verify",
                "secret_is_base64",
                "maximum_expiration",
                "anonymous",
            ],
            &[
                ("run_on_preflight", Value::Bool(true)),
                ("realm", Value::Null),
            ],
        );
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

    /// The effective plugin of each name for a route: route, then service,
    /// then global (Kong's precedence without consumers).
    fn effective<'p>(&self, r: &Route, plugins: &'p [Plugin]) -> BTreeMap<String, &'p Plugin> {
        let mut chosen: BTreeMap<String, (u8, &'p Plugin)> = BTreeMap::new();
        for p in plugins {
            let rank = match (&p.route, &p.service) {
                (Some(route), _) if *route == r.kong_name => 3,
                (Some(_), _) => continue,
                (None, Some(s)) if Some(s) == r.service.as_ref() => 2,
                (None, Some(_)) => continue,
                (None, None) => 1,
            };
            if chosen.get(&p.name).is_none_or(|(have, _)| rank > *have) {
                chosen.insert(p.name.clone(), (rank, p));
            }
        }
        chosen.into_iter().map(|(k, (_, p))| (k, p)).collect()
    }

    /// Renders one Kong route as one Portcullis route per path; returns how
    /// many were written.
    fn route(&mut self, r: &Route, plugins: &[Plugin], names: &mut Vec<String>) -> usize {
        let path = &r.path;
        let Some(service) = r.service.as_ref() else {
            self.not(path, "a route without a service");
            return 0;
        };
        let Some(upstream) = self
            .services
            .iter()
            .find(|s| &s.name == service)
            .map(|s| s.upstream.clone())
        else {
            self.not(path, format!("service {service} is not in the file"));
            return 0;
        };
        let Some(upstream) = upstream else {
            self.not(path, format!("service {service} was not converted"));
            return 0;
        };
        let o = &r.raw;
        let protocols = text_list(o, "protocols");
        if !protocols.is_empty() && !protocols.iter().any(|p| p == "http" || p == "https") {
            self.not(
                path,
                format!("protocols {}: Portcullis routes HTTP", protocols.join(", ")),
            );
            return 0;
        }
        let mut lines = String::new();
        let hosts = text_list(o, "hosts");
        if hosts.iter().any(|h| h.contains('*')) {
            self.not(
                &format!("{path}.hosts"),
                "wildcard hosts; the route is left out",
            );
            return 0;
        }
        if !hosts.is_empty() {
            let hosts: Vec<String> = hosts
                .iter()
                .map(|h| {
                    h.rsplit_once(':')
                        .filter(|(_, p)| p.parse::<u16>().is_ok())
                        .map_or(h.clone(), |(h, _)| h.to_string())
                })
                .collect();
            let _ = writeln!(lines, "hosts = {}", qs(&hosts));
        }
        let methods = text_list(o, "methods");
        if !methods.is_empty() {
            let upper: Vec<String> = methods.iter().map(|m| m.to_ascii_uppercase()).collect();
            let _ = writeln!(lines, "methods = {}", qs(&upper));
        }
        let strip = o.get("strip_path") != Some(&Value::Bool(false));
        let _ = writeln!(lines, "upstream = {}", q(&upstream));
        if let Some(headers) = o
            .get("headers")
            .and_then(Value::as_object)
            .filter(|h| !h.is_empty())
        {
            let mut pairs = Vec::new();
            for (name, values) in headers {
                let values: Vec<String> = match values {
                    Value::Array(a) => a.iter().filter_map(scalar_text).collect(),
                    v => scalar_text(v).into_iter().collect(),
                };
                if values.len() == 1 {
                    pairs.push((name.to_ascii_lowercase(), values[0].clone()));
                } else {
                    self.not(
                        &format!("{path}.headers.{name}"),
                        "several accepted values; match_headers takes one",
                    );
                    return 0;
                }
            }
            self.approx(
                &format!("{path}.headers"),
                "match_headers compares values exactly and case-sensitively",
            );
            let _ = writeln!(lines, "match_headers = {}", out::string_map(&pairs));
        }
        if o.get("preserve_host") != Some(&Value::Bool(true)) {
            self.approx(
                &format!("{path}.preserve_host"),
                "Portcullis forwards the client's Host; Kong sent the service's host",
            );
        }
        for (key, why) in [
            ("snis", "routing by SNI"),
            ("sources", "routing by source address (use allow_cidrs)"),
            ("destinations", "routing by destination address"),
        ] {
            if o.get(key).is_some_and(|v| !is_default(v)) {
                self.not(&format!("{path}.{key}"), why);
            }
        }
        self.rest(
            path,
            o,
            &[
                "name",
                "id",
                "paths",
                "methods",
                "hosts",
                "strip_path",
                "preserve_host",
                "protocols",
                "headers",
                "plugins",
                "service",
                "tags",
                "snis",
                "sources",
                "destinations",
                "created_at",
                "updated_at",
            ],
            &[
                ("regex_priority", Value::from(0)),
                ("path_handling", Value::from("v0")),
                ("https_redirect_status_code", Value::from(426)),
                ("request_buffering", Value::Bool(true)),
                ("response_buffering", Value::Bool(true)),
            ],
        );

        let effective = self.effective(r, plugins);
        let Some((security, default_body)) = self.route_plugins(r, &effective) else {
            return 0;
        };
        lines.push_str(&security);

        let mut paths = text_list(o, "paths");
        if paths.is_empty() {
            paths.push("/".into());
        }
        let mut written = 0;
        for (i, p) in paths.iter().enumerate() {
            if p.starts_with('~') || !p.starts_with('/') {
                self.not(
                    &format!("{path}.paths[{i}]"),
                    format!("regex path `{p}`: Portcullis matches prefixes and exact paths"),
                );
                continue;
            }
            let prefix = if p.len() > 1 {
                p.trim_end_matches('/')
            } else {
                p.as_str()
            };
            let prefix = if prefix.is_empty() { "/" } else { prefix };
            if prefix != p {
                self.approx(
                    &format!("{path}.paths[{i}]"),
                    format!("`{p}` matched as the prefix `{prefix}`"),
                );
            }
            let base = if paths.len() > 1 {
                format!("{}-{i}", r.kong_name)
            } else {
                r.kong_name.clone()
            };
            let name = out::name(&base, names);
            let mut route = format!(
                "\n[[routes]]\nname = {}\npath_prefix = {}\n",
                q(&name),
                q(prefix)
            );
            if strip && prefix != "/" {
                route.push_str("strip_prefix = true\n");
            }
            route.push_str(&lines);
            self.routes_out.push((route, default_body));
            written += 1;
        }
        written
    }

    /// The route lines the plugins make (auth, authorization, limits,
    /// CORS, headers); `None` when the route must be left out.
    fn route_plugins(
        &mut self,
        r: &Route,
        plugins: &BTreeMap<String, &Plugin>,
    ) -> Option<(String, bool)> {
        let path = &r.path;
        let mut lines = String::new();
        let key_auth = plugins.get("key-auth").copied();
        let jwt = plugins.get("jwt").copied();
        if key_auth.is_some() && jwt.is_some() {
            self.not(
                path,
                "key-auth and jwt both apply: Kong requires both, a Portcullis route accepts any one of its providers; the route is left out",
            );
            return None;
        }
        let mut auth: Vec<String> = Vec::new();
        if let Some(p) = key_auth {
            auth.push(self.key_auth_provider(p));
        }
        if jwt.is_some() {
            if self.jwt_providers.is_empty() {
                self.not(path, "jwt applies but no consumer has a jwt_secret Portcullis can use; the route is left out");
                return None;
            }
            auth.extend(self.jwt_providers.iter().cloned());
        }
        if auth.is_empty() {
            if let Some(acl) = plugins.get("acl") {
                self.not(
                    &acl.path,
                    format!(
                        "acl on {} without key-auth or jwt; the route is left out",
                        r.kong_name
                    ),
                );
                return None;
            }
            lines.push_str("public = true\n");
        } else {
            let _ = writeln!(lines, "auth = {}", qs(&auth));
        }
        if let Some(acl) = plugins.get("acl") {
            let c = &acl.config;
            let allow = text_list(c, "allow");
            let deny = text_list(c, "deny");
            if !allow.is_empty() {
                let _ = writeln!(lines, "allow_roles = {}", qs(&allow));
            }
            if !deny.is_empty() {
                if deny
                    .iter()
                    .any(|g| g.contains(['"', '\\']) || g.chars().any(char::is_control))
                {
                    self.not(
                        &format!("{}.config.deny", acl.path),
                        "a group name with quotes or backslashes",
                    );
                    return None;
                }
                let terms: Vec<String> = deny
                    .iter()
                    .map(|g| format!("!(\"{g}\" in identity.roles)"))
                    .collect();
                let _ = writeln!(lines, "policy = {}", q(&terms.join(" && ")));
            }
            if jwt.is_some() {
                self.approx(
                    &format!("{}.config", acl.path),
                    "JWT callers' roles come from the token's roles claim, not from Kong consumer groups",
                );
            }
            if c.get("hide_groups_header") != Some(&Value::Bool(true)) {
                self.approx(
                    &format!("{}.config.hide_groups_header", acl.path),
                    "the upstream gets the groups as x-auth-roles, not X-Consumer-Groups",
                );
            }
            self.rest(
                &format!("{}.config", acl.path),
                c,
                &["allow", "deny", "hide_groups_header"],
                &[
                    ("always_use_authenticated_groups", Value::Bool(false)),
                    ("include_consumer_groups", Value::Bool(false)),
                ],
            );
        }
        if let Some(p) = plugins.get("rate-limiting") {
            if let Some(l) = self.rate_limit(p) {
                lines.push_str(&l);
            }
        }
        let default_body = !plugins.contains_key("request-size-limiting");
        if let Some(p) = plugins.get("request-size-limiting") {
            let c = &p.config;
            let size = c
                .get("allowed_payload_size")
                .and_then(Value::as_u64)
                .unwrap_or(128);
            let unit = match text(c, "size_unit").as_deref() {
                Some("bytes") => 1,
                Some("kilobytes") => 1024,
                _ => 1024 * 1024,
            };
            let bytes = size.saturating_mul(unit).min(u64::from(u32::MAX));
            self.max_body = self.max_body.max(bytes);
            let _ = writeln!(lines, "max_body_bytes = {bytes}");
            if c.get("require_content_length") == Some(&Value::Bool(true)) {
                self.not(
                    &format!("{}.config.require_content_length", p.path),
                    "chunked bodies are counted as they stream",
                );
            }
            self.rest(
                &format!("{}.config", p.path),
                c,
                &[
                    "allowed_payload_size",
                    "size_unit",
                    "require_content_length",
                ],
                &[],
            );
        }
        if let Some(p) = plugins.get("ip-restriction") {
            let c = &p.config;
            let allow = text_list(c, "allow");
            let deny = text_list(c, "deny");
            if !allow.is_empty() {
                let _ = writeln!(lines, "allow_cidrs = {}", qs(&allow));
            }
            if !deny.is_empty() {
                let _ = writeln!(lines, "deny_cidrs = {}", qs(&deny));
            }
            for key in ["status", "message"] {
                if c.get(key).is_some_and(|v| !is_default(v)) {
                    self.not(
                        &format!("{}.config.{key}", p.path),
                        "refusals are 403 forbidden",
                    );
                }
            }
            self.rest(
                &format!("{}.config", p.path),
                c,
                &["allow", "deny", "status", "message"],
                &[],
            );
        }
        if let Some(p) = plugins.get("cors") {
            lines.push_str(&self.cors(p));
        }
        if let Some(p) = plugins.get("request-transformer") {
            if let Some(l) = self.transformer(p) {
                lines.push_str(&l);
            }
        }
        Some((lines, default_body))
    }

    fn rate_limit(&mut self, p: &Plugin) -> Option<String> {
        let c = &p.config;
        let path = format!("{}.config", p.path);
        let windows = [
            ("second", 1u64),
            ("minute", 60),
            ("hour", 3600),
            ("day", 86_400),
            ("month", 0),
            ("year", 0),
        ];
        let mut chosen: Option<(u64, u64)> = None;
        for (key, seconds) in windows {
            let Some(n) = c.get(key).and_then(Value::as_f64).filter(|n| *n > 0.0) else {
                continue;
            };
            if seconds == 0 {
                self.not(&format!("{path}.{key}"), "windows longer than a day");
            } else if chosen.is_some() {
                self.not(
                    &format!("{path}.{key}"),
                    "one limit per route (the shortest window is kept)",
                );
            } else {
                chosen = Some((n.ceil() as u64, seconds));
            }
        }
        let (requests, window) = chosen?;
        let per = match text(c, "limit_by").as_deref() {
            None | Some("consumer") => "consumer".to_string(),
            Some("credential") => {
                self.approx(
                    &format!("{path}.limit_by"),
                    "per consumer rather than per credential",
                );
                "consumer".to_string()
            }
            Some("ip") => "client_ip".to_string(),
            Some("service") => {
                self.approx(
                    &format!("{path}.limit_by"),
                    "per route: each route of the service has its own bucket",
                );
                "route".to_string()
            }
            Some("header") => match text(c, "header_name") {
                Some(h) => format!("header:{}", h.to_ascii_lowercase()),
                None => {
                    self.not(&format!("{path}.limit_by"), "header without header_name");
                    return None;
                }
            },
            Some(other) => {
                self.not(&format!("{path}.limit_by"), format!("limiting by {other}"));
                return None;
            }
        };
        match text(c, "policy").as_deref() {
            None | Some("local") => {}
            Some("redis") => {
                let redis = c
                    .get("redis")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let host = text(c, "redis_host").or_else(|| text(&redis, "host"));
                let port = text(c, "redis_port")
                    .or_else(|| text(&redis, "port"))
                    .unwrap_or_else(|| "6379".into());
                let db = text(c, "redis_database")
                    .or_else(|| text(&redis, "database"))
                    .unwrap_or_else(|| "0".into());
                if let Some(host) = host {
                    let url = format!("redis://{}/{db}", join_host_port(&host, &port));
                    if self.redis_url.as_ref().is_some_and(|u| *u != url) {
                        self.not(
                            &path,
                            format!(
                                "a second Redis ({url}); every limit shares [rate_limit_store]"
                            ),
                        );
                    } else {
                        self.redis_url = Some(url);
                    }
                }
                for key in [
                    "redis_password",
                    "redis_username",
                    "redis_ssl",
                    "redis_server_name",
                ] {
                    if c.get(key).is_some_and(|v| !is_default(v))
                        || redis
                            .get(key.trim_start_matches("redis_"))
                            .is_some_and(|v| !is_default(v))
                    {
                        self.not(
                            &format!("{path}.{key}"),
                            "Redis authentication and TLS: put them in redis_url by hand",
                        );
                    }
                }
            }
            Some(other) => {
                self.approx(&format!("{path}.policy"), format!("{other}: limits are per gateway process ([rate_limit_store] kind = \"local\")"));
            }
        }
        self.on_error = Some(if c.get("fault_tolerant") == Some(&Value::Bool(false)) {
            "deny"
        } else {
            "local"
        });
        if c.get("hide_client_headers") == Some(&Value::Bool(true)) {
            self.not(
                &format!("{path}.hide_client_headers"),
                "RateLimit-* headers are always sent",
            );
        }
        self.approx(
            &path,
            "a token bucket of `requests` tokens refilled every window, not a fixed window",
        );
        self.rest(
            &path,
            c,
            &[
                "second",
                "minute",
                "hour",
                "day",
                "month",
                "year",
                "limit_by",
                "header_name",
                "policy",
                "redis",
                "redis_host",
                "redis_port",
                "redis_database",
                "redis_password",
                "redis_username",
                "redis_ssl",
                "redis_server_name",
                "fault_tolerant",
                "hide_client_headers",
                "redis_timeout",
            ],
            &[
                ("path", Value::Null),
                ("error_code", Value::from(429)),
                ("error_message", Value::from("API rate limit exceeded")),
                ("sync_rate", Value::from(-1)),
            ],
        );
        Some(format!(
            "rate_limit = {{ per = {}, requests = {requests}, window_seconds = {window} }}\n",
            q(&per)
        ))
    }

    fn cors(&mut self, p: &Plugin) -> String {
        let c = &p.config;
        let path = format!("{}.config", p.path);
        let mut origins = text_list(c, "origins");
        if origins.is_empty() {
            origins.push("*".into());
        }
        if origins
            .iter()
            .any(|o| o != "*" && o.contains(['^', '$', '(', '[', '\\', '|', '+', '?']))
        {
            self.not(
                &format!("{path}.origins"),
                "regular-expression origins; list the origins",
            );
            origins.retain(|o| !o.contains(['^', '$', '(', '[', '\\', '|', '+', '?']));
        }
        let mut credentials = c.get("credentials") == Some(&Value::Bool(true));
        if credentials && origins.iter().any(|o| o == "*") {
            self.not(
                &format!("{path}.credentials"),
                "credentials with origin `*` (Kong reflects any origin); list the origins",
            );
            credentials = false;
        }
        if origins.iter().any(|o| o == "*") {
            origins = vec!["*".into()];
        }
        let methods = text_list(c, "methods");
        let methods = if methods.is_empty() {
            [
                "GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT",
            ]
            .map(String::from)
            .to_vec()
        } else {
            methods
        };
        let headers = text_list(c, "headers");
        if c.get("headers").is_none_or(Value::is_null) {
            self.approx(
                &format!("{path}.headers"),
                "Kong allowed any requested header; Portcullis allows the listed ones (none listed)",
            );
        }
        if c.get("preflight_continue") == Some(&Value::Bool(true)) {
            self.not(
                &format!("{path}.preflight_continue"),
                "preflights are answered by the gateway",
            );
        }
        let max_age = c
            .get("max_age")
            .and_then(Value::as_u64)
            .map(|a| a.min(86_400));
        let mut body = format!(
            "cors = {{ origins = {}, methods = {}, headers = {}",
            qs(&origins),
            qs(&methods),
            qs(&headers)
        );
        let exposed = text_list(c, "exposed_headers");
        if !exposed.is_empty() {
            let _ = write!(body, ", expose_headers = {}", qs(&exposed));
        }
        if credentials {
            body.push_str(", credentials = true");
        }
        if let Some(a) = max_age {
            let _ = write!(body, ", max_age_seconds = {a}");
        }
        body.push_str(" }\n");
        self.rest(
            &path,
            c,
            &[
                "origins",
                "methods",
                "headers",
                "exposed_headers",
                "credentials",
                "max_age",
                "preflight_continue",
            ],
            &[("private_network", Value::Bool(false))],
        );
        body
    }

    fn transformer(&mut self, p: &Plugin) -> Option<String> {
        let c = &p.config;
        let path = format!("{}.config", p.path);
        let section = |name: &str| {
            c.get(name)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let mut set: Vec<(String, String)> = Vec::new();
        let mut remove: Vec<String> = Vec::new();
        for op in ["remove", "rename", "replace", "add", "append"] {
            let s = section(op);
            for (part, values) in &s {
                let items: Vec<String> = values
                    .as_array()
                    .map(|a| a.iter().filter_map(scalar_text).collect())
                    .unwrap_or_default();
                if items.is_empty() {
                    continue;
                }
                let at = format!("{path}.{op}.{part}");
                if part != "headers" {
                    self.not(
                        &at,
                        format!("{part} changes; Portcullis changes request headers only"),
                    );
                    continue;
                }
                match op {
                    "remove" => remove.extend(items.iter().map(|h| h.to_ascii_lowercase())),
                    "add" | "replace" => {
                        for (i, item) in items.iter().enumerate() {
                            let Some((name, value)) = item.split_once(':') else {
                                self.not(&format!("{at}[{i}]"), "not `name:value`");
                                continue;
                            };
                            if value.contains("$(") {
                                self.not(&format!("{at}[{i}]"), "template values");
                                continue;
                            }
                            set.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
                        }
                        self.approx(
                            &at,
                            if op == "add" {
                                "set always, also when the client sent the header (Kong added it only when absent)"
                            } else {
                                "set always, also when the client did not send the header (Kong replaced it only when present)"
                            },
                        );
                    }
                    _ => self.not(&at, format!("{op} of headers")),
                }
            }
        }
        if c.get("http_method").is_some_and(|v| !is_default(v)) {
            self.not(
                &format!("{path}.http_method"),
                "the method is never changed",
            );
        }
        self.rest(
            &path,
            c,
            &[
                "remove",
                "rename",
                "replace",
                "add",
                "append",
                "http_method",
            ],
            &[],
        );
        if set.is_empty() && remove.is_empty() {
            return None;
        }
        Some(format!(
            "request_headers = {{ set = {}, remove = {} }}\n",
            out::string_map(&set),
            qs(&remove)
        ))
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

/// An id for a key of Kong's own form: the credential's id without its
/// dashes when it is one, else `kong` and the key's number.
fn opaque_key_id(cred: &Map<String, Value>, number: usize) -> String {
    text(cred, "id")
        .map(|id| id.replace('-', ""))
        .filter(|id| {
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
        })
        .unwrap_or_else(|| format!("kong{number}"))
}

/// `pc_<id>_<secret>` → id, as the api_key provider reads it.
fn portcullis_key_id(key: &str) -> Option<&str> {
    let (id, secret) = key.strip_prefix("pc_")?.split_once('_')?;
    let alnum = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (alnum(id) && alnum(secret) && id.len() <= 64).then_some(id)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn has_port(addr: &str) -> bool {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.contains("]:");
    }
    addr.rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && addr.matches(':').count() == 1
}

fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `http(s)://host[:port][/path]` → (scheme, host, port, path).
fn split_url(url: &str) -> Option<(String, String, Option<String>, Option<String>)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(rest[i..].to_string())),
        None => (rest, None),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h.to_string(), after.strip_prefix(':').map(str::to_string))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.to_string())),
            None => (authority.to_string(), None),
        }
    };
    if port.as_deref().is_some_and(|p| p.parse::<u16>().is_err()) {
        return None;
    }
    Some((scheme, host, port, path))
}

/// A JWK (public members only) from a PEM public key, for `jwks_file`.
fn jwk_from_pem(pem: &str, alg: &str) -> Result<Value, String> {
    let key = openssl::pkey::PKey::public_key_from_pem(pem.as_bytes())
        .map_err(|_| "not a PEM public key".to_string())?;
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    match alg {
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => {
            let rsa = key.rsa().map_err(|_| format!("{alg} needs an RSA key"))?;
            Ok(serde_json::json!({
                "kty": "RSA", "use": "sig", "alg": alg,
                "n": b64(rsa.n().to_vec()), "e": b64(rsa.e().to_vec()),
            }))
        }
        "ES256" | "ES384" => {
            let ec = key.ec_key().map_err(|_| format!("{alg} needs an EC key"))?;
            let (crv, size) = if alg == "ES256" {
                ("P-256", 32)
            } else {
                ("P-384", 48)
            };
            let mut ctx = openssl::bn::BigNumContext::new().map_err(|e| e.to_string())?;
            let mut x = openssl::bn::BigNum::new().map_err(|e| e.to_string())?;
            let mut y = openssl::bn::BigNum::new().map_err(|e| e.to_string())?;
            ec.public_key()
                .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
                .map_err(|e| e.to_string())?;
            let pad = |n: &openssl::bn::BigNum| n.to_vec_padded(size).map_err(|e| e.to_string());
            Ok(serde_json::json!({
                "kty": "EC", "use": "sig", "alg": alg, "crv": crv,
                "x": b64(pad(&x)?), "y": b64(pad(&y)?),
            }))
        }
        other => Err(format!("algorithm {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> Converted {
        convert("kong.yaml", Path::new("kong.yaml"), yaml, Path::new("/out")).unwrap()
    }

    #[test]
    fn urls_split() {
        assert_eq!(
            split_url("https://api.internal:8443/v1"),
            Some((
                "https".into(),
                "api.internal".into(),
                Some("8443".into()),
                Some("/v1".into())
            ))
        );
        assert_eq!(
            split_url("http://[::1]:80"),
            Some(("http".into(), "::1".into(), Some("80".into()), None))
        );
        assert_eq!(split_url("grpc://x"), None);
        assert_eq!(split_url("http://user:pw@x"), None);
        assert_eq!(split_url("http://x:99999"), None);
    }

    #[test]
    fn weights_keep_their_ratio() {
        let c = run(r#"
_format_version: "3.0"
services:
  - name: s
    host: up
    routes: [{ name: r, paths: [/x] }]
upstreams:
  - name: up
    targets:
      - { target: "10.0.0.1:80", weight: 100 }
      - { target: "10.0.0.2:80", weight: 300 }
      - { target: "10.0.0.3", weight: 0 }
"#);
        assert!(c.config.contains(r#"targets = [{ address = "10.0.0.1:80", weight = 1 }, { address = "10.0.0.2:80", weight = 3 }]"#), "{}", c.config);
        assert!(c
            .notes
            .iter()
            .any(|n| n.contains("upstreams[0].targets[2]: not converted: weight 0")));
    }

    #[test]
    fn a_larger_body_limit_keeps_other_routes_at_the_default() {
        let c = run(r#"
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:9
    routes:
      - name: big
        paths: [/big]
        plugins:
          - name: request-size-limiting
            config: { allowed_payload_size: 8 }
      - name: small
        paths: [/small]
"#);
        assert!(
            c.config.contains("[limits]\nmax_body_bytes = 8388608\n"),
            "{}",
            c.config
        );
        let small = c.config.split("name = \"small\"").nth(1).unwrap();
        assert!(small.contains("max_body_bytes = 1048576"), "{}", c.config);
    }

    #[test]
    fn key_ids() {
        assert_eq!(portcullis_key_id("pc_abc_DEF123"), Some("abc"));
        assert_eq!(portcullis_key_id("my-kong-key"), None);
        assert_eq!(portcullis_key_id("pc_a_b_c"), None);
    }

    #[test]
    fn refuses_other_formats() {
        let err = convert(
            "k",
            Path::new("k"),
            "_format_version: \"1.1\"\n",
            Path::new("/o"),
        );
        assert!(matches!(err, Err(ImportError::Format { .. })));
        let err = convert("k", Path::new("k"), "services: []\n", Path::new("/o"));
        assert!(matches!(err, Err(ImportError::Format { .. })));
        let err = convert("k", Path::new("k"), "a: [\n", Path::new("/o"));
        assert!(matches!(err, Err(ImportError::Yaml { .. })));
    }

    #[test]
    fn plaintext_keys_never_written() {
        let c = run(r#"
_format_version: "3.0"
consumers:
  - username: "a\"b"
    keyauth_credentials:
      - key: pc_id1_SuperSecretValue1234567890
      - key: plain-kong-key
"#);
        assert!(!c.keys.contains("SuperSecretValue"));
        assert!(!c.config.contains("SuperSecretValue"));
        assert!(c.keys.contains("id = \"id1\""));
        assert!(c.keys.contains(r#"consumer = "a\"b""#));
        assert!(c.notes.iter().all(|n| !n.contains("plain-kong-key")));
        assert!(!c.keys.contains("plain-kong-key"));
        assert!(c.keys.contains("id = \"kong2\""));
        assert!(c.notes.iter().any(|n| n.contains(
            "consumers[0].keyauth_credentials[1]: converted approximately: a key of 14 characters"
        )));
        assert_eq!(c.keys_converted, 2);
    }

    #[test]
    fn both_auth_plugins_leave_the_route_out() {
        let c = run(r#"
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:9
    routes:
      - name: r
        paths: ["/x"]
        plugins:
          - name: key-auth
          - name: jwt
"#);
        assert_eq!(c.routes, 0);
        assert!(c
            .notes
            .iter()
            .any(|n| n.contains("services[0].routes[0]: not converted: key-auth and jwt")));
    }

    #[test]
    fn unknown_plugins_and_sections_are_listed() {
        let c = run(r#"
_format_version: "3.0"
certificates:
  - cert: x
plugins:
  - name: prometheus
  - name: cors
    enabled: false
"#);
        let joined = c.notes.join("\n");
        assert!(joined.contains("kong.yaml: certificates: not converted"));
        assert!(joined.contains("kong.yaml: plugins[0]: not converted: plugin prometheus"));
        assert!(joined.contains("kong.yaml: plugins[1]: not converted: plugin cors is disabled"));
    }
}
