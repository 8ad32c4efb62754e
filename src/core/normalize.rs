//! Request-path normalization.
//!
//! The gateway makes every routing and policy decision on the normalized
//! path and forwards exactly that path upstream. That way the path the
//! policy judged and the path the backend serves cannot differ: any input
//! whose meaning a backend might read differently (encoded slashes,
//! backslashes, `..;` tricks, double decoding) is rejected instead of being
//! "fixed up".

use std::borrow::Cow;

/// Why a request path was refused.
///
/// The messages are sent to clients in the body of a 400 response, so they
/// describe the rule that was broken and never echo the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Relative paths and authority-form targets have no defined meaning for
    /// a reverse proxy.
    #[error("request path must start with '/'")]
    NotAbsolute,
    /// A '%' not followed by two hex digits: backends disagree on how to
    /// read it, so it cannot be forwarded safely.
    #[error("request path contains an invalid percent-encoding")]
    InvalidPercentEncoding,
    /// Backends differ on whether `%2F` separates segments, which lets it
    /// hide a path from prefix-based policy.
    #[error("request path contains an encoded slash")]
    EncodedSlash,
    /// `%00` truncates the path in C-based backends and file systems.
    #[error("request path contains an encoded NUL byte")]
    EncodedNul,
    /// Windows-hosted and some Java backends treat `\` (raw or `%5C`) as a
    /// path separator.
    #[error("request path contains a backslash")]
    Backslash,
    /// Control bytes enable log injection and request smuggling tricks.
    #[error("request path contains a control character")]
    ControlCharacter,
    /// A `..` with no parent left. Clamping it to `/`, as browsers do, would
    /// route the request somewhere the client never named; only scanners
    /// send such paths.
    #[error("request path points above the root")]
    AboveRoot,
    /// A segment like `..;x` that a lenient backend (Tomcat and friends,
    /// which strip `;` parameters) would read as a dot segment, or one
    /// ending in `.` or a space, which Windows and IIS drop (`admin.` is
    /// `admin` there).
    #[error("request path contains an ambiguous dot segment")]
    AmbiguousSegment,
    /// A `?` or `#` in the path itself. A request's path ends at them, so
    /// only a configured path can hold one, and no request would match it.
    #[error("path contains `?` or `#`")]
    Delimiter,
    /// `%3F` or `%23`: a backend that decodes the path before splitting off
    /// the query would end the path there.
    #[error("request path contains an encoded `?` or `#`")]
    EncodedDelimiter,
    /// Percent-encodings that do not form UTF-8 (overlong `%C0%AE` and
    /// the like), which lenient decoders turn into `.` or `/`.
    #[error("request path is not valid UTF-8 once decoded")]
    InvalidUtf8,
    /// A character that Unicode normalization (NFKC) turns into `.`, `/`
    /// or `\`, e.g. the full-width `．`: some backends normalize paths.
    #[error("request path contains a look-alike of `.`, `/` or `\\`")]
    LookAlike,
}

/// Normalizes a request path (without its query string) to the one form the
/// gateway routes on and forwards.
///
/// Returns the input unchanged and unallocated when it is already normal,
/// since that is what nearly every real request looks like. Unreserved
/// characters are decoded exactly once (decoding again would let `%252e`
/// become `.` behind the policy's back); other percent-encodings are kept,
/// with upper-case hex so that equal paths compare equal. Characters that
/// may not stand raw in a URI path (space, `"`, `<>`, `[]`, `^`, `` ` ``,
/// `{}`, `|`, non-ASCII) are percent-encoded, so the result is ASCII and
/// `é` and `%C3%A9` are one path.
///
/// # Errors
///
/// Returns the [`PathError`] of the first rule the path breaks; the
/// request must then be refused with 400, never forwarded.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    if is_already_normal(rest) {
        return Ok(Cow::Borrowed(raw));
    }
    normalize_slow(rest).map(Cow::Owned)
}

