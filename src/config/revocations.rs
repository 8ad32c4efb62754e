//! Token revocations (CONTRACT §13): one entry as the admin API and the
//! `revocations_file` write it, and that file's format.
//!
//! The file is JSON, `{"revocations": [ENTRY, ...]}`, each entry exactly
//! what `POST /revocations` takes: `{"jti": "...", "expires_at": RFC3339}`
//! or `{"subject": "...", "issued_before": RFC3339}` (optionally with
//! `expires_at`). It is read here, when the configuration is loaded, so
//! that `check` reports a broken file as `FILE:LINE:COL` in that file.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::diag::ConfigError;

/// The longest `jti` or subject kept: both come from tokens, and a
/// revocation list is held in memory whole.
pub const MAX_ID_BYTES: usize = 1024;

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Revocation {
    /// The token with this `jti`; dropped once `expires_at` (Unix seconds,
    /// at least the token's own `exp`) has passed.
    Jti { jti: String, expires_at: u64 },
    /// Every token of `subject` issued at or before `issued_before` (Unix
    /// seconds), or without `iat`. Kept until deleted, or until
    /// `expires_at` when given.
    Subject {
        subject: String,
        issued_before: u64,
        expires_at: Option<u64>,
    },
}

impl Revocation {
    /// Which token(s) it names: two entries with the same key are one
    /// revocation (the later replaces the earlier).
    pub fn key(&self) -> RevocationKey<'_> {
        match self {
            Revocation::Jti { jti, .. } => RevocationKey::Jti(jti),
            Revocation::Subject { subject, .. } => RevocationKey::Subject(subject),
        }
    }

    /// When it may be forgotten, if ever.
    pub fn expires_at(&self) -> Option<u64> {
        match self {
            Revocation::Jti { expires_at, .. } => Some(*expires_at),
            Revocation::Subject { expires_at, .. } => *expires_at,
        }
    }

    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at().is_some_and(|at| at <= now)
    }

    /// The JSON object of the admin API and the file.
    pub fn to_json(&self) -> serde_json::Value {
        let wire = match self {
            Revocation::Jti { jti, expires_at } => Wire {
                jti: Some(jti.clone()),
                expires_at: Some(rfc3339(*expires_at)),
                ..Wire::default()
            },
            Revocation::Subject {
                subject,
                issued_before,
                expires_at,
            } => Wire {
                subject: Some(subject.clone()),
                issued_before: Some(rfc3339(*issued_before)),
                expires_at: expires_at.map(rfc3339),
                ..Wire::default()
            },
        };
        serde_json::to_value(wire).unwrap_or_default()
    }
}

/// What names a revocation, to find and delete it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationKey<'a> {
    Jti(&'a str),
    Subject(&'a str),
}

/// An entry as written: every member optional, so that each problem gets
/// its own message.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    revocations: Vec<Wire>,
}

/// Why an entry is refused; the text never repeats the entry's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("not a JSON object with jti/expires_at or subject/issued_before: {0}")]
    Json(String),
    #[error("give exactly one of `jti` and `subject`")]
    OneOf,
    #[error("a `jti` revocation needs `expires_at` (RFC 3339)")]
    JtiNeedsExpiry,
    #[error("a `subject` revocation needs `issued_before` (RFC 3339)")]
    SubjectNeedsTime,
    #[error("`issued_before` is for `subject` revocations")]
    IssuedBeforeWithJti,
    #[error("`{0}` is not an RFC 3339 time such as 2027-01-01T00:00:00Z")]
    Time(&'static str),
    #[error("`{0}` must be 1 to 1024 bytes of visible text")]
    Id(&'static str),
}

/// Whether a body names a revocation to add, or only the key of one to
/// delete (`expires_at`, `issued_before` then optional and ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Add,
    Delete,
}

/// One admin API body.
pub fn parse_entry(body: &[u8], purpose: Purpose) -> Result<Revocation, EntryError> {
    let wire: Wire = serde_json::from_slice(body).map_err(|e| EntryError::Json(e.to_string()))?;
    entry(wire, purpose)
}

fn entry(wire: Wire, purpose: Purpose) -> Result<Revocation, EntryError> {
    let time = |value: &Option<String>, name| -> Result<Option<u64>, EntryError> {
        value
            .as_deref()
            .map(|t| parse_time(t).ok_or(EntryError::Time(name)))
            .transpose()
    };
    let expires_at = time(&wire.expires_at, "expires_at")?;
    let issued_before = time(&wire.issued_before, "issued_before")?;
    match (wire.jti, wire.subject) {
        (Some(jti), None) => {
            check_id(&jti, "jti")?;
            if issued_before.is_some() && purpose == Purpose::Add {
                return Err(EntryError::IssuedBeforeWithJti);
            }
            let expires_at = match (expires_at, purpose) {
                (Some(at), _) => at,
                (None, Purpose::Delete) => 0,
                (None, Purpose::Add) => return Err(EntryError::JtiNeedsExpiry),
            };
            Ok(Revocation::Jti { jti, expires_at })
        }
        (None, Some(subject)) => {
            check_id(&subject, "subject")?;
            let issued_before = match (issued_before, purpose) {
                (Some(at), _) => at,
                (None, Purpose::Delete) => 0,
                (None, Purpose::Add) => return Err(EntryError::SubjectNeedsTime),
            };
            Ok(Revocation::Subject {
                subject,
                issued_before,
                expires_at,
            })
        }
        _ => Err(EntryError::OneOf),
    }
}

