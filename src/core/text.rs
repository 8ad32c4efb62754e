//! Header text as CONTRACT §8 reads it.

use http::HeaderValue;

/// `visible ASCII` of CONTRACT §8: printable characters, with spaces and
/// tabs inside.
pub(crate) fn is_visible_ascii(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .iter()
        .all(|b| (0x20..0x7f).contains(b) || *b == b'\t')
}
