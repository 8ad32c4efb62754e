//! `portcullis apikey generate`: a new key, shown once, and the keys-file
//! entry that stores only its hash.

use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

/// Base62 characters of secret: ~238 bits.
const SECRET_CHARS: usize = 40;
const ID_CHARS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("--consumer must not be empty")]
    Consumer,
    #[error("--expires must be an RFC 3339 time such as 2027-01-01T00:00:00Z")]
    Expires,
    #[error("scopes and roles may not contain quotes, backslashes or control characters")]
    Value,
}

/// The key on the first line, a blank line, then the TOML block.
pub fn generate(
    consumer: &str,
    scopes: &[String],
    roles: &[String],
    expires: Option<&str>,
) -> Result<String, GenerateError> {
    if consumer.trim().is_empty() {
        return Err(GenerateError::Consumer);
    }
    if let Some(at) = expires {
        humantime::parse_rfc3339_weak(at).map_err(|_| GenerateError::Expires)?;
    }
    let bad = |v: &str| v.chars().any(|c| c == '"' || c == '\\' || c.is_control());
    if bad(consumer) || scopes.iter().chain(roles).any(|v| bad(v)) {
        return Err(GenerateError::Value);
    }
    // rand's thread RNG is a CSPRNG seeded from the OS.
    let mut rng = rand::rng();
    let id = Alphanumeric.sample_string(&mut rng, ID_CHARS);
    let secret = Alphanumeric.sample_string(&mut rng, SECRET_CHARS);
    let key = format!("pc_{id}_{secret}");
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    let list = |items: &[String]| {
        items
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!(
        "{key}\n\n[[keys]]\nid = \"{id}\"\nconsumer = \"{consumer}\"\nhash = \"sha256:{hash}\"\nscopes = [{}]\nroles = [{}]\n",
        list(scopes),
        list(roles)
    );
    if let Some(at) = expires {
        out.push_str(&format!("expires_at = \"{at}\"\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_once_then_hash_only_block() {
        let out = generate(
            "acme",
            &["orders:read".into()],
            &["partner".into()],
            Some("2027-01-01T00:00:00Z"),
        )
        .unwrap();
        let mut lines = out.lines();
        let key = lines.next().unwrap();
        assert_eq!(lines.next(), Some(""));
        let block: String = lines.collect::<Vec<_>>().join("\n");
        assert!(key.starts_with("pc_"));
        let secret = key.rsplit('_').next().unwrap();
        assert!(secret.len() >= 32 && secret.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(!block.contains(secret), "the block must not hold the key");
        let id = key.split('_').nth(1).unwrap();
        assert!(block.contains(&format!("id = \"{id}\"")));
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        assert!(block.contains(&format!("hash = \"sha256:{hash}\"")));
        assert!(block.contains("scopes = [\"orders:read\"]"));
        assert!(block.contains("expires_at = \"2027-01-01T00:00:00Z\""));
    }

    #[test]
    fn refuses_bad_input() {
        assert!(generate("", &[], &[], None).is_err());
        assert!(generate("a", &[], &[], Some("tomorrow")).is_err());
        assert!(generate("a\"b", &[], &[], None).is_err());
    }
}
