//! Bearer credentials and JWT headers, as read before any key is touched.
//!
//! Input: one control byte (low 6 bits: the size cap; bit 6: a second
//! `Authorization` header), then the header value. The value, when UTF-8,
//! and every accepted token also go through `jwt::peek_header`.

#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis::auth::bearer::bearer_token;
use portcullis::auth::jwks::Alg;
use portcullis::auth::jwt::peek_header;
use portcullis::auth::AuthError;

fuzz_target!(|data: &[u8]| {
    let Some((&control, value)) = data.split_first() else {
        return;
    };
    let max_bytes = match control & 0x3f {
        0x3f => 64 * 1024,
        n => usize::from(n) * 8,
    };
    let twice = control & 0x40 != 0;

    if let Ok(header) = HeaderValue::from_bytes(value) {
        let mut headers = HeaderMap::new();
        headers.append(AUTHORIZATION, header);
        if twice {
            headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        }
        match bearer_token(&headers, max_bytes) {
            Ok(token) => {
                assert!(!twice, "a second Authorization header was ignored");
                check_token(value, token, max_bytes);
                check_peek(token);
            }
            Err(AuthError::Missing) => {
                assert!(!twice, "two Authorization headers read as none");
                // Missing only when the scheme (up to the first space: only
                // SP separates it, RFC 9110 §11.4) is not `Bearer`.
                let v = value.trim_ascii_start();
                let scheme = match v.iter().position(|b| *b == b' ') {
                    Some(space) => &v[..space],
                    None => v.trim_ascii_end(),
                };
                assert!(
                    !scheme.eq_ignore_ascii_case(b"bearer"),
                    "a bearer credential {value:?} read as missing"
                );
            }
            Err(AuthError::Invalid { .. }) => {}
            Err(e) => panic!("bearer_token gave {e:?}"),
        }
    }

    if let Ok(text) = std::str::from_utf8(value) {
        check_peek(text);
    }
});

/// `token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_token68(token: &[u8]) -> bool {
    let body = token.iter().rposition(|b| *b != b'=').map_or(0, |i| i + 1);
    body > 0
        && token[..body]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
}

fn check_token(value: &[u8], token: &str, max_bytes: usize) {
    assert!(!token.is_empty(), "{value:?}: empty token");
    assert!(token.len() <= max_bytes, "{value:?}: {} > {max_bytes}", token.len());
    assert!(token.is_ascii() && is_token68(token.as_bytes()), "{value:?}: {token:?}");
    // The token is the value's credential after `Bearer` and spaces.
    let v = value.trim_ascii();
    assert!(
        v.len() > 6 && v[..6].eq_ignore_ascii_case(b"bearer") && v.ends_with(token.as_bytes()),
        "{value:?}: {token:?}"
    );
    assert!(v[6..v.len() - token.len()].iter().all(|b| *b == b' ' || *b == b'\t'));
    assert!(v[6] == b' ', "{value:?}: scheme not followed by a space");
}

fn check_peek(token: &str) {
    let Ok((kid, alg)) = peek_header(token) else {
        return;
    };
    assert!(Alg::ALL.contains(&alg));
    assert_eq!(Alg::parse(alg.as_str()), Some(alg));
    assert_ne!(alg.as_str(), "none");
    // What was peeked is what the header says.
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3, "{token:?}");
    let json = URL_SAFE_NO_PAD.decode(segments[0]).expect("header was decoded");
    // Known leniency (reported, not asserted so the target can go on):
    // `peek_header` deserializes into a struct with serde_json, which skips
    // unknown members without validating them, so a header that is not
    // JSON text (invalid UTF-8 or a lone surrogate escape in another
    // member, e.g. `{"alg":"HS256","x":"\xff"}`) is accepted. Only headers
    // that are JSON are compared with what was peeked.
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&json) else {
        return;
    };
    assert_eq!(header["alg"].as_str(), Some(alg.as_str()), "{token:?}");
    match &kid {
        Some(kid) => assert_eq!(header["kid"].as_str(), Some(kid.as_str()), "{token:?}"),
        None => assert!(header.get("kid").is_none_or(serde_json::Value::is_null), "{token:?}"),
    }
}
