//! `cors`: which browser origins may call a route, answered by the gateway
//! so that backends need no CORS code of their own.
//!
//! Strict by design: an origin is allowed only when it is listed (or the
//! list is `*`), preflights are refused when they ask for a method or a
//! header that is not configured, and `null` — the origin of sandboxed
//! frames and local files, which any attacker page can assume — is never
//! echoed unless it is listed. `*` and credentials cannot be combined,
//! since that would hand every site the user's cookies.

use std::net::Ipv6Addr;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::config::CorsSpec;

/// Why a `cors` table cannot be built. Reported at configuration load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorsError {
    #[error("cors: `origins` must not be empty")]
    NoOrigins,
    #[error("cors: `*` must be the only entry of `origins`")]
    WildcardNotAlone,
    #[error(
        "cors: `origins = [\"*\"]` cannot be combined with `credentials = true` \
         (browsers refuse it); list the allowed origins instead"
    )]
    WildcardWithCredentials,
    #[error("cors: origin `{origin}` is not `scheme://host[:port]`: {reason}")]
    InvalidOrigin {
        origin: String,
        reason: &'static str,
    },
    #[error("cors: `methods` must not be empty")]
    NoMethods,
    #[error("cors: {0} cannot be sent as a header value")]
    HeaderValue(&'static str),
}

/// The outcome of a preflight (`OPTIONS` with `Access-Control-Request-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preflight {
    /// Answer the preflight with these headers (and no body).
    Allowed(Vec<(HeaderName, HeaderValue)>),
    /// Answer 403 `forbidden`, without any `Access-Control-Allow-*` header.
    Denied,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Origins {
    Any,
    /// Canonical (lowercase, default port dropped) serializations, or `null`.
    List(Vec<String>),
}

/// A route's compiled `cors` table. The response header values are built
/// once here, not per request.
#[derive(Debug, Clone, PartialEq)]
pub struct Cors {
    origins: Origins,
    methods: Vec<Method>,
    headers: Vec<HeaderName>,
    credentials: bool,
    allow_methods: HeaderValue,
    allow_headers: Option<HeaderValue>,
    max_age: HeaderValue,
    expose_headers: Option<HeaderValue>,
}

const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

impl Cors {
    /// A route's `cors`, compiled.
    pub fn build(spec: &CorsSpec) -> Result<Cors, CorsError> {
        Cors::new(
            spec.origins.clone(),
            spec.methods.clone(),
            spec.headers.clone(),
            spec.credentials,
            spec.max_age_seconds,
            spec.expose_headers.clone(),
        )
    }

    pub fn new(
        origins: Vec<String>,
        methods: Vec<Method>,
        headers: Vec<HeaderName>,
        credentials: bool,
        max_age_seconds: u64,
        expose_headers: Vec<HeaderName>,
    ) -> Result<Cors, CorsError> {
        let origins = if origins.iter().any(|o| o == "*") {
            if origins.len() != 1 {
                return Err(CorsError::WildcardNotAlone);
            }
            if credentials {
                return Err(CorsError::WildcardWithCredentials);
            }
            Origins::Any
        } else if origins.is_empty() {
            return Err(CorsError::NoOrigins);
        } else {
            let mut list = Vec::with_capacity(origins.len());
            for origin in origins {
                let canonical = canonical_origin(&origin)
                    .map_err(|reason| CorsError::InvalidOrigin { origin, reason })?;
                if !list.contains(&canonical) {
                    list.push(canonical);
                }
            }
            Origins::List(list)
        };
        if methods.is_empty() {
            return Err(CorsError::NoMethods);
        }
        let allow_methods =
            join(methods.iter().map(Method::as_str)).ok_or(CorsError::HeaderValue("`methods`"))?;
        let allow_headers = if headers.is_empty() {
            None
        } else {
            Some(
                join(headers.iter().map(HeaderName::as_str))
                    .ok_or(CorsError::HeaderValue("`headers`"))?,
            )
        };
        let expose_headers = if expose_headers.is_empty() {
            None
        } else {
            Some(
                join(expose_headers.iter().map(HeaderName::as_str))
                    .ok_or(CorsError::HeaderValue("`expose_headers`"))?,
            )
        };
        Ok(Cors {
            origins,
            methods,
            headers,
            credentials,
            allow_methods,
            allow_headers,
            max_age: HeaderValue::from(max_age_seconds),
            expose_headers,
        })
    }

