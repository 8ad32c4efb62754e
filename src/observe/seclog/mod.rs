//! The tamper-evident security log of CONTRACT §12: each line carries
//! `seq` and, as its last member, `chain`, a SHA-256 over the previous
//! chain value and the line itself; optional Ed25519-signed checkpoints
//! anchor the chain so that rewriting it needs the signing key.
//!
//! The chain is computed by the one writer thread that owns the file
//! ([`sink::ChainedSink`]), so `seq` never interleaves between threads.

pub mod keys;
pub(crate) mod sink;
pub mod verify;

use std::io::Write;

use sha2::{Digest, Sha256};

/// The domain string of the chain's start and of checkpoint signatures.
pub const DOMAIN: &str = "portcullis-seclog-v1";

/// A chain value: 32 raw bytes.
pub type ChainValue = [u8; 32];

/// What ends every chained line: `,"chain":"` + 64 hex digits + `"}`.
const CHAIN_PREFIX: &str = ",\"chain\":\"";
const CHAIN_SUFFIX_LEN: usize = CHAIN_PREFIX.len() + 64 + 2;

/// Lines a checkpoint is written after (with a key).
pub const CHECKPOINT_EVERY_LINES: u64 = 1_000;
/// The longest a line without a signed checkpoint after it waits (with a
/// key).
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// `c_0 = SHA-256("portcullis-seclog-v1")`.
pub fn genesis() -> ChainValue {
    Sha256::digest(DOMAIN.as_bytes()).into()
}

/// `c_n = SHA-256(c_{n-1} ‖ L_n)`.
pub fn next(prev: &ChainValue, line: &[u8]) -> ChainValue {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(line);
    h.finalize().into()
}

/// The text a checkpoint's `sig` signs: the `seq` and `chain` of the last
/// line it covers.
pub fn checkpoint_message(seq: u64, chain: &ChainValue) -> String {
    format!("{DOMAIN}\n{seq}\n{}\n", hex::encode(chain))
}

/// The state of a chain: the last line's `seq` and `chain` (`0` and `c_0`
/// before the first line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    pub seq: u64,
    pub value: ChainValue,
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            seq: 0,
            value: genesis(),
        }
    }
}

impl Chain {
    /// Appends `event` (a serialized JSON object without `seq` or `chain`)
    /// to the chain and returns the line to write, without its newline.
    /// `None` when `event` is not a non-empty JSON object text.
    #[cfg(test)]
    pub fn seal(&mut self, event: &str) -> Option<String> {
        let mut line = Vec::new();
        self.seal_into(event, &mut line)
            .then(|| String::from_utf8(line).ok())
            .flatten()
    }

    /// [`Chain::seal`] appending the line to `out`: the writer seals every
    /// line into the one buffer it writes a batch from. `false` (and `out`
    /// unchanged) when `event` is not a non-empty JSON object text.
    pub fn seal_into(&mut self, event: &str, out: &mut Vec<u8>) -> bool {
        let Some(body) = event.strip_suffix('}') else {
            return false;
        };
        if !body.starts_with('{') || body.len() < 2 {
            return false;
        }
        let seq = self.seq + 1;
        let start = out.len();
        out.reserve(event.len() + 24 + CHAIN_SUFFIX_LEN);
        out.extend_from_slice(body.as_bytes());
        out.extend_from_slice(b",\"seq\":");
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{seq}");
        out.push(b'}');
        let value = next(&self.value, &out[start..]);
        out.pop();
        out.extend_from_slice(CHAIN_PREFIX.as_bytes());
        let mut digits = [0u8; 64];
        // 64 digits are exactly 32 bytes in hex.
        let _ = hex::encode_to_slice(value, &mut digits);
        out.extend_from_slice(&digits);
        out.extend_from_slice(b"\"}");
        self.seq = seq;
        self.value = value;
        true
    }
}

/// A chained line taken apart: `L_n` (the line without its `chain`
/// member) and the `chain` value it claims.
pub fn split(line: &str) -> Option<(String, ChainValue)> {
    let cut = line.len().checked_sub(CHAIN_SUFFIX_LEN)?;
    let (body, suffix) = (line.get(..cut)?, line.get(cut..)?);
    let digits = suffix.strip_prefix(CHAIN_PREFIX)?.strip_suffix("\"}")?;
    if !digits
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut value = [0u8; 32];
    hex::decode_to_slice(digits, &mut value).ok()?;
    Some((format!("{body}}}"), value))
}

/// The chain state a line ends: its `seq` and `chain`, when it is a chained
/// line (used to continue a file another process or run wrote).
pub fn state_of(line: &str) -> Option<Chain> {
    let (body, value) = split(line)?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let seq = v.get("seq")?.as_u64()?;
    Some(Chain { seq, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed with coreutils, independently of this code:
    //   c0=$(printf 'portcullis-seclog-v1' | sha256sum)
    //   (echo -n $c0 | xxd -r -p; printf '%s' "$L1") | sha256sum
    const C0: &str = "f39da4bd2ec853180335313bfdbdb3d9848176e5cd23d79302574462d766cf25";
    const C1: &str = "3e7af642196890d95eb85b5a0513dc76a1edae625371d450ad896c6cd832b98b";
    const C2: &str = "3a8d4ee2c6fd1f9fdc637f44aa0d46601518901f3222f9a3d7abff9f602f6a2a";

    #[test]
    fn chain_matches_a_hand_computed_vector() {
        assert_eq!(hex::encode(genesis()), C0);
        let mut chain = Chain::default();
        let first = chain.seal(r#"{"event":"log_opened"}"#).unwrap();
        assert_eq!(
            first,
            format!(r#"{{"event":"log_opened","seq":1,"chain":"{C1}"}}"#)
        );
        let second = chain
            .seal(r#"{"event":"auth_failure","reason":"bad \"key\""}"#)
            .unwrap();
        assert_eq!(
            second,
            format!(r#"{{"event":"auth_failure","reason":"bad \"key\"","seq":2,"chain":"{C2}"}}"#)
        );
        assert_eq!(chain.seq, 2);
        assert_eq!(hex::encode(chain.value), C2);
    }

    #[test]
    fn split_recovers_the_hashed_bytes() {
        let mut chain = Chain::default();
        let line = chain.seal(r#"{"event":"x","reason":"y"}"#).unwrap();
        let (body, value) = split(&line).unwrap();
        assert_eq!(body, r#"{"event":"x","reason":"y","seq":1}"#);
        assert_eq!(value, next(&genesis(), body.as_bytes()));
        assert_eq!(state_of(&line), Some(chain));
    }

    #[test]
    fn malformed_lines_are_not_chained_lines() {
        let mut chain = Chain::default();
        let line = chain.seal(r#"{"event":"x"}"#).unwrap();
        let upper = line.replace(
            &hex::encode(chain.value),
            &hex::encode(chain.value).to_uppercase(),
        );
        for bad in [
            "",
            "{}",
            r#"{"event":"x"}"#,
            &line[..line.len() - 1],
            &format!("{line} "),
            &upper,
            &line.replace(",\"chain\":", ",\"chainx\":"),
        ] {
            assert!(state_of(bad).is_none(), "{bad}");
        }
        for bad in ["", "{", "}", "{}", "[1]", "x}"] {
            assert!(Chain::default().seal(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn checkpoint_message_is_the_contract_text() {
        assert_eq!(
            checkpoint_message(7, &genesis()),
            format!("portcullis-seclog-v1\n7\n{C0}\n")
        );
    }
}