/// Decides in one byte pass whether the path can be returned as-is; anything
/// that might need work or might be an error goes to the slow path, which is
/// the single place where the rules are enforced.
fn is_already_normal(rest: &str) -> bool {
    let bytes = rest.as_bytes();
    // `rest` follows the leading '/', so it opens a segment.
    let mut at_segment_start = true;
    // Past the segment's first `;`: a dot there ends no segment name.
    let mut in_params = false;
    let mut previous = b'/';
    for (index, &byte) in bytes.iter().enumerate() {
        let name_ends_in_dot = previous == b'.' && !in_params;
        let needs_work = match byte {
            b'%' | b'\\' => true,
            // A '/' that opens a segment closes an empty one: "//"; one
            // after a '.' ends a segment name in a dot.
            b'/' => at_segment_start || name_ends_in_dot,
            // `a.;x` ends in a dot once its parameters are stripped.
            b';' => name_ends_in_dot,
            b'.' => at_segment_start && bytes.get(index..).is_some_and(opens_dot_segment),
            _ => is_control(byte) || needs_escape(byte),
        };
        if needs_work {
            return false;
        }
        match byte {
            b'/' => in_params = false,
            b';' => in_params = true,
            _ => {}
        }
        at_segment_start = byte == b'/';
        previous = byte;
    }
    previous != b'.' || in_params
}

/// Whether a segment starting with `tail` is `.` or `..`, bare or with `;`
/// parameters. Only used on paths without '%', so `%3B` cannot occur.
fn opens_dot_segment(tail: &[u8]) -> bool {
    let after_dots = match tail {
        [b'.', b'.', after @ ..] | [b'.', after @ ..] => after,
        _ => return false,
    };
    matches!(after_dots.first(), None | Some(b'/' | b';'))
}

fn is_control(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7f
}

/// Bytes outside RFC 3986 `pchar` (and not `/` or `%`), which are encoded.
fn needs_escape(byte: u8) -> bool {
    byte >= 0x80
        || matches!(
            byte,
            b' ' | b'"'
                | b'<'
                | b'>'
                | b'['
                | b']'
                | b'^'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'?'
                | b'#'
        )
}

const HEX: [u8; 16] = *b"0123456789ABCDEF";

/// The path with every `;` parameter (`;x`, or `%3B` onwards, to the end
/// of its segment) removed, normalized again; `None` when it has none.
/// Servlet containers and friends route on this form, so it is the form
/// a route with `allow_path_params` is matched on.
///
/// # Errors
///
/// When what is left does not normalize (it always does for a path that
/// came out of [`normalize_path`]).
pub fn strip_path_params(path: &str) -> Result<Option<String>, PathError> {
    if !path.contains(';') && !path.contains("%3B") {
        return Ok(None);
    }
    let stripped: Vec<&str> = path.split('/').map(segment_name).collect();
    let joined = stripped.join("/");
    normalize_path(&joined).map(|p| Some(p.into_owned()))
}

/// Whether a normalized path carries `;` parameters.
#[must_use]
pub fn has_path_params(path: &str) -> bool {
    path.contains(';') || path.contains("%3B")
}

/// The part of a segment that a backend stripping `;` parameters would see.
///
/// `%3B` counts as `;` too: we keep it encoded, but a backend that decodes
/// before stripping parameters would still read `..%3B` as `..`.
fn segment_name(segment: &str) -> &str {
    let bytes = segment.as_bytes();
    let end = bytes.iter().enumerate().find_map(|(index, &byte)| {
        let is_separator = byte == b';'
            || (byte == b'%' && bytes.get(index + 1..index + 3) == Some(b"3B".as_slice()));
        is_separator.then_some(index)
    });
    end.and_then(|end| segment.get(..end)).unwrap_or(segment)
}

