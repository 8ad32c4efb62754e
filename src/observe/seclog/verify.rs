//! `portcullis seclog verify`: recompute every chain value and check every
//! checkpoint signature, stopping at the first line that does not hold.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};

use super::{checkpoint_message, next, split, ChainValue};

/// Why verification did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file that cannot be read: a usage error (exit 2).
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The first line that does not verify (exit 1).
    #[error("{}:{line}: {what}", path.display())]
    Bad {
        path: PathBuf,
        line: usize,
        what: String,
    },
}

/// What a successful verification saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub lines: usize,
    /// Checkpoints whose signature was checked.
    pub checkpoints: usize,
    /// Lines after the last checked checkpoint of the last file: no
    /// signature covers them.
    pub unsigned_tail: usize,
}

/// Verifies `files` in order; each file's `log_opened` must name the last
/// chain value of the file before it. With `key`, every checkpoint must
/// carry its valid signature and every file at least one checkpoint.
pub fn verify_files(
    files: &[PathBuf],
    key: Option<&VerifyingKey>,
) -> Result<Verified, VerifyError> {
    let mut total = Verified {
        lines: 0,
        checkpoints: 0,
        unsigned_tail: 0,
    };
    let mut previous: Option<ChainValue> = None;
    for path in files {
        let file = std::fs::File::open(path).map_err(|source| VerifyError::Read {
            path: path.clone(),
            source,
        })?;
        let file = verify_lines(path, BufReader::new(file), previous.as_ref(), key)?;
        previous = Some(file.last);
        total.lines += file.lines;
        total.checkpoints += file.checkpoints;
        total.unsigned_tail = file.unsigned_tail;
    }
    Ok(total)
}

struct FileResult {
    lines: usize,
    checkpoints: usize,
    unsigned_tail: usize,
    last: ChainValue,
}

/// Longer lines are refused rather than read whole into memory.
const MAX_LINE: u64 = 16 << 20;

fn verify_lines(
    path: &Path,
    mut input: impl BufRead,
    previous_file: Option<&ChainValue>,
    key: Option<&VerifyingKey>,
) -> Result<FileResult, VerifyError> {
    let bad = |line: usize, what: String| VerifyError::Bad {
        path: path.to_path_buf(),
        line,
        what,
    };
    let mut chain = super::genesis();
    let mut lines = 0usize;
    let mut checkpoints = 0usize;
    let mut since_checkpoint = 0usize;
    let mut raw = Vec::new();
    loop {
        let n = lines + 1;
        raw.clear();
        let read = input
            .by_ref()
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut raw)
            .map_err(|source| VerifyError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        if read == 0 {
            break;
        }
        if raw.pop() != Some(b'\n') {
            return Err(bad(
                n,
                if raw.len() as u64 >= MAX_LINE {
                    "the line is longer than 16 MiB".into()
                } else {
                    "the line has no newline: the file was cut mid-line".into()
                },
            ));
        }
        let text = std::str::from_utf8(&raw).map_err(|_| bad(n, "not UTF-8".into()))?;
        let (body, claimed) =
            split(text).ok_or_else(|| bad(n, "not a chained line (no `chain` last)".into()))?;
        let record: serde_json::Value =
            serde_json::from_str(&body).map_err(|_| bad(n, "not a JSON object".into()))?;
        let seq = record.get("seq").and_then(serde_json::Value::as_u64);
        if seq != Some(n as u64) {
            return Err(bad(
                n,
                match seq {
                    Some(s) => format!(
                        "seq {s} where {n} was expected: a line was removed, added or moved"
                    ),
                    None => "no `seq`".into(),
                },
            ));
        }
        let event = record.get("event").and_then(serde_json::Value::as_str);
        if n == 1 && event != Some("log_opened") {
            return Err(bad(n, "the first line is not a `log_opened` event".into()));
        }
        let computed = next(&chain, body.as_bytes());
        if computed != claimed {
            return Err(bad(
                n,
                "chain mismatch: this line was changed, or the chain was cut here".into(),
            ));
        }
        match event {
            Some("log_opened") => {
                let prev = record.get("prev_chain");
                let expected = if n == 1 {
                    previous_file.map(hex::encode)
                } else {
                    Some(hex::encode(chain))
                };
                // The first file given names whatever came before it.
                let check = n > 1 || previous_file.is_some();
                let named = prev.and_then(serde_json::Value::as_str).map(str::to_owned);
                if check && named != expected {
                    return Err(bad(
                        n,
                        match expected {
                            Some(e) if n == 1 => format!(
                                "`log_opened` does not name the previous file's last chain {e}"
                            ),
                            _ => {
                                "`log_opened` does not name the chain of the line before it".into()
                            }
                        },
                    ));
                }
                since_checkpoint += 1;
            }
            Some("checkpoint") => {
                check_checkpoint(&record, n as u64 - 1, &chain, key)
                    .map_err(|what| bad(n, what))?;
                if key.is_some() {
                    checkpoints += 1;
                    since_checkpoint = 0;
                } else {
                    since_checkpoint += 1;
                }
            }
            _ => since_checkpoint += 1,
        }
        chain = computed;
        lines = n;
    }
    if lines == 0 {
        return Err(bad(1, "empty file: no `log_opened` line".into()));
    }
    if key.is_some() && checkpoints == 0 {
        return Err(bad(
            lines,
            "no checkpoint in the file: nothing is signed".into(),
        ));
    }
    Ok(FileResult {
        lines,
        checkpoints,
        unsigned_tail: since_checkpoint,
        last: chain,
    })
}

