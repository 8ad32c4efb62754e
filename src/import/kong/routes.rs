//! Kong routes into `[[routes]]`: the plugins that apply to each (route,
//! then service, then global) and one Portcullis route per path.

use super::*;

impl Kong<'_> {
    /// The effective plugin of each name for a route: route, then service,
    /// then global (Kong's precedence without consumers).
    pub(super) fn effective<'p>(
        &self,
        r: &Route,
        plugins: &'p [Plugin],
    ) -> BTreeMap<String, &'p Plugin> {
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
    pub(super) fn route(
        &mut self,
        r: &Route,
        plugins: &[Plugin],
        names: &mut Vec<String>,
    ) -> usize {
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
    pub(super) fn route_plugins(
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
}