/// Builds the normalized path segment by segment straight into the output,
/// so dot segments are resolved on decoded text without a buffer per segment.
fn normalize_slow(rest: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(rest.len() + 1);
    // Whether the last segment that survived (or was consumed) leaves the
    // path pointing at a directory: `/a/b/`, `/a/.` and `/a/b/..` all do.
    let mut trailing_slash = false;
    for segment in rest.split('/') {
        let start = out.len();
        out.push('/');
        push_decoded(&mut out, segment)?;
        let decoded = out.get(start + 1..).unwrap_or_default();
        if decoded.starts_with('.') {
            let name = segment_name(decoded);
            if name.len() != decoded.len() && matches!(name, "." | "..") {
                return Err(PathError::AmbiguousSegment);
            }
        }
        match decoded {
            "" | "." => {
                out.truncate(start);
                trailing_slash = true;
            }
            ".." => {
                out.truncate(start);
                let parent = out.rfind('/').ok_or(PathError::AboveRoot)?;
                out.truncate(parent);
                trailing_slash = true;
            }
            _ => {
                let name = segment_name(decoded);
                if name.ends_with('.') || name.ends_with("%20") {
                    return Err(PathError::AmbiguousSegment);
                }
                trailing_slash = false;
            }
        }
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    if out.contains('%') {
        check_decoded(&out)?;
    }
    Ok(out)
}

/// Characters whose compatibility decomposition (NFKC) holds `.`, `/` or
/// `\`: one and two dot leaders, the ellipsis, small and full-width full
/// stops, division, fraction and full-width solidi, small and full-width
/// reverse solidi, and the big solidi of the math blocks.
const LOOK_ALIKES: [char; 13] = [
    '\u{2024}', '\u{2025}', '\u{2026}', '\u{FE52}', '\u{FF0E}', '\u{2215}', '\u{2044}', '\u{FF0F}',
    '\u{FE68}', '\u{FF3C}', '\u{29F5}', '\u{29F8}', '\u{29F9}',
];

/// The normalized path, with its remaining escapes decoded, must be UTF-8
/// and free of look-alikes.
fn check_decoded(path: &str) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escape = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| Some((hex_value(hex[0])? << 4) | hex_value(hex[1])?));
        match escape {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let text = std::str::from_utf8(&decoded).map_err(|_| PathError::InvalidUtf8)?;
    if text.chars().any(|c| LOOK_ALIKES.contains(&c)) {
        return Err(PathError::LookAlike);
    }
    Ok(())
}

/// Appends one raw segment to `out`, decoding unreserved characters and
/// upper-casing the hex of every other escape.
fn push_decoded(out: &mut String, segment: &str) -> Result<(), PathError> {
    let mut pieces = segment.split('%');
    // Text before the first '%' has no escape to resolve.
    if let Some(first) = pieces.next() {
        push_literal(out, first)?;
    }
    // Every later piece starts right after a '%', with its two hex digits.
    for piece in pieces {
        let (hi, lo, tail) = match piece.as_bytes() {
            [hi, lo, ..] => (*hi, *lo, piece.get(2..)),
            _ => return Err(PathError::InvalidPercentEncoding),
        };
        let (Some(hi_value), Some(lo_value), Some(tail)) = (hex_value(hi), hex_value(lo), tail)
        else {
            return Err(PathError::InvalidPercentEncoding);
        };
        match (hi_value << 4) | lo_value {
            0x00 => return Err(PathError::EncodedNul),
            b'/' => return Err(PathError::EncodedSlash),
            b'?' | b'#' => return Err(PathError::EncodedDelimiter),
            b'\\' => return Err(PathError::Backslash),
            byte if is_unreserved(byte) => out.push(char::from(byte)),
            _ => {
                out.push('%');
                out.push(char::from(hi.to_ascii_uppercase()));
                out.push(char::from(lo.to_ascii_uppercase()));
            }
        }
        push_literal(out, tail)?;
    }
    Ok(())
}