/// A checkpoint covers the line before it: `signed_seq` and `signed_chain`
/// must be that line's, and `sig` their signature by `key`.
fn check_checkpoint(
    record: &serde_json::Value,
    seq: u64,
    chain: &ChainValue,
    key: Option<&VerifyingKey>,
) -> Result<(), String> {
    let signed_seq = record.get("signed_seq").and_then(serde_json::Value::as_u64);
    let signed_chain = record
        .get("signed_chain")
        .and_then(serde_json::Value::as_str);
    if signed_seq != Some(seq) || signed_chain != Some(hex::encode(chain).as_str()) {
        return Err("the checkpoint does not name the line before it".into());
    }
    let Some(key) = key else {
        return Ok(());
    };
    let sig = record
        .get("sig")
        .and_then(serde_json::Value::as_str)
        .and_then(|s| STANDARD.decode(s).ok())
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or("the checkpoint has no valid `sig`")?;
    key.verify_strict(checkpoint_message(seq, chain).as_bytes(), &sig)
        .map_err(|_| "the checkpoint signature does not verify with the given key".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::seclog::Chain;

    fn log(events: &[&str]) -> Vec<u8> {
        let mut chain = Chain::default();
        let mut out = Vec::new();
        for e in events {
            out.extend_from_slice(chain.seal(e).unwrap().as_bytes());
            out.push(b'\n');
        }
        out
    }

    fn verify(bytes: &[u8]) -> Result<usize, String> {
        verify_lines(Path::new("s.log"), bytes, None, None)
            .map(|r| r.lines)
            .map_err(|e| e.to_string())
    }

    const OPENED: &str = r#"{"event":"log_opened","prev_chain":null}"#;

    #[test]
    fn a_sealed_log_verifies_and_changes_are_found_where_they_are() {
        let good = log(&[OPENED, r#"{"event":"a"}"#, r#"{"event":"b"}"#]);
        assert_eq!(verify(&good), Ok(3));
        let text = String::from_utf8(good.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();

        let changed = text.replace(r#""event":"b""#, r#""event":"c""#);
        assert!(verify(changed.as_bytes())
            .unwrap_err()
            .starts_with("s.log:3: chain mismatch"));

        let dropped = format!("{}\n{}\n", lines[0], lines[2]);
        assert!(verify(dropped.as_bytes())
            .unwrap_err()
            .starts_with("s.log:2: seq 3"));

        let swapped = format!("{}\n{}\n{}\n", lines[0], lines[2], lines[1]);
        assert!(verify(swapped.as_bytes())
            .unwrap_err()
            .starts_with("s.log:2: seq 3"));

        let cut = &good[..good.len() - 5];
        assert!(verify(cut)
            .unwrap_err()
            .starts_with("s.log:3: the line has no newline"));

        let unopened = log(&[r#"{"event":"a"}"#]);
        assert!(verify(&unopened)
            .unwrap_err()
            .starts_with("s.log:1: the first line"));
        assert!(verify(b"").unwrap_err().starts_with("s.log:1: empty"));
    }
}
