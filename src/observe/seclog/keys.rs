//! Checkpoint keys: Ed25519, the private key as PKCS#8 PEM, the public key
//! as SPKI PEM (what `openssl pkey` reads and writes). The gateway reads
//! its private key with the configuration (`config::observe`).

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{
    spki::der::pem::LineEnding, DecodePublicKey, EncodePrivateKey, EncodePublicKey,
};
use ed25519_dalek::{SigningKey, VerifyingKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{0}` is not an Ed25519 public key in PEM (`-----BEGIN PUBLIC KEY-----`)")]
    NotPublic(PathBuf),
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the key")]
    Encode,
}

pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    VerifyingKey::from_public_key_pem(text.trim())
        .map_err(|_| KeyError::NotPublic(path.to_path_buf()))
}

/// The two files `seclog keygen --out PREFIX` writes.
pub fn key_paths(prefix: &Path) -> (PathBuf, PathBuf) {
    let with = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    (with(".key"), with(".pub"))
}

/// Writes a new key pair: `PREFIX.key` (mode 0600) and `PREFIX.pub`.
/// Existing files are never overwritten, so a key in use is not lost.
pub fn generate(prefix: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
    let mut secret = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut secret);
    let key = SigningKey::from_bytes(&secret);
    secret.fill(0);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| KeyError::Encode)?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|_| KeyError::Encode)?;
    let (key_path, pub_path) = key_paths(prefix);
    write_new(&key_path, private.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&pub_path, public.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    Ok((key_path, pub_path))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let write = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(write)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(write)
}
