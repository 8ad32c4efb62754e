//! The chained security log (CONTRACT §12) through the real binary: the
//! chain checked by an independent implementation of the formula, then
//! tampered with (changed byte, deleted line, swapped lines, cut line,
//! forged checkpoint) and `seclog verify` must say where; signed
//! checkpoints with `seclog keygen` keys; the chain across a restart, an
//! upgrade and a rotation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::gateway::{config_header, free_addr, run_cli, toml_str, Gateway};
use crate::common::{request, wait_until};

const BAD_KEY: &str = "pc_nope_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// A route behind an API key provider: every request with `BAD_KEY`
/// writes one `auth_failure` line.
const BODY: &str = r#"
[auth.partners]
kind = "api_key"
keys_file = "{dir}/keys.toml"

[[routes]]
name = "partner"
path_prefix = "/p"
auth = ["partners"]
respond = { status = 200, body = "ok" }
"#;

const KEYS: &str = "[[keys]]\nid = \"k1\"\nconsumer = \"c1\"\nhash = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n";

/// Starts a gateway whose security log is chained (`log_extra` goes into
/// `[log]`), writing to `log` when given.
fn start(log_extra: &str, log: Option<&Path>) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keys.toml"), KEYS).unwrap();
    let addr = free_addr();
    let mut header = config_header(dir.path(), addr).replace(
        "[log]\n",
        &format!("[log]\nsecurity_log_chain = true\n{log_extra}\n"),
    );
    if let Some(log) = log {
        let default = toml_str(&dir.path().join("security.log").to_string_lossy());
        header = header.replace(
            &format!("security_log = {default}"),
            &format!("security_log = {}", toml_str(&log.to_string_lossy())),
        );
    }
    let body = BODY.replace("{dir}", &dir.path().to_string_lossy());
    Gateway::start_full(format!("{header}{body}"), addr, dir)
}

fn fail_auth(addr: SocketAddr, n: usize) {
    for _ in 0..n {
        let r = request(addr, "GET", "/p/x", &[("x-api-key", BAD_KEY)], None);
        assert_eq!(r.status, 401);
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until `path` holds at least `n` complete lines.
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(path).is_ok_and(|t| t.ends_with('\n') && t.lines().count() >= n)
        }),
        "{} has fewer than {n} lines: {:?}",
        path.display(),
        lines(path)
    );
    lines(path)
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// The formula of CONTRACT §12, written again here so the gateway's own
/// code does not check itself.
fn independent_check(lines: &[String]) {
    let mut chain: [u8; 32] = Sha256::digest(b"portcullis-seclog-v1").into();
    for (i, line) in lines.iter().enumerate() {
        let marker = ",\"chain\":\"";
        let at = line.rfind(marker).unwrap();
        let claimed = &line[at + marker.len()..line.len() - 2];
        assert!(line.ends_with("\"}"), "{line}");
        let l_n = format!("{}}}", &line[..at]);
        let mut h = Sha256::new();
        h.update(chain);
        h.update(l_n.as_bytes());
        chain = h.finalize().into();
        assert_eq!(hex::encode(chain), claimed, "line {}", i + 1);
        // `chain` is the last member: nothing after its 64 digits.
        assert_eq!(line.len() - at, marker.len() + 64 + 2, "{line}");
        assert_eq!(json(line)["seq"], (i + 1) as u64, "{line}");
    }
}