    /// A CORS preflight, as opposed to a plain `OPTIONS` request, which the
    /// route handles like any other method.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(ORIGIN)
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// Decides a preflight. Everything the browser asks for must be
    /// configured; the answer lists what is configured, not what was asked,
    /// so it reveals nothing the operator did not choose to publish.
    pub fn preflight(&self, headers: &HeaderMap) -> Preflight {
        let Some(allow_origin) = self.allow_origin(headers) else {
            return Preflight::Denied;
        };
        let Some(method) = single(headers, &ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok())
        else {
            return Preflight::Denied;
        };
        if !self.methods.contains(&method) {
            return Preflight::Denied;
        }
        for value in headers.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
            let Ok(list) = value.to_str() else {
                return Preflight::Denied;
            };
            let listed = |name: &str| {
                self.headers
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(name))
            };
            if !list
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .all(listed)
            {
                return Preflight::Denied;
            }
        }

        let mut out = Vec::with_capacity(6);
        out.push((ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin));
        out.push((ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone()));
        if let Some(allow_headers) = &self.allow_headers {
            out.push((ACCESS_CONTROL_ALLOW_HEADERS, allow_headers.clone()));
        }
        if self.credentials {
            out.push((
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        out.push((ACCESS_CONTROL_MAX_AGE, self.max_age.clone()));
        out.push((VARY, HeaderValue::from_static(PREFLIGHT_VARY)));
        Preflight::Allowed(out)
    }

    /// Headers for an actual (non-preflight) response. A disallowed origin
    /// only goes without `Access-Control-Allow-Origin`: the browser then
    /// withholds the response from the page, and the request itself is not
    /// the gateway's to refuse (it could as well come from curl).
    ///
    /// With a list of origins the answer depends on `Origin`, so `Vary:
    /// Origin` is always sent, also when the origin is missing or refused;
    /// otherwise a cache could replay one origin's answer to another.
    /// With `*` every response carries `*` and there is nothing to vary on.
    pub fn response_headers(&self, origin: Option<&HeaderValue>) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(4);
        let allow_origin = match &self.origins {
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::List(list) => {
                out.push((VARY, HeaderValue::from_static("Origin")));
                origin.filter(|o| listed(list, o)).cloned()
            }
        };
        if let Some(allow_origin) = allow_origin {
            out.push((ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin));
            if self.credentials {
                out.push((
                    ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                ));
            }
            if let Some(expose) = &self.expose_headers {
                out.push((ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone()));
            }
        }
        out
    }

    /// The `Access-Control-Allow-Origin` for a preflight, if its origin may
    /// call: the request's own `Origin` echoed, or `*` for a wildcard.
    fn allow_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = single(headers, &ORIGIN)?;
        match &self.origins {
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::List(list) => listed(list, origin).then(|| origin.clone()),
        }
    }
}

/// The one value of a header that must not repeat: two `Origin`s (or two
/// requested methods) are not something a browser sends, so rather than
/// pick one, treat the request as carrying none.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// Browsers serialize origins in lowercase; comparing without case keeps a
/// hand-written `Origin` from missing on case alone, and echoing the
/// request's bytes keeps the browser's own exact comparison happy.
fn listed(list: &[String], origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    list.iter().any(|o| o.eq_ignore_ascii_case(origin))
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let joined = items.collect::<Vec<_>>().join(", ");
    HeaderValue::from_str(&joined).ok()
}

