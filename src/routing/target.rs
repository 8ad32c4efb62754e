//! Request targets and hosts, read the one way the gateway routes on and
//! forwards (CONTRACT §8).
//!
//! Backends disagree about anything that is not a plain origin-form target
//! (`admin/x`, `x:/admin`) or a plain host name (`Admin.Example.com.`,
//! `a.com,b.com`): such input is refused here rather than forwarded with
//! a meaning the gateway did not check.

/// Why a request target or host was refused. Sent to clients as the
/// message of a 400, so it names the rule and never echoes the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the request target must be an absolute path or an absolute http(s) URI")]
    Form,
    #[error("the request target must not contain a fragment")]
    Fragment,
    #[error("the request target must not contain user information")]
    UserInfo,
    #[error("the request target is not valid text")]
    Encoding,
    #[error("the host is not a valid host name or IP literal")]
    Host,
    #[error("the host has an invalid port")]
    Port,
}

impl TargetError {
    /// The refusal's message, without allocating.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            TargetError::Form => {
                "the request target must be an absolute path or an absolute http(s) URI"
            }
            TargetError::Fragment => "the request target must not contain a fragment",
            TargetError::UserInfo => "the request target must not contain user information",
            TargetError::Encoding => "the request target is not valid text",
            TargetError::Host => "the host is not a valid host name or IP literal",
            TargetError::Port => "the host has an invalid port",
        }
    }
}

/// A request target split into its parts; `path` is still raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// The authority of an absolute-form target (RFC 9112 §3.2.2).
    pub authority: Option<&'a str>,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// `OPTIONS *`.
    pub asterisk: bool,
}

/// Splits a request target. Only origin-form (`/p?q`) and absolute-form
/// (`http://host/p?q`, scheme case-insensitive) are accepted, and `*`,
/// which the caller allows for `OPTIONS` only.
///
/// # Errors
///
/// [`TargetError`] for any other form, a fragment, user information in
/// the authority or bytes that are not UTF-8.
pub fn parse_target(raw: &[u8]) -> Result<Target<'_>, TargetError> {
    let raw = std::str::from_utf8(raw).map_err(|_| TargetError::Encoding)?;
    if raw == "*" {
        return Ok(Target {
            authority: None,
            path: "*",
            query: None,
            asterisk: true,
        });
    }
    if raw.contains('#') {
        return Err(TargetError::Fragment);
    }
    let (authority, rest) = if raw.starts_with('/') {
        (None, raw)
    } else {
        let after_scheme = strip_prefix_ignore_case(raw, "http://")
            .or_else(|| strip_prefix_ignore_case(raw, "https://"))
            .ok_or(TargetError::Form)?;
        let end = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
        let (authority, rest) = after_scheme.split_at(end);
        if authority.contains('@') {
            return Err(TargetError::UserInfo);
        }
        (Some(authority), rest)
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    // An absolute-form target with an empty path means the root.
    let path = if path.is_empty() { "/" } else { path };
    Ok(Target {
        authority,
        path,
        query,
        asterisk: false,
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// A host as routing sees it: `name` lower-case, without port and without
/// one trailing dot; `port` as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host<'a> {
    pub name: std::borrow::Cow<'a, str>,
    pub port: Option<&'a str>,
}

impl Host<'_> {
    /// `name[:port]`, the value the upstream's `Host` gets.
    #[must_use]
    pub fn authority(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.name),
            None => self.name.to_string(),
        }
    }

    /// Whether [`Self::authority`] would give `value` back unchanged, so
    /// the client's header can be forwarded as it is.
    #[must_use]
    pub fn is_exactly(&self, value: &str) -> bool {
        match self.port {
            Some(port) => value
                .strip_suffix(port)
                .and_then(|v| v.strip_suffix(':'))
                .is_some_and(|v| v == self.name),
            None => value == self.name,
        }
    }
}

/// The longest host name DNS allows.
const MAX_HOST_NAME: usize = 253;

