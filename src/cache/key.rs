//! The cache key: every part length-prefixed, so that no two requests
//! that differ in any part — route, host, path, query, caller, a `vary`
//! header — can ever build the same key.

use http::{HeaderMap, HeaderName};

/// What a key is made of, in order.
pub(crate) struct KeyParts<'a> {
    pub route: &'a str,
    /// `host[:port]` as the upstream gets it.
    pub host: &'a [u8],
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// `scope = "consumer"`: the caller's consumer (its subject when it
    /// has none).
    pub consumer: Option<&'a str>,
    /// The upstream chosen among the route's (a canary answers for itself).
    pub upstream: &'a str,
    pub vary: &'a [HeaderName],
    pub headers: &'a HeaderMap,
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A field that may be absent: a marker byte tells "absent" from "empty".
fn optional(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => field(out, b""),
        Some(v) => {
            out.extend_from_slice(&(v.len() as u32 + 1).to_le_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
        }
    }
}

impl KeyParts<'_> {
    pub(crate) fn build(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self.route.len()
                + self.host.len()
                + self.path.len()
                + self.query.map_or(0, str::len),
        );
        field(&mut out, self.route.as_bytes());
        field(&mut out, self.host);
        field(&mut out, self.path.as_bytes());
        optional(&mut out, self.query);
        optional(&mut out, self.consumer);
        field(&mut out, self.upstream.as_bytes());
        for name in self.vary {
            let values = self.headers.get_all(name);
            out.extend_from_slice(&(values.iter().count() as u32).to_le_bytes());
            for value in values {
                field(&mut out, value.as_bytes());
            }
        }
        out
    }
}

/// The leading fields of a key built by [`KeyParts::build`]: route, host,
/// path.
pub(crate) fn fields(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = key;
    std::iter::from_fn(move || {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let value = tail.get(..len)?;
        rest = tail.get(len..)?;
        Some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str, query: Option<&str>, consumer: Option<&str>, h: &[(&str, &str)]) -> Vec<u8> {
        let mut headers = HeaderMap::new();
        for (n, v) in h {
            headers.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        KeyParts {
            route: "r",
            host: b"h",
            path,
            query,
            consumer,
            upstream: "u",
            vary: &[HeaderName::from_static("accept")],
            headers: &headers,
        }
        .build()
    }

    #[test]
    fn keys_that_look_alike_differ() {
        let plain = key("/a", None, None, &[]);
        assert_ne!(plain, key("/a", Some(""), None, &[]));
        assert_ne!(
            key("/a", Some("b"), None, &[]),
            key("/a?b", None, None, &[])
        );
        assert_ne!(plain, key("/a", None, Some(""), &[]));
        assert_ne!(
            key("/a", None, Some("alice"), &[]),
            key("/a", None, Some("bob"), &[])
        );
        assert_ne!(plain, key("/a", None, None, &[("accept", "")]));
        assert_ne!(
            key("/a", None, None, &[("accept", "a"), ("accept", "b")]),
            key("/a", None, None, &[("accept", "a,b")])
        );
        assert_eq!(plain, key("/a", None, None, &[("other", "x")]));
    }

    #[test]
    fn leading_fields_decode() {
        let k = key("/a/b", Some("q"), None, &[]);
        let f: Vec<&[u8]> = fields(&k).take(3).collect();
        assert_eq!(f, [&b"r"[..], b"h", b"/a/b"]);
    }
}
