//! Request targets, paths, hosts and queries: the one canonical form the
//! gateway routes on and forwards (CONTRACT §8) must really be one form.
//!
//! The input is a raw request target. Its parts go through the same
//! functions the proxy uses; the input as a whole also goes through
//! `normalize_path` and `parse_host`, so that bytes `parse_target` would
//! split off (`?`, `#`, an authority) reach them too.

#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use portcullis::core::normalize::{has_path_params, normalize_path, strip_path_params};
use portcullis::routing::target::{canonical_query, parse_host, parse_target};

fuzz_target!(|data: &[u8]| {
    if let Ok(target) = parse_target(data) {
        if target.asterisk {
            assert_eq!(data, b"*");
            assert_eq!((target.path, target.authority, target.query), ("*", None, None));
        } else {
            assert!(target.path.starts_with('/'), "path {:?}", target.path);
            assert!(!target.path.contains(['?', '#']), "path {:?}", target.path);
            if let Some(query) = target.query {
                assert!(!query.contains('#'));
                check_query(query);
            }
            if let Some(authority) = target.authority {
                assert!(!authority.contains(['@', '/', '?', '#']), "authority {authority:?}");
                check_host(authority);
            }
            check_path(target.path);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        check_path(text);
        check_host(text);
    }
});

fn check_path(raw: &str) {
    let Ok(normal) = normalize_path(raw) else {
        return;
    };
    assert_normal(raw, &normal);
    // Idempotent: the output is its own normal form.
    let again = normalize_path(&normal)
        .unwrap_or_else(|e| panic!("{raw:?} -> {normal:?}, which is refused: {e}"));
    assert_eq!(again, normal, "not idempotent: {raw:?}");
    // Unchanged input comes back borrowed, never re-built.
    if normal == raw {
        assert!(matches!(normal, Cow::Borrowed(_)) || raw.contains('%'));
    }

    let params = has_path_params(&normal);
    assert_eq!(params, normal.contains(';') || normal.contains("%3B"));
    match strip_path_params(&normal) {
        Ok(None) => assert!(!params, "{normal:?} has params but none were stripped"),
        Ok(Some(stripped)) => {
            assert!(params, "{normal:?} has no params but was stripped");
            assert!(
                !stripped.contains(';') && !stripped.contains("%3B") && !stripped.contains("%3b"),
                "{normal:?} stripped to {stripped:?}"
            );
            assert!(!has_path_params(&stripped));
            assert_normal(&normal, &stripped);
            let again = normalize_path(&stripped)
                .unwrap_or_else(|e| panic!("{normal:?} stripped to {stripped:?}, refused: {e}"));
            assert_eq!(again, stripped.as_str(), "stripped form not normal: {normal:?}");
            assert_eq!(strip_path_params(&stripped), Ok(None));
        }
        // Documented: always Ok for the output of normalize_path.
        Err(e) => panic!("strip_path_params({normal:?}) failed: {e}"),
    }
}

/// What a normalized path is: absolute, ASCII, no control byte, no empty,
/// `.` or `..` segment (not even one hidden behind `;` parameters), no
/// encoded or raw slash and backslash tricks, escapes in upper-case hex and
/// never of an unreserved character or NUL.
fn assert_normal(raw: &str, path: &str) {
    let ctx = || format!("{raw:?} -> {path:?}");
    assert!(path.starts_with('/'), "{}", ctx());
    assert!(path.is_ascii(), "{}", ctx());
    assert!(!path.bytes().any(|b| b < 0x20 || b == 0x7f), "{}", ctx());
    assert!(!path.contains("//"), "{}", ctx());
    assert!(!path.contains('\\'), "{}", ctx());
    for bad in ["%2F", "%2f", "%5C", "%5c", "%00"] {
        assert!(!path.contains(bad), "{} contains {bad}", ctx());
    }
    for b in [b' ', b'"', b'<', b'>', b'[', b']', b'^', b'`', b'{', b'|', b'}', b'?', b'#'] {
        assert!(!path.as_bytes().contains(&b), "{} has raw {:?}", ctx(), char::from(b));
    }
    for segment in path.split('/').skip(1) {
        assert!(!matches!(segment, "." | ".."), "{} has a dot segment", ctx());
        let name_end = segment
            .find(';')
            .into_iter()
            .chain(segment.find("%3B"))
            .min()
            .unwrap_or(segment.len());
        let name = &segment[..name_end];
        assert!(
            !matches!(name, "." | ".."),
            "{} has a dot segment behind parameters",
            ctx()
        );
    }
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let (Some(&hi), Some(&lo)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
            panic!("{} has a truncated escape", ctx());
        };
        let upper_hex = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
        assert!(upper_hex(hi) && upper_hex(lo), "{} has a non upper-case escape", ctx());
        let value = u8::from_str_radix(&path[i + 1..i + 3], 16).unwrap();
        assert!(
            !(value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~')),
            "{} keeps an unreserved character encoded",
            ctx()
        );
    }
    // Only the last segment may be empty (a trailing slash).
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    if let Some((_, inner)) = segments.split_last() {
        assert!(inner.iter().all(|s| !s.is_empty()), "{}", ctx());
    }
}

fn check_query(query: &str) {
    let canonical = canonical_query(query);
    assert!(
        canonical.bytes().all(|b| b.is_ascii_graphic()),
        "{query:?} -> {canonical:?}"
    );
    for b in [b'"', b'<', b'>', b'\\', b'^', b'`', b'{', b'|', b'}'] {
        assert!(!canonical.as_bytes().contains(&b), "{query:?} -> {canonical:?}");
    }
    let again = canonical_query(&canonical);
    assert!(matches!(again, Cow::Borrowed(_)), "{query:?} -> {canonical:?}");
    assert_eq!(again, canonical);
    if matches!(canonical, Cow::Borrowed(_)) {
        assert_eq!(canonical, query);
    }
}

fn check_host(value: &str) {
    let Ok(host) = parse_host(value) else {
        return;
    };
    let name: &str = &host.name;
    let ctx = || format!("{value:?} -> {host:?}");
    assert!(name.is_ascii(), "{}", ctx());
    assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{}", ctx());
    if let Some(literal) = name.strip_prefix('[') {
        let literal = literal.strip_suffix(']').unwrap_or_else(|| panic!("{}", ctx()));
        assert!(literal.parse::<std::net::Ipv6Addr>().is_ok(), "{}", ctx());
    } else {
        assert!(!name.is_empty() && name.len() <= 253, "{}", ctx());
        assert!(!name.ends_with('.'), "{}", ctx());
        assert!(name.split('.').all(|label| !label.is_empty()), "{}", ctx());
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')),
            "{}",
            ctx()
        );
    }
    if let Some(port) = host.port {
        assert!((1..=5).contains(&port.len()), "{}", ctx());
        assert!(port.bytes().all(|b| b.is_ascii_digit()), "{}", ctx());
        assert!(port.parse::<u32>().unwrap() <= 65535, "{}", ctx());
    }
    // The authority forwarded upstream reads back as the same host.
    let authority = host.authority();
    let back = parse_host(&authority).unwrap_or_else(|e| panic!("{} -> {authority:?}: {e}", ctx()));
    assert_eq!(back, host, "{value:?}");
    assert!(back.is_exactly(&authority), "{value:?}");
    assert_eq!(host.is_exactly(value), authority == value, "{value:?}");
}