/// Reads a `Host` value or an authority: a host name of unreserved
/// characters (letters, digits, `-`, `.`, `_`, `~`) with non-empty labels,
/// or a bracketed IPv6 literal; then an optional `:port` of 1-5 digits up
/// to 65535.
///
/// Percent-encodings and RFC 3986 sub-delimiters (`,`, `;`, `=` ...) are
/// refused although RFC 3986 allows them in a reg-name: no real host name
/// has them, and backends that decode or split on them would read a host
/// the gateway did not route on.
///
/// # Errors
///
/// [`TargetError::Host`] or [`TargetError::Port`].
pub fn parse_host(value: &str) -> Result<Host<'_>, TargetError> {
    let (name, port) = if let Some(rest) = value.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(TargetError::Host)?;
        if literal.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(TargetError::Host);
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(TargetError::Host)?),
        };
        // `value` holds the brackets around `literal`.
        let name = value.get(..literal.len() + 2).ok_or(TargetError::Host)?;
        (name, port)
    } else {
        match value.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (value, None),
        }
    };
    if let Some(port) = port {
        let digits_ok =
            !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
        if !digits_ok || port.parse::<u32>().map_or(true, |p| p > 65535) {
            return Err(TargetError::Port);
        }
    }
    if name.starts_with('[') {
        return Ok(Host {
            name: lower(name),
            port,
        });
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_HOST_NAME {
        return Err(TargetError::Host);
    }
    // One pass: allowed bytes, no empty label, and whether to lower-case.
    let mut label_empty = true;
    let mut upper = false;
    for b in name.bytes() {
        match b {
            b'.' if label_empty => return Err(TargetError::Host),
            b'.' => label_empty = true,
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => label_empty = false,
            b'A'..=b'Z' => {
                label_empty = false;
                upper = true;
            }
            _ => return Err(TargetError::Host),
        }
    }
    if label_empty {
        return Err(TargetError::Host);
    }
    let name = if upper {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    };
    Ok(Host { name, port })
}

