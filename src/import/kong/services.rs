//! Kong services, upstreams and targets into `[upstreams.NAME]`, with
//! their health checks; the URL and address helpers they share.

use super::*;

impl Kong<'_> {
    pub(super) fn service(&mut self, path: &str, o: &Map<String, Value>) {
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
    pub(super) fn upstream(
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

    pub(super) fn kong_upstream(
        &mut self,
        body: &mut String,
        path: &str,
        up: &Map<String, Value>,
        tls: bool,
    ) {
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

    pub(super) fn health(
        &mut self,
        body: &mut String,
        path: &str,
        hc: &Map<String, Value>,
        tls: bool,
    ) {
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

    pub(super) fn route_in(&mut self, path: &str, o: &Map<String, Value>, service: Option<String>) {
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
}

pub(super) fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

pub(super) fn has_port(addr: &str) -> bool {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.contains("]:");
    }
    addr.rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && addr.matches(':').count() == 1
}

pub(super) fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `http(s)://host[:port][/path]` → (scheme, host, port, path).
pub(super) fn split_url(url: &str) -> Option<(String, String, Option<String>, Option<String>)> {
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