fn verify(files: &[&Path], pubkey: Option<&Path>) -> (i32, String) {
    let mut args = vec!["seclog".to_string(), "verify".to_string()];
    args.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
    if let Some(k) = pubkey {
        args.push("--pubkey".into());
        args.push(k.to_string_lossy().into_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_cli(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn write(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn chained_lines_verify_and_every_tampering_is_located() {
    let gw = start("", None);
    fail_auth(gw.addr, 5);
    let log = wait_lines(&gw.security_log_path, 6);
    independent_check(&log);
    let first = json(&log[0]);
    assert_eq!(first["event"], "log_opened");
    assert_eq!(first["prev_chain"], Value::Null);
    assert_eq!(json(&log[1])["event"], "auth_failure");
    let (code, out) = verify(&[&gw.security_log_path], None);
    assert_eq!((code, out.lines().next()), (0, Some("ok 6 lines")), "{out}");

    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let name = |f: &Path| f.to_string_lossy().into_owned();

    // One changed byte.
    let mut changed = log.clone();
    changed[2] = changed[2].replace("\"auth_failure\"", "\"auth_failurf\"");
    let f = write(d, "changed.log", &changed);
    let (code, out) = verify(&[&f], None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(&format!("{}:3: chain mismatch", name(&f))),
        "{out}"
    );

    // A deleted line.
    let mut deleted = log.clone();
    deleted.remove(3);
    let f = write(d, "deleted.log", &deleted);
    let (code, out) = verify(&[&f], None);
    assert_eq!(code, 1);
    assert!(
        out.starts_with(&format!("{}:4: seq 5 where 4", name(&f))),
        "{out}"
    );

    // Two lines swapped.
    let mut swapped = log.clone();
    swapped.swap(2, 3);
    let f = write(d, "swapped.log", &swapped);
    let (code, out) = verify(&[&f], None);
    assert_eq!(code, 1);
    assert!(
        out.starts_with(&format!("{}:3: seq 4 where 3", name(&f))),
        "{out}"
    );

    // The last line cut short, with and without its newline.
    let mut cut = log.clone();
    let last = cut.len() - 1;
    let keep = cut[last].len() - 10;
    cut[last].truncate(keep);
    let f = write(d, "cut.log", &cut);
    let (code, out) = verify(&[&f], None);
    assert_eq!(code, 1);
    assert!(
        out.starts_with(&format!("{}:6: not a chained line", name(&f))),
        "{out}"
    );
    let text = std::fs::read_to_string(&gw.security_log_path).unwrap();
    let f = d.join("nonewline.log");
    std::fs::write(&f, &text[..text.len() - 3]).unwrap();
    let (code, out) = verify(&[&f], None);
    assert_eq!(code, 1);
    assert!(
        out.starts_with(&format!("{}:6: the line has no newline", name(&f))),
        "{out}"
    );

    // The chain recomputed after a change still fails at the changed line
    // only if a checkpoint covers it; without a key, a line added in front
    // is caught by `log_opened`.
    let mut front = log.clone();
    front.insert(0, log[1].clone());
    let f = write(d, "front.log", &front);
    let (code, out) = verify(&[&f], None);
    assert_eq!(code, 1);
    assert!(out.starts_with(&format!("{}:1:", name(&f))), "{out}");

    // Usage errors.
    assert_eq!(verify(&[&d.join("missing.log")], None).0, 2);
    assert_eq!(run_cli(&["seclog", "verify"]).status.code(), Some(2));
    let not_a_key = write(d, "not-a-key.pub", &["hello".to_string()]);
    assert_eq!(verify(&[&gw.security_log_path], Some(&not_a_key)).0, 2);
}

#[test]
fn checkpoints_are_signed_and_checked_with_the_public_key() {
    let keys = tempfile::tempdir().unwrap();
    let prefix = keys.path().join("seclog");
    let out = run_cli(&["seclog", "keygen", "--out", &prefix.to_string_lossy()]);
    assert!(out.status.success(), "{out:?}");
    let (private, public) = (
        keys.path().join("seclog.key"),
        keys.path().join("seclog.pub"),
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&private).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(std::fs::read_to_string(&public)
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    // An existing key is never overwritten.
    let again = run_cli(&["seclog", "keygen", "--out", &prefix.to_string_lossy()]);
    assert_eq!(again.status.code(), Some(2));
    let other = keys.path().join("other");
    assert!(
        run_cli(&["seclog", "keygen", "--out", &other.to_string_lossy()])
            .status
            .success()
    );

    let mut gw = start(
        &format!(
            "security_log_key_file = {}",
            toml_str(&private.to_string_lossy())
        ),
        None,
    );
    // log_opened + 999 failures are 1,000 lines: the checkpoint is line 1,001.
    fail_auth(gw.addr, 1_000);
    let log = wait_lines(&gw.security_log_path, 1_002);
    let checkpoint = json(&log[1_000]);
    assert_eq!(checkpoint["event"], "checkpoint", "{}", log[1_000]);
    assert_eq!(checkpoint["signed_seq"], 1_000);
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(20)).is_some());
    let log = lines(&gw.security_log_path);
    let last = json(log.last().unwrap());
    assert_eq!(
        (last["event"].as_str(), last["reason"].as_str()),
        (Some("checkpoint"), Some("shutdown"))
    );
    independent_check(&log);
    assert!(!log.iter().any(|l| l.contains("PRIVATE")));

    let path = gw.security_log_path.clone();
    let (code, out) = verify(&[&path], Some(&public));
    assert_eq!(
        (code, out.lines().next()),
        (0, Some(format!("ok {} lines", log.len()).as_str())),
        "{out}"
    );
    let (code, out) = verify(&[&path], Some(&keys.path().join("other.pub")));
    assert_eq!(code, 1);
    assert!(
        out.contains(":1001: the checkpoint signature does not verify"),
        "{out}"
    );

    // A forged checkpoint: right fields, a signature by another key, and
    // the chain recomputed so that only the signature can tell.
    let tmp = tempfile::tempdir().unwrap();
    let mut forged = log[..1_001].to_vec();
    let sig = checkpoint["sig"].as_str().unwrap();
    let mut bytes = base64_decode(sig);
    bytes[0] ^= 1;
    forged[1_000] = forged[1_000].replace(sig, &base64_encode(&bytes));
    let forged = rechain(&forged);
    let f = write(tmp.path(), "forged.log", &forged);
    assert_eq!(verify(&[&f], None).0, 0);
    let (code, out) = verify(&[&f], Some(&public));
    assert_eq!(code, 1);
    assert!(
        out.starts_with(&format!("{}:1001: the checkpoint signature", f.display())),
        "{out}"
    );

    // A rewritten line before a checkpoint, chain recomputed: the signature
    // no longer matches.
    let mut rewritten = log.clone();
    rewritten[10] = rewritten[10].replace("\"auth_failure\"", "\"authz_denied\"");
    let rewritten = rechain(&rewritten);
    let f = write(tmp.path(), "rewritten.log", &rewritten);
    let (code, out) = verify(&[&f], Some(&public));
    assert_eq!(code, 1);
    assert!(
        out.contains(":1001: the checkpoint does not name the line before it"),
        "{out}"
    );
}

/// Recomputes every `chain` value, as an attacker without the key can.
fn rechain(lines: &[String]) -> Vec<String> {
    let mut chain: [u8; 32] = Sha256::digest(b"portcullis-seclog-v1").into();
    lines
        .iter()
        .map(|line| {
            let at = line.rfind(",\"chain\":\"").unwrap();
            let body = format!("{}}}", &line[..at]);
            let mut h = Sha256::new();
            h.update(chain);
            h.update(body.as_bytes());
            chain = h.finalize().into();
            format!("{},\"chain\":\"{}\"}}", &line[..at], hex::encode(chain))
        })
        .collect()
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn the_chain_continues_across_restart_and_upgrade() {
    let shared = tempfile::tempdir().unwrap();
    let log = shared.path().join("security.log");
    let gw = start("", Some(&log));
    fail_auth(gw.addr, 2);
    wait_lines(&log, 3);
    drop(gw);

    let mut gw = start("", Some(&log));
    fail_auth(gw.addr, 2);
    let after_restart = wait_lines(&log, 6);
    let reopened = json(&after_restart[3]);
    assert_eq!(reopened["event"], "log_opened");
    assert_eq!(reopened["seq"], 4);
    assert_eq!(reopened["prev_chain"], json(&after_restart[2])["chain"]);

    // During an upgrade both processes write to the file.
    gw.upgrade();
    fail_auth(gw.addr, 2);
    let all = wait_lines(&log, 9);
    independent_check(&all);
    let opened = all
        .iter()
        .filter(|l| json(l)["event"] == "log_opened")
        .count();
    assert_eq!(opened, 3, "{all:?}");
    let (code, out) = verify(&[&log], None);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_rotated_file_starts_with_the_last_chain_of_the_one_before() {
    let gw = start("", None);
    fail_auth(gw.addr, 2);
    let old = wait_lines(&gw.security_log_path, 3);
    let rotated = gw.dir.path().join("security.log.1");
    std::fs::rename(&gw.security_log_path, &rotated).unwrap();
    fail_auth(gw.addr, 2);
    let new = wait_lines(&gw.security_log_path, 3);
    independent_check(&new);
    let opened = json(&new[0]);
    assert_eq!(opened["event"], "log_opened");
    assert_eq!(opened["prev_chain"], json(&old[2])["chain"]);
    assert_eq!(lines(&rotated), old);
    let (code, out) = verify(&[&rotated, &gw.security_log_path], None);
    assert_eq!((code, out.lines().next()), (0, Some("ok 6 lines")), "{out}");
    // A file in between is missing: the link does not hold.
    let tmp = tempfile::tempdir().unwrap();
    let unrelated = start("", Some(&tmp.path().join("other.log")));
    fail_auth(unrelated.addr, 1);
    let other = wait_lines(&tmp.path().join("other.log"), 2);
    let other = write(tmp.path(), "copy.log", &other);
    let (code, out) = verify(&[&other, &gw.security_log_path], None);
    assert_eq!(code, 1);
    assert!(
        out.contains("security.log:1: `log_opened` does not name the previous file"),
        "{out}"
    );
}
