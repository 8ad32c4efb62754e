//! RFC 6750 bearer token extraction.
//!
//! Strict on purpose: anything but exactly one well-formed bearer credential
//! is refused as `invalid_token` (never a 5xx), and the size cap bounds
//! everything done with the token afterwards.

use http::header::AUTHORIZATION;
use http::HeaderMap;

use super::AuthError;

/// How an access token came (RFC 6750, RFC 9449).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Dpop,
}

/// The bearer token of `headers`. `Missing` when there is no
/// `Authorization` header or it carries another scheme (it may be meant for
/// another provider).
pub fn bearer_token(headers: &HeaderMap, max_bytes: usize) -> Result<&str, AuthError> {
    authorization_token(headers, max_bytes, false).map(|(_, token)| token)
}

/// The access token of `headers` and its scheme, `Bearer` or `DPoP` (RFC
/// 9449 §7.1, only when `dpop`), with the same strictness; `Missing` for
/// any other scheme.
pub fn authorization_token(
    headers: &HeaderMap,
    max_bytes: usize,
    dpop: bool,
) -> Result<(Scheme, &str), AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::Missing);
    };
    if values.next().is_some() {
        return Err(AuthError::invalid(
            "malformed",
            "more than one Authorization header",
        ));
    }
    let bytes = value.as_bytes();
    let Some((scheme, rest)) = split_scheme(bytes) else {
        // HTTP parsing drops trailing spaces: "Bearer " arrives as "Bearer".
        let bare = bytes.trim_ascii();
        if bare.eq_ignore_ascii_case(b"bearer") || (dpop && bare.eq_ignore_ascii_case(b"dpop")) {
            return Err(AuthError::invalid("malformed", "the bearer token is empty"));
        }
        return Err(AuthError::Missing);
    };
    let scheme = if scheme.eq_ignore_ascii_case(b"bearer") {
        Scheme::Bearer
    } else if dpop && scheme.eq_ignore_ascii_case(b"dpop") {
        Scheme::Dpop
    } else {
        return Err(AuthError::Missing);
    };
    let token = rest.trim_ascii();
    if token.is_empty() {
        return Err(AuthError::invalid("malformed", "the bearer token is empty"));
    }
    if token.len() > max_bytes {
        return Err(AuthError::invalid(
            "too_large",
            "the bearer token is too large",
        ));
    }
    if !is_token68(token) {
        return Err(AuthError::invalid(
            "malformed",
            "the bearer token is not a single token68 value",
        ));
    }
    // token68 is ASCII, checked above.
    let token = std::str::from_utf8(token)
        .map_err(|_| AuthError::invalid("malformed", "the bearer token is not ASCII"))?;
    Ok((scheme, token))
}

fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let value = value.trim_ascii_start();
    let space = value.iter().position(|b| *b == b' ')?;
    Some((&value[..space], &value[space..]))
}

/// `token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_token68(token: &[u8]) -> bool {
    let body_end = token.iter().rposition(|b| *b != b'=').map_or(0, |i| i + 1);
    body_end > 0 && token[..body_end].iter().all(|b| TOKEN68[usize::from(*b)])
}

/// The bytes allowed in token68's body, as a table: this runs over every
/// byte of every bearer token (a JWT is often 1 KiB), where a chain of
/// comparisons per byte showed up in profiles.
const TOKEN68: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < table.len() {
        let b = i as u8;
        table[i] =
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn extracts_one_bearer_token() {
        assert_eq!(
            bearer_token(&headers(&["Bearer abc.def-ghi_~+/=="]), 100),
            Ok("abc.def-ghi_~+/==")
        );
        assert_eq!(bearer_token(&headers(&["bEaReR   abc"]), 100), Ok("abc"));
    }

    #[test]
    fn missing_or_other_scheme_is_missing() {
        assert_eq!(bearer_token(&headers(&[]), 100), Err(AuthError::Missing));
        assert_eq!(
            bearer_token(&headers(&["Basic dXNlcjpwdw=="]), 100),
            Err(AuthError::Missing)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearer"]), 100),
            Err(AuthError::invalid("malformed", "the bearer token is empty"))
        );
    }

    #[test]
    fn malformed_is_invalid() {
        for bad in [
            "Bearer ",
            "Bearer a b",
            "Bearer a,b",
            "Bearer ===",
            "Bearer a\"b",
            "Bearer =abc",
        ] {
            let h = headers(&[bad]);
            let got = bearer_token(&h, 100);
            assert!(
                matches!(got, Err(AuthError::Invalid { .. })),
                "{bad}: {got:?}"
            );
        }
        let h = headers(&["Bearer a", "Bearer b"]);
        let two = bearer_token(&h, 100);
        assert!(matches!(two, Err(AuthError::Invalid { .. })));
        let big = format!("Bearer {}", "a".repeat(101));
        assert_eq!(
            bearer_token(&headers(&[&big]), 100),
            Err(AuthError::invalid(
                "too_large",
                "the bearer token is too large"
            ))
        );
    }
}