fn lower(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(s.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Percent-encodes what may not stand raw in a URI query (spaces, quotes,
/// `<>`, `{}`, `|`, `^`, `` ` ``, `\` and every non-ASCII byte), so that the
/// forwarded query is one every parser reads alike. Everything else,
/// escapes included, is kept as received. Borrows when nothing changes.
#[must_use]
pub fn canonical_query(query: &str) -> std::borrow::Cow<'_, str> {
    if !query.bytes().any(needs_escape_in_query) {
        return std::borrow::Cow::Borrowed(query);
    }
    let mut out = String::with_capacity(query.len() + 16);
    for b in query.bytes() {
        if needs_escape_in_query(b) {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push(char::from(b));
        }
    }
    std::borrow::Cow::Owned(out)
}

const HEX: [u8; 16] = *b"0123456789ABCDEF";

fn needs_escape_in_query(b: u8) -> bool {
    !b.is_ascii_graphic()
        || matches!(
            b,
            b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
        )
}

/// The query without every `name=value` pair whose name (percent-decoded)
/// is one of `names`: credentials given in the query never travel further.
/// Borrows when there is nothing to remove.
#[must_use]
pub fn without_params<'a>(query: &'a str, names: &[String]) -> std::borrow::Cow<'a, str> {
    let is_named = |pair: &str| {
        let name = pair.split_once('=').map_or(pair, |(k, _)| k);
        let decoded = form_urlencoded::parse(name.as_bytes())
            .next()
            .map(|(k, _)| k);
        names
            .iter()
            .any(|n| n == name || decoded.as_deref() == Some(n.as_str()))
    };
    if !query.split('&').any(is_named) {
        return std::borrow::Cow::Borrowed(query);
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !is_named(p)).collect();
    std::borrow::Cow::Owned(kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(raw: &str) -> Result<Target<'_>, TargetError> {
        parse_target(raw.as_bytes())
    }

    #[test]
    fn origin_form() {
        let t = target("/a/b?x=1").unwrap();
        assert_eq!((t.authority, t.path, t.query), (None, "/a/b", Some("x=1")));
        assert_eq!(target("/").unwrap().query, None);
        assert_eq!(target("/?").unwrap().query, Some(""));
    }

    #[test]
    fn absolute_form() {
        let t = target("http://Admin.Example.com:8080/secret?q").unwrap();
        assert_eq!(t.authority, Some("Admin.Example.com:8080"));
        assert_eq!((t.path, t.query), ("/secret", Some("q")));
        let t = target("HTTPS://a.com").unwrap();
        assert_eq!((t.authority, t.path, t.query), (Some("a.com"), "/", None));
        let t = target("http://a.com?x").unwrap();
        assert_eq!((t.path, t.query), ("/", Some("x")));
    }

    #[test]
    fn other_forms_refused() {
        for raw in [
            "admin/secret",
            "x:/admin/secret",
            "./a",
            "a.com:443",
            "ftp://a.com/x",
            "http:/a.com/x",
            "",
            "**",
        ] {
            assert_eq!(target(raw), Err(TargetError::Form), "{raw:?}");
        }
        assert_eq!(target("/a#b"), Err(TargetError::Fragment));
        assert_eq!(target("http://u@a.com/"), Err(TargetError::UserInfo));
        assert_eq!(parse_target(b"/\xff"), Err(TargetError::Encoding));
        assert!(target("*").unwrap().asterisk);
    }

    fn host(v: &str) -> Result<(String, Option<&str>), TargetError> {
        parse_host(v).map(|h| (h.name.into_owned(), h.port))
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host("api.example.com"),
            Ok(("api.example.com".into(), None))
        );
        assert_eq!(
            host("API.Example.COM."),
            Ok(("api.example.com".into(), None))
        );
        assert_eq!(host("a.com.:8080"), Ok(("a.com".into(), Some("8080"))));
        assert_eq!(host("[::1]:8443"), Ok(("[::1]".into(), Some("8443"))));
        assert_eq!(host("[::1]"), Ok(("[::1]".into(), None)));
        assert_eq!(host("127.0.0.1:80"), Ok(("127.0.0.1".into(), Some("80"))));
        for bad in [
            "",
            ".",
            "a..com",
            ".a.com",
            "a.com..",
            "a.com,b.com",
            "a.com;x",
            "a%2ecom",
            "a b",
            "[::1",
            "[zz]",
            "[::1]x",
            "a.com:99999",
            "a.com:",
            "a.com:8o",
            "a:b:c",
            "ü.com",
        ] {
            assert!(parse_host(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_host("a.com:123456"), Err(TargetError::Port));
    }

    #[test]
    fn authority_round_trip() {
        let h = parse_host("A.com.:81").unwrap();
        assert_eq!(h.authority(), "a.com:81");
        assert!(!h.is_exactly("A.com.:81"));
        assert!(parse_host("a.com:81").unwrap().is_exactly("a.com:81"));
        assert!(parse_host("a.com").unwrap().is_exactly("a.com"));
    }

    #[test]
    fn query_escapes() {
        assert_eq!(canonical_query("a=1&b=%20"), "a=1&b=%20");
        assert_eq!(canonical_query("a=m\u{fc}ller"), "a=m%C3%BCller");
        assert_eq!(canonical_query("a=\"<x>\""), "a=%22%3Cx%3E%22");
    }

    #[test]
    fn credential_params_removed() {
        let names = vec!["api_key".to_string()];
        assert_eq!(without_params("a=1&api_key=s&b=2", &names), "a=1&b=2");
        assert_eq!(without_params("api_key=s&api_key=t", &names), "");
        assert_eq!(without_params("api%5Fkey=s&x=1", &names), "x=1");
        assert_eq!(without_params("api_keyx=1", &names), "api_keyx=1");
        assert_eq!(without_params("api_key", &names), "");
    }
}
