//! Rendering values for the written configuration: every string is a TOML
//! basic string with its quotes, backslashes and control characters
//! escaped, so a Kong name or header value cannot break out of it.

use std::fmt::Write as _;

pub(super) fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(super) fn strings<S: AsRef<str>>(items: &[S]) -> String {
    let inner: Vec<String> = items.iter().map(|s| string(s.as_ref())).collect();
    format!("[{}]", inner.join(", "))
}

/// `{ "a" = "1", "b" = "2" }`.
pub(super) fn string_map(pairs: &[(String, String)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{} = {}", string(k), string(v)))
        .collect();
    format!("{{ {} }}", inner.join(", "))
}

/// A name Portcullis accepts (1-64 of `A-Z a-z 0-9 - _ .`), made from a Kong
/// name; unique among `taken`.
pub(super) fn name(raw: &str, taken: &mut Vec<String>) -> String {
    let mut base: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(56)
        .collect();
    if base.is_empty() {
        base.push('x');
    }
    let mut candidate = base.clone();
    let mut n = 2;
    while taken.iter().any(|t| t == &candidate) {
        candidate = format!("{base}-{n}");
        n += 1;
    }
    taken.push(candidate.clone());
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(string("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(strings(&["x", "y"]), r#"["x", "y"]"#);
        for odd in ["a\"b", "x\\", "line\nnext", "\u{7f}\u{0}", "'''", "é\"\"\""] {
            let table: toml::Table = toml::from_str(&format!("k = {}", string(odd))).unwrap();
            assert_eq!(table["k"].as_str(), Some(odd));
        }
    }

    #[test]
    fn names_are_safe_and_unique() {
        let mut taken = Vec::new();
        assert_eq!(name("orders api", &mut taken), "orders-api");
        assert_eq!(name("orders api", &mut taken), "orders-api-2");
        assert_eq!(name("", &mut taken), "x");
        assert_eq!(name(&"é".repeat(100), &mut taken).len(), 56);
    }
}