fn check_id(id: &str, name: &'static str) -> Result<(), EntryError> {
    let visible = id.chars().all(|c| !c.is_control());
    if id.is_empty() || id.len() > MAX_ID_BYTES || !visible {
        return Err(EntryError::Id(name));
    }
    Ok(())
}

/// RFC 3339 to Unix seconds.
pub fn parse_time(text: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

pub fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// The entries of a revocations file's text; an error names its place in
/// that file.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<Revocation>, ConfigError> {
    let at = |line: usize, col: usize, message: String| ConfigError {
        file: path.to_path_buf(),
        position: Some((line, col)),
        message,
    };
    let file: File = serde_json::from_str(text).map_err(|e| {
        at(
            e.line().max(1),
            e.column().max(1),
            format!("revocations file: {e}"),
        )
    })?;
    file.revocations
        .into_iter()
        .enumerate()
        .map(|(i, wire)| {
            entry(wire, Purpose::Add).map_err(|e| {
                ConfigError::in_file(path, format!("revocations file: entry {}: {e}", i + 1))
            })
        })
        .collect()
}

/// The file's text for `entries`.
pub fn render_file<'a>(entries: impl Iterator<Item = &'a Revocation>) -> Vec<u8> {
    let list: Vec<serde_json::Value> = entries.map(Revocation::to_json).collect();
    let mut out =
        serde_json::to_vec_pretty(&serde_json::json!({ "revocations": list })).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_the_file() {
        let entries = vec![
            Revocation::Jti {
                jti: "a\"b".into(),
                expires_at: 1_800_000_000,
            },
            Revocation::Subject {
                subject: "alice".into(),
                issued_before: 1_700_000_000,
                expires_at: None,
            },
            Revocation::Subject {
                subject: "bob".into(),
                issued_before: 1_700_000_000,
                expires_at: Some(1_900_000_000),
            },
        ];
        let text = String::from_utf8(render_file(entries.iter())).unwrap();
        assert_eq!(parse_file(Path::new("r.json"), &text).unwrap(), entries);
    }

    #[test]
    fn bodies_are_strict() {
        let add = |b: &str| parse_entry(b.as_bytes(), Purpose::Add);
        assert_eq!(
            add(r#"{"jti":"x","expires_at":"2027-01-01T00:00:00Z"}"#),
            Ok(Revocation::Jti {
                jti: "x".into(),
                expires_at: 1_798_761_600
            })
        );
        assert_eq!(add(r#"{"jti":"x"}"#), Err(EntryError::JtiNeedsExpiry));
        assert_eq!(add(r#"{"subject":"x"}"#), Err(EntryError::SubjectNeedsTime));
        assert_eq!(
            add(r#"{"jti":"x","subject":"y","expires_at":"2027-01-01T00:00:00Z"}"#),
            Err(EntryError::OneOf)
        );
        assert_eq!(add("{}"), Err(EntryError::OneOf));
        assert_eq!(
            add(r#"{"jti":"x","expires_at":"tomorrow"}"#),
            Err(EntryError::Time("expires_at"))
        );
        assert_eq!(
            add(r#"{"jti":"","expires_at":"2027-01-01T00:00:00Z"}"#),
            Err(EntryError::Id("jti"))
        );
        assert_eq!(
            add(r#"{"jti":"a\nb","expires_at":"2027-01-01T00:00:00Z"}"#),
            Err(EntryError::Id("jti"))
        );
        assert!(matches!(
            add(r#"{"jti":"x","expires_at":"2027-01-01T00:00:00Z","sub":"y"}"#),
            Err(EntryError::Json(_))
        ));
        assert!(matches!(add("[1]"), Err(EntryError::Json(_))));
        let long = format!(
            r#"{{"subject":"{}","issued_before":"2027-01-01T00:00:00Z"}}"#,
            "s".repeat(1025)
        );
        assert_eq!(add(&long), Err(EntryError::Id("subject")));
        assert_eq!(
            parse_entry(br#"{"jti":"x"}"#, Purpose::Delete),
            Ok(Revocation::Jti {
                jti: "x".into(),
                expires_at: 0
            })
        );
    }

    #[test]
    fn a_broken_file_is_reported_at_its_place() {
        let e = parse_file(
            Path::new("r.json"),
            "{\n  \"revocations\": [\n    {\"jti\": 1}\n  ]\n}",
        )
        .unwrap_err();
        assert_eq!(e.file, Path::new("r.json"));
        assert_eq!(e.position.map(|p| p.0), Some(3));
        let e = parse_file(
            Path::new("r.json"),
            r#"{"revocations":[{"jti":"x","expires_at":"2027-01-01T00:00:00Z"},{"jti":"y"}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("entry 2"), "{e}");
    }
}
