//! Kong plugins: where each applies, and the providers, rate limits, CORS
//! and header rules they become.

use super::services::join_host_port;
use super::*;

impl Kong<'_> {
    pub(super) fn plugin(
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

    /// A key-auth plugin instance as a provider (shared by identical ones).
    pub(super) fn key_auth_provider(&mut self, p: &Plugin) -> String {
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
    pub(super) fn jwt_plugin(&mut self, p: &Plugin) {
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

    pub(super) fn rate_limit(&mut self, p: &Plugin) -> Option<String> {
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
                let setting = |key: &str| {
                    c.get(&format!("redis_{key}"))
                        .filter(|v| !is_default(v))
                        .or_else(|| redis.get(key).filter(|v| !is_default(v)))
                };
                let tls = setting("ssl") == Some(&Value::Bool(true));
                if tls && setting("ssl_verify") != Some(&Value::Bool(true)) {
                    self.approx(
                        &format!("{path}.redis_ssl_verify"),
                        "Portcullis always verifies the Redis server's certificate (system roots, or redis_ca_file)",
                    );
                }
                if let Some(host) = host {
                    let scheme = if tls { "rediss" } else { "redis" };
                    let url = format!("{scheme}://{}/{db}", join_host_port(&host, &port));
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
                for key in ["password", "username"] {
                    if setting(key).is_some() {
                        self.not(
                            &format!("{path}.redis_{key}"),
                            "Redis credentials are not written out: put them in redis_url by hand",
                        );
                    }
                }
                if setting("server_name").is_some() {
                    self.not(
                        &format!("{path}.redis_server_name"),
                        "the certificate is checked against the host of redis_url",
                    );
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
                "redis_ssl_verify",
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

    pub(super) fn cors(&mut self, p: &Plugin) -> String {
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

    pub(super) fn transformer(&mut self, p: &Plugin) -> Option<String> {
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
}