fn push_literal(out: &mut String, text: &str) -> Result<(), PathError> {
    match text
        .bytes()
        .find(|&b| matches!(b, b'\\' | b'?' | b'#') || is_control(b))
    {
        Some(b'\\') => Err(PathError::Backslash),
        Some(b'?' | b'#') => Err(PathError::Delimiter),
        Some(_) => Err(PathError::ControlCharacter),
        None if text.bytes().any(needs_escape) => {
            for byte in text.bytes() {
                if needs_escape(byte) {
                    out.push('%');
                    out.push(char::from(HEX[usize::from(byte >> 4)]));
                    out.push(char::from(HEX[usize::from(byte & 0xf)]));
                } else {
                    out.push(char::from(byte));
                }
            }
            Ok(())
        }
        None => {
            out.push_str(text);
            Ok(())
        }
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// RFC 3986 unreserved set: the only characters whose encoded and plain
/// forms every backend must treat as identical, hence safe to decode.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        match normalize_path(raw) {
            Ok(path) => path.into_owned(),
            Err(err) => panic!("{raw:?} was rejected: {err}"),
        }
    }

    fn err(raw: &str) -> PathError {
        match normalize_path(raw) {
            Ok(path) => panic!("{raw:?} was accepted as {path:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn fast_path_borrows() {
        for raw in [
            "/api/v1/orders",
            "/",
            "/a/b/",
            "/.well-known/x",
            "/a;b/c",
            "/a:b@c!$&'()*+,=",
            // Found by fuzzing: a dot inside `;` parameters ends no name.
            "/o;Z.mZZ./ad,m4/",
            "/a;v=1.",
        ] {
            assert!(
                matches!(normalize_path(raw), Ok(Cow::Borrowed(p)) if p == raw),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn encodes_what_may_not_stand_raw() {
        assert_eq!(ok("/caf\u{e9}"), "/caf%C3%A9");
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(ok("/a b"), "/a%20b");
        assert_eq!(
            ok("/a\"b<c>{d}|e^f`g[h]"),
            "/a%22b%3Cc%3E%7Bd%7D%7Ce%5Ef%60g%5Bh%5D"
        );
        assert_eq!(ok("/%2e%2e%c3%a9/x/../\u{fc}"), "/..%C3%A9/%C3%BC");
    }

    #[test]
    fn decoded_paths_are_utf8_without_look_alikes() {
        for raw in [
            "/x/%C0%AE%C0%AE/admin",
            "/%E0%80%AE",
            "/x/%C0%AF",
            "/a%ff",
            "/%c3",
        ] {
            assert_eq!(err(raw), PathError::InvalidUtf8, "{raw:?}");
        }
        for raw in [
            "/x/%EF%BC%8E%EF%BC%8E/admin",
            "/x/\u{ff0e}\u{ff0e}/admin",
            "/x/%E2%80%A5/admin",
            "/x%EF%BC%8Fadmin",
            "/a\u{2215}b",
        ] {
            assert_eq!(err(raw), PathError::LookAlike, "{raw:?}");
        }
        assert_eq!(err("/admin%3Fx"), PathError::EncodedDelimiter);
        // Found by fuzzing: a raw `?` was encoded to `%3F`, which then
        // refused itself; the normal form must be its own normal form.
        assert_eq!(err("/?"), PathError::Delimiter);
        assert_eq!(err("/a#b"), PathError::Delimiter);
        assert_eq!(err("/admin%23"), PathError::EncodedDelimiter);
        assert_eq!(ok("/caf%C3%A9"), "/caf%C3%A9");
    }

    #[test]
    fn path_params() {
        assert_eq!(strip_path_params("/a/b").unwrap(), None);
        assert_eq!(
            strip_path_params("/admin;x/secret").unwrap().as_deref(),
            Some("/admin/secret")
        );
        assert_eq!(
            strip_path_params("/admin;jsessionid=1").unwrap().as_deref(),
            Some("/admin")
        );
        assert_eq!(
            strip_path_params("/admin%3Bx/secret").unwrap().as_deref(),
            Some("/admin/secret")
        );
        assert_eq!(
            strip_path_params("/a/;x/b").unwrap().as_deref(),
            Some("/a/b")
        );
        assert_eq!(strip_path_params("/;x").unwrap().as_deref(), Some("/"));
        assert!(has_path_params("/a%3Bb") && has_path_params("/a;b") && !has_path_params("/ab"));
    }

    #[test]
    fn must_be_absolute() {
        assert_eq!(err(""), PathError::NotAbsolute);
        assert_eq!(err("a/b"), PathError::NotAbsolute);
        assert_eq!(err("*"), PathError::NotAbsolute);
        assert_eq!(err("http://x/y"), PathError::NotAbsolute);
    }

    #[test]
    fn decodes_unreserved_once() {
        assert_eq!(ok("/%41%42"), "/AB");
        assert_eq!(ok("/%7e"), "/~");
        assert_eq!(ok("/%7E%2d%5f%2E%30"), "/~-_.0");
        assert_eq!(ok("/%252e%252e/"), "/%252e%252e/");
        assert_eq!(ok("/%25"), "/%25");
    }

    #[test]
    fn keeps_reserved_escapes_upper_case() {
        assert_eq!(ok("/a%3ab"), "/a%3Ab");
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(ok("/a%20b%3d"), "/a%20b%3D");
        assert_eq!(ok("/a%0a"), "/a%0A");
    }

    #[test]
    fn invalid_percent_encoding() {
        for raw in [
            "/a%",
            "/a%4",
            "/a%zz",
            "/%g0",
            "/a%%41",
            "/a%4/b",
            "/%\u{e9}a",
        ] {
            assert_eq!(err(raw), PathError::InvalidPercentEncoding, "{raw:?}");
        }
    }

    #[test]
    fn forbidden_escapes() {
        assert_eq!(err("/a%2fb"), PathError::EncodedSlash);
        assert_eq!(err("/a%2Fb"), PathError::EncodedSlash);
        assert_eq!(err("/a%00"), PathError::EncodedNul);
        assert_eq!(err("/a%5cb"), PathError::Backslash);
        assert_eq!(err("/a%5Cb"), PathError::Backslash);
    }

    #[test]
    fn forbidden_raw_bytes() {
        assert_eq!(err("/a\\b"), PathError::Backslash);
        assert_eq!(err("\\a"), PathError::NotAbsolute);
        assert_eq!(err("/a\nb"), PathError::ControlCharacter);
        assert_eq!(err("/a\0"), PathError::ControlCharacter);
        assert_eq!(err("/a\tb"), PathError::ControlCharacter);
        assert_eq!(err("/a\x7f"), PathError::ControlCharacter);
        assert_eq!(err("/%41\r"), PathError::ControlCharacter);
    }

    #[test]
    fn collapses_empty_segments() {
        assert_eq!(ok("//a///b"), "/a/b");
        assert_eq!(ok("//admin"), "/admin");
        assert_eq!(ok("/a//"), "/a/");
        assert_eq!(ok("//"), "/");
    }

    #[test]
    fn resolves_dot_segments() {
        assert_eq!(ok("/a/./b"), "/a/b");
        assert_eq!(ok("/a/../b"), "/b");
        assert_eq!(ok("/a/%2e%2e/b"), "/b");
        assert_eq!(ok("/a/%2E./b"), "/b");
        assert_eq!(ok("/a/%2e/b"), "/a/b");
        assert_eq!(ok("/public/../admin"), "/admin");
        assert_eq!(ok("/public/%2e%2e/admin"), "/admin");
        assert_eq!(ok("/a/./b/%7euser/../c//d"), "/a/b/c/d");
    }

    #[test]
    fn above_root() {
        assert_eq!(err("/.."), PathError::AboveRoot);
        assert_eq!(err("/../a"), PathError::AboveRoot);
        assert_eq!(err("/a/../.."), PathError::AboveRoot);
        assert_eq!(err("/%2e%2e/x"), PathError::AboveRoot);
        assert_eq!(err("/%2e%2e/%2e%2e/etc/passwd"), PathError::AboveRoot);
        assert_eq!(err("//.."), PathError::AboveRoot);
    }

    #[test]
    fn ambiguous_segments() {
        for raw in [
            "/a/..;/b",
            "/a/..;x",
            "/a/.;jsessionid=1",
            "/a/..;",
            "/a/%2e%2e;x/b",
            "/a/..%3bx/b",
            "/a/.%3B/b",
            "/..;/admin",
        ] {
            assert_eq!(err(raw), PathError::AmbiguousSegment, "{raw:?}");
        }
        // Windows and IIS drop trailing dots and spaces from a segment.
        for raw in [
            "/admin.",
            "/admin./x",
            "/a/...",
            "/a/...;x",
            "/a/b.;x",
            "/a/..%20",
            "/admin%20/x",
            "/a/.%2e%2e",
        ] {
            assert_eq!(err(raw), PathError::AmbiguousSegment, "{raw:?}");
        }
        // Parameters on ordinary segments are not ambiguous.
        assert_eq!(ok("/a;x/b"), "/a;x/b");
        assert_eq!(ok("/a/;x"), "/a/;x");
        assert_eq!(ok("/a/x%3b.."), "/a/x%3B..");
    }

    #[test]
    fn trailing_slash_is_preserved() {
        assert_eq!(ok("/a/b/"), "/a/b/");
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/b/%2e%2e"), "/a/");
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/."), "/");
        assert_eq!(ok("/a/./"), "/a/");
    }

    #[test]
    fn fast_path_hands_dot_segments_to_slow_path() {
        for raw in ["/a/.", "/a/..", "/./a", "/a/.;x", "/a/..;"] {
            assert!(
                !matches!(normalize_path(raw), Ok(Cow::Borrowed(_))),
                "{raw:?}"
            );
        }
        for raw in ["/a/.b", "/a/..b", "/a/b.c", "/a/.b.c/d"] {
            assert!(
                matches!(normalize_path(raw), Ok(Cow::Borrowed(_))),
                "{raw:?}"
            );
        }
        for raw in ["/a/b.", "/a/b../c", "/a/b.;x"] {
            assert!(
                !matches!(normalize_path(raw), Ok(Cow::Borrowed(_))),
                "{raw:?}"
            );
        }
    }

    /// Random inputs over the characters the rules care about: normalization
    /// must never panic, and its output must be a fixed point containing no
    /// empty or dot segment, or the policy and the backend could still see
    /// different paths.
    #[test]
    fn output_is_a_fixed_point() {
        const ALPHABET: [&str; 20] = [
            "/", "/", ".", ".", "%", "2", "e", "E", "f", "3", "b", "B", ";", "a", "0", "5", "c",
            "7", "\\", "\u{e9}",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50_000 {
            let len = next() % 14;
            let mut raw = String::from("/");
            for _ in 0..len {
                raw.push_str(ALPHABET[(next() % 20) as usize]);
            }
            let Ok(once) = normalize_path(&raw) else {
                continue;
            };
            assert_eq!(normalize_path(&once).unwrap(), once, "{raw:?}");
            assert!(!once.contains("//"), "{raw:?} -> {once:?}");
            for segment in once.split('/').skip(1) {
                assert!(!matches!(segment, "." | ".."), "{raw:?} -> {once:?}");
            }
        }
    }

    #[test]
    fn messages_do_not_echo_input() {
        let secret = "/%2e%2e/%2e%2e/s3cr3t";
        let message = err(secret).to_string();
        assert!(!message.contains("s3cr3t"));
        assert!(!message.contains("%2e"));
    }
}