/// The serialization a browser would send in `Origin` for a configured
/// origin: lowercase, default port dropped, IPv6 compressed. Anything with
/// a path (even a lone trailing `/`), a query, a fragment or user info is
/// refused rather than trimmed, since it says the operator meant something
/// an origin cannot express.
fn canonical_origin(raw: &str) -> Result<String, &'static str> {
    let lower = raw.to_ascii_lowercase();
    if lower == "null" {
        return Ok(lower);
    }
    let (scheme, rest) = lower.split_once("://").ok_or("missing `://`")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err("invalid scheme");
    }
    if rest.contains(['/', '?', '#']) {
        return Err("an origin has no path, query or fragment (not even a trailing `/`)");
    }
    if rest.contains('@') {
        return Err("an origin has no user information");
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (address, tail) = bracketed.split_once(']').ok_or("unclosed `[`")?;
        let address: Ipv6Addr = address.parse().map_err(|_| "invalid IPv6 address")?;
        let port = match tail {
            "" => None,
            tail => Some(tail.strip_prefix(':').ok_or("unexpected text after `]`")?),
        };
        (format!("[{address}]"), port)
    } else {
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        };
        let host_ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !host_ok {
            return Err("invalid host (internationalized names go in their punycode form)");
        }
        (host.to_owned(), port)
    };
    let port = match port {
        None => None,
        Some(port) => {
            let number = if port.bytes().all(|b| b.is_ascii_digit()) {
                port.parse::<u16>().ok().filter(|&p| p != 0)
            } else {
                None
            };
            Some(number.ok_or("invalid port")?)
        }
    };
    Ok(match port {
        Some(443) if scheme == "https" => format!("{scheme}://{host}"),
        Some(80) if scheme == "http" => format!("{scheme}://{host}"),
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "https://app.example.com";

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors::new(
            origins.iter().map(|s| s.to_string()).collect(),
            vec![Method::GET, Method::POST],
            vec![
                HeaderName::from_static("authorization"),
                HeaderName::from_static("x-tenant-id"),
            ],
            credentials,
            600,
            vec![HeaderName::from_static("x-request-id")],
        )
        .unwrap()
    }

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    fn get<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &HeaderName) -> Option<&'a str> {
        let mut found = headers.iter().filter(|(n, _)| n == name);
        let value = found.next().map(|(_, v)| v.to_str().unwrap());
        assert!(found.next().is_none(), "{name} sent twice");
        value
    }

    fn allowed(p: Preflight) -> Vec<(HeaderName, HeaderValue)> {
        match p {
            Preflight::Allowed(h) => h,
            Preflight::Denied => panic!("preflight denied"),
        }
    }

    #[test]
    fn wildcard_with_credentials_cannot_be_built() {
        let err = Cors::new(vec!["*".into()], vec![Method::GET], vec![], true, 0, vec![]);
        assert_eq!(err, Err(CorsError::WildcardWithCredentials));
        let err = Cors::new(
            vec!["*".into(), APP.into()],
            vec![Method::GET],
            vec![],
            false,
            0,
            vec![],
        );
        assert_eq!(err, Err(CorsError::WildcardNotAlone));
    }

    #[test]
    fn empty_lists_are_refused() {
        let err = Cors::new(vec![], vec![Method::GET], vec![], false, 0, vec![]);
        assert_eq!(err, Err(CorsError::NoOrigins));
        let err = Cors::new(vec![APP.into()], vec![], vec![], false, 0, vec![]);
        assert_eq!(err, Err(CorsError::NoMethods));
    }

    #[test]
    fn origins_are_validated_and_canonicalized() {
        for bad in [
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://app.example.com?x",
            "https://app.example.com#x",
            "https://user@app.example.com",
            "app.example.com",
            "https://",
            "https://:443",
            "https://app..example.com",
            "https://app.example.com:",
            "https://app.example.com:0",
            "https://app.example.com:65536",
            "https://app.example.com:+80",
            "https://app example.com",
            "https://bücher.example",
            "1https://app.example.com",
            "https://[::1",
            "https://[zz::1]",
            "https://[::1]x",
            "",
        ] {
            let err = Cors::new(
                vec![bad.into()],
                vec![Method::GET],
                vec![],
                false,
                0,
                vec![],
            );
            assert!(
                matches!(err, Err(CorsError::InvalidOrigin { .. })),
                "{bad}: {err:?}"
            );
        }
        for (given, canonical) in [
            ("HTTPS://App.Example.COM", "https://app.example.com"),
            ("https://app.example.com:443", "https://app.example.com"),
            ("http://localhost:80", "http://localhost"),
            ("http://localhost:8080", "http://localhost:8080"),
            ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),
            ("http://[0:0::1]:3000", "http://[::1]:3000"),
            ("chrome-extension://abcdef", "chrome-extension://abcdef"),
            ("NULL", "null"),
        ] {
            assert_eq!(canonical_origin(given), Ok(canonical.to_owned()), "{given}");
        }
        let err = Cors::new(
            vec!["https://a.example/".into()],
            vec![Method::GET],
            vec![],
            false,
            0,
            vec![],
        );
        assert!(err.unwrap_err().to_string().contains("trailing `/`"));
    }

    #[test]
    fn is_preflight_needs_options_origin_and_request_method() {
        let full = request(&[("origin", APP), ("access-control-request-method", "POST")]);
        assert!(Cors::is_preflight(&Method::OPTIONS, &full));
        assert!(!Cors::is_preflight(&Method::GET, &full));
        let no_acrm = request(&[("origin", APP)]);
        assert!(!Cors::is_preflight(&Method::OPTIONS, &no_acrm));
        let no_origin = request(&[("access-control-request-method", "POST")]);
        assert!(!Cors::is_preflight(&Method::OPTIONS, &no_origin));
    }

    #[test]
    fn allowed_preflight_lists_the_configuration() {
        let c = cors(&[APP, "https://other.example.com"], true);
        let h = allowed(c.preflight(&request(&[
            ("origin", APP),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "Authorization, X-Tenant-ID",
            ),
        ])));
        assert_eq!(get(&h, &ACCESS_CONTROL_ALLOW_ORIGIN), Some(APP));
        assert_eq!(get(&h, &ACCESS_CONTROL_ALLOW_METHODS), Some("GET, POST"));
        assert_eq!(
            get(&h, &ACCESS_CONTROL_ALLOW_HEADERS),
            Some("authorization, x-tenant-id")
        );
        assert_eq!(get(&h, &ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
        assert_eq!(get(&h, &ACCESS_CONTROL_MAX_AGE), Some("600"));
        assert_eq!(get(&h, &VARY), Some(PREFLIGHT_VARY));
        assert_eq!(h.len(), 6);
    }

    #[test]
    fn preflight_header_matching_ignores_case_and_blank_entries() {
        let c = cors(&[APP], false);
        for requested in [
            "AUTHORIZATION",
            "authorization,x-tenant-id",
            " , x-TENANT-id ,",
            "",
        ] {
            let h = allowed(c.preflight(&request(&[
                ("origin", APP),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", requested),
            ])));
            assert_eq!(get(&h, &ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        }
        // Split over two header lines.
        let h = request(&[
            ("origin", APP),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization"),
            ("access-control-request-headers", "x-tenant-id"),
        ]);
        assert!(matches!(c.preflight(&h), Preflight::Allowed(_)));
        // Without any request header list at all.
        let h = request(&[("origin", APP), ("access-control-request-method", "GET")]);
        assert!(matches!(c.preflight(&h), Preflight::Allowed(_)));
    }

    #[test]
    fn preflight_denials() {
        let c = cors(&[APP], true);
        let denied = |pairs: &[(&str, &str)]| c.preflight(&request(pairs)) == Preflight::Denied;
        let acrm = "access-control-request-method";
        let acrh = "access-control-request-headers";
        assert!(denied(&[("origin", "https://evil.example"), (acrm, "GET")]));
        assert!(denied(&[
            ("origin", "https://app.example.com.evil.example"),
            (acrm, "GET")
        ]));
        assert!(denied(&[
            ("origin", "http://app.example.com"),
            (acrm, "GET")
        ]));
        assert!(denied(&[("origin", "null"), (acrm, "GET")]));
        assert!(denied(&[(acrm, "GET")]));
        assert!(denied(&[("origin", APP), ("origin", APP), (acrm, "GET")]));
        assert!(denied(&[("origin", APP), (acrm, "DELETE")]));
        assert!(denied(&[("origin", APP), (acrm, "get")]));
        assert!(denied(&[("origin", APP), (acrm, "GET"), (acrm, "POST")]));
        assert!(denied(&[("origin", APP), (acrm, "")]));
        assert!(denied(&[("origin", APP)]));
        assert!(denied(&[
            ("origin", APP),
            (acrm, "GET"),
            (acrh, "authorization, x-other")
        ]));
        assert!(denied(&[
            ("origin", APP),
            (acrm, "GET"),
            (acrh, "content-type")
        ]));
    }

    #[test]
    fn null_origin_only_when_listed() {
        let c = cors(&[APP], false);
        assert_eq!(
            c.response_headers(Some(&HeaderValue::from_static("null")))
                .len(),
            1
        );
        let c = cors(&[APP, "null"], false);
        let h = c.response_headers(Some(&HeaderValue::from_static("null")));
        assert_eq!(get(&h, &ACCESS_CONTROL_ALLOW_ORIGIN), Some("null"));
        let p = allowed(c.preflight(&request(&[
            ("origin", "null"),
            ("access-control-request-method", "GET"),
        ])));
        assert_eq!(get(&p, &ACCESS_CONTROL_ALLOW_ORIGIN), Some("null"));
    }

    #[test]
    fn wildcard_answers_star_and_never_echoes() {
        let c = cors(&["*"], false);
        let p = allowed(c.preflight(&request(&[
            ("origin", "https://anyone.example"),
            ("access-control-request-method", "POST"),
        ])));
        assert_eq!(get(&p, &ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        assert_eq!(get(&p, &ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        for origin in [
            Some(HeaderValue::from_static("https://anyone.example")),
            None,
        ] {
            let h = c.response_headers(origin.as_ref());
            assert_eq!(get(&h, &ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
            assert_eq!(
                get(&h, &ACCESS_CONTROL_EXPOSE_HEADERS),
                Some("x-request-id")
            );
            assert_eq!(get(&h, &VARY), None);
            assert_eq!(get(&h, &ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        }
    }

    #[test]
    fn actual_responses_echo_listed_origins_and_always_vary() {
        let c = cors(&[APP], true);
        let origin = HeaderValue::from_static("https://App.Example.com");
        let h = c.response_headers(Some(&origin));
        assert_eq!(
            get(&h, &ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://App.Example.com")
        );
        assert_eq!(get(&h, &ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
        assert_eq!(
            get(&h, &ACCESS_CONTROL_EXPOSE_HEADERS),
            Some("x-request-id")
        );
        assert_eq!(get(&h, &VARY), Some("Origin"));

        for origin in [Some(HeaderValue::from_static("https://evil.example")), None] {
            let h = c.response_headers(origin.as_ref());
            assert_eq!(h, vec![(VARY, HeaderValue::from_static("Origin"))]);
        }
    }

    #[test]
    fn configured_default_port_matches_the_browser_origin() {
        let c = cors(&["https://app.example.com:443"], false);
        let h = c.response_headers(Some(&HeaderValue::from_static(APP)));
        assert_eq!(get(&h, &ACCESS_CONTROL_ALLOW_ORIGIN), Some(APP));
        let h = c.response_headers(Some(&HeaderValue::from_static(
            "https://app.example.com:8443",
        )));
        assert_eq!(get(&h, &ACCESS_CONTROL_ALLOW_ORIGIN), None);
    }

    #[test]
    fn optional_headers_are_left_out_when_unconfigured() {
        let c = Cors::new(
            vec![APP.into()],
            vec![Method::PUT],
            vec![],
            false,
            0,
            vec![],
        )
        .unwrap();
        let p = allowed(c.preflight(&request(&[
            ("origin", APP),
            ("access-control-request-method", "PUT"),
        ])));
        assert_eq!(get(&p, &ACCESS_CONTROL_ALLOW_HEADERS), None);
        assert_eq!(get(&p, &ACCESS_CONTROL_MAX_AGE), Some("0"));
        let denied = c.preflight(&request(&[
            ("origin", APP),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "authorization"),
        ]));
        assert_eq!(denied, Preflight::Denied);
        let h = c.response_headers(Some(&HeaderValue::from_static(APP)));
        assert_eq!(get(&h, &ACCESS_CONTROL_EXPOSE_HEADERS), None);
    }
}
