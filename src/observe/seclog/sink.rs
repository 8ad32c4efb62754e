//! The writer side of the chained security log: one thread owns the file,
//! seals each line and writes signed checkpoints.
//!
//! Several processes can share the file: during an upgrade the old and the
//! new process both write until the old one exits. Every batch is written
//! under an exclusive `flock`, and when the file's length is not what this
//! process last left, the chain continues from the file's last line, so
//! the file holds one chain whoever wrote each line. A new process
//! appending to an existing file, a file renamed away (logrotate) and a
//! truncated file each start with a `log_opened` line naming the chain
//! value before it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};

use super::{checkpoint_message, Chain, ChainValue, CHECKPOINT_EVERY, CHECKPOINT_EVERY_LINES};
use crate::observe::security::SecurityEvent;
use crate::observe::writer::Msg;

/// Lines written under one lock at most.
const MAX_BATCH: usize = 4096;
/// The longest last line read back to continue a chain.
const MAX_TAIL: u64 = 4 << 20;

struct OpenFile {
    file: File,
    /// Device and inode: a different file at the path means rotation.
    id: (u64, u64),
    /// The file's length after this process's last write; `None` before
    /// the first write through this handle.
    end: Option<u64>,
}

pub(crate) struct ChainedSink {
    path: PathBuf,
    key: Option<Arc<SigningKey>>,
    dropped: Arc<AtomicU64>,
    file: Option<OpenFile>,
    chain: Chain,
    /// Whether this process has written a line (a rotated file's successor
    /// then names the chain it ended with).
    wrote: bool,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    buf: Vec<u8>,
    /// Set while writes fail, so a failing disk is reported once.
    failing: bool,
}

/// The file as a batch finds it once it holds the lock.
#[derive(Clone, Copy)]
struct Locked {
    /// Whether the flock is held (to be released after the batch).
    locked: bool,
    /// Whether the path named another file than the one this process had.
    rotated: bool,
    /// The file's length.
    len: u64,
}

/// The last line of a file, as far as continuing its chain goes.
enum Tail {
    Chained(Chain),
    /// Not a chained line; `newline` when the file does not end in one.
    Other {
        newline: bool,
    },
}

impl ChainedSink {
    pub(crate) fn new(
        path: PathBuf,
        key: Option<Arc<SigningKey>>,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        ChainedSink {
            path,
            key,
            dropped,
            file: None,
            chain: Chain::default(),
            wrote: false,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            buf: Vec::with_capacity(64 * 1024),
            failing: false,
        }
    }

    /// Drains the queue until every sender is gone.
    pub(crate) fn run(mut self, rx: Receiver<Msg>) {
        let mut lines = Vec::new();
        loop {
            let first = match self.checkpoint_due_in() {
                Some(wait) => match rx.recv_timeout(wait) {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => {
                        self.write(&mut lines, None);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        self.write(&mut lines, Some("shutdown"));
                        return;
                    }
                },
                None => match rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => return,
                },
            };
            let mut close = None;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Line(line) => {
                        lines.push(line);
                        if lines.len() < MAX_BATCH {
                            next = rx.try_recv().ok();
                        }
                    }
                    Msg::Close(ack) => close = Some(ack),
                }
            }
            self.write(&mut lines, close.as_ref().map(|_| "shutdown"));
            if let Some(ack) = close {
                let _ = ack.send(());
            }
        }
    }

    /// How long until lines without a checkpoint after them get one.
    fn checkpoint_due_in(&self) -> Option<std::time::Duration> {
        (self.key.is_some() && self.since_checkpoint > 0)
            .then(|| CHECKPOINT_EVERY.saturating_sub(self.last_checkpoint.elapsed()))
    }

    /// Writes `lines` (emptied) and, when asked for or due, a checkpoint.
    fn write(&mut self, lines: &mut Vec<String>, checkpoint: Option<&'static str>) {
        let count = lines.len() as u64;
        let result = self.write_file(lines, checkpoint);
        lines.clear();
        self.buf.clear();
        match result {
            Ok(()) => self.failing = false,
            Err(e) => {
                self.dropped.fetch_add(count, Ordering::Relaxed);
                // Reopened and re-read on the next batch: what reached the
                // file is the truth the chain continues from.
                self.file = None;
                if !self.failing {
                    tracing::error!("cannot write the security log: {e}");
                }
                self.failing = true;
            }
        }
    }

    fn write_file(&mut self, lines: &[String], checkpoint: Option<&'static str>) -> io::Result<()> {
        let locked = self.open_locked()?;
        let result = self.write_locked(locked, lines, checkpoint);
        if let (Some(open), true) = (&self.file, locked.locked) {
            let _ = open.file.unlock();
        }
        result
    }

    /// Locks the file at the path, first opening it when this process has
    /// none or the path now names another file. Unlocked only on
    /// filesystems without flock; the chain is then right as long as one
    /// process writes at a time.
    fn open_locked(&mut self) -> io::Result<Locked> {
        let mut rotated = false;
        if let Some(open) = &self.file {
            let locked = open.file.lock().is_ok();
            // The path's length under the lock is the file's, when the path
            // still names the file this process holds.
            match std::fs::metadata(&self.path) {
                Ok(m) if (m.dev(), m.ino()) == open.id => {
                    return Ok(Locked {
                        locked,
                        rotated,
                        len: m.len(),
                    })
                }
                _ => {
                    if locked {
                        let _ = open.file.unlock();
                    }
                    rotated = true;
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)?;
        let locked = file.lock().is_ok();
        let meta = file.metadata()?;
        self.file = Some(OpenFile {
            file,
            id: (meta.dev(), meta.ino()),
            end: None,
        });
        Ok(Locked {
            locked,
            rotated,
            len: meta.len(),
        })
    }

    fn write_locked(
        &mut self,
        at: Locked,
        lines: &[String],
        checkpoint: Option<&'static str>,
    ) -> io::Result<()> {
        let Some(open) = self.file.as_ref() else {
            return Ok(());
        };
        let (len, rotated) = (at.len, at.rotated);
        match open.end {
            Some(end) if end == len => {}
            Some(_) if len > 0 => {
                // Another process wrote since: continue its chain.
                let tail = tail(&open.file, len);
                self.continue_from(tail, None);
            }
            Some(_) => {
                let prev = self.chain.value;
                self.chain = Chain::default();
                self.push_opened(Some(prev), "the file was truncated");
            }
            None if len == 0 => {
                let prev = (self.wrote && rotated).then_some(self.chain.value);
                self.chain = Chain::default();
                let reason = if rotated {
                    "the previous file was rotated"
                } else {
                    "new file"
                };
                self.push_opened(prev, reason);
            }
            None => {
                let tail = tail(&open.file, len);
                self.continue_from(tail, Some("appending to the file"));
            }
        }
        self.push_batch(lines, checkpoint);
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(open) = self.file.as_mut() else {
            return Ok(());
        };
        open.file.write_all(&self.buf)?;
        // Under the lock nobody else appended: the file now ends where
        // this batch does.
        open.end = Some(if at.locked {
            len + self.buf.len() as u64
        } else {
            open.file.metadata()?.len()
        });
        self.wrote = true;
        Ok(())
    }

    /// Takes the chain over from a file's last line; `opened` writes a
    /// `log_opened` when it continues. A last line that is not chained
    /// starts a new chain, which `seclog verify` reports at that line.
    fn continue_from(&mut self, tail: Tail, opened: Option<&str>) {
        match tail {
            Tail::Chained(state) => {
                self.chain = state;
                if let Some(reason) = opened {
                    self.push_opened(Some(state.value), reason);
                }
            }
            Tail::Other { newline } => {
                tracing::warn!(
                    "the security log's last line is not a chained line; a new chain starts"
                );
                if newline {
                    self.buf.push(b'\n');
                }
                self.chain = Chain::default();
                self.push_opened(None, "the file's last line is not a chained line");
            }
        }
    }

    fn push_batch(&mut self, lines: &[String], checkpoint: Option<&'static str>) {
        for line in lines {
            self.push_counted(line);
        }
        let due = self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY;
        match checkpoint {
            Some(reason) => self.push_checkpoint(reason),
            None if due => self.push_checkpoint("interval"),
            None => {}
        }
    }

    fn push(&mut self, event: &str) {
        if self.chain.seal_into(event, &mut self.buf) {
            self.buf.push(b'\n');
        }
    }

    fn push_counted(&mut self, event: &str) {
        self.push(event);
        self.since_checkpoint += 1;
        if self.since_checkpoint >= CHECKPOINT_EVERY_LINES {
            self.push_checkpoint("lines");
        }
    }

    fn push_opened(&mut self, prev: Option<ChainValue>, reason: &str) {
        let event = SecurityEvent::new("log_opened", reason)
            .field(
                "prev_chain",
                prev.map_or(serde_json::Value::Null, |c| hex::encode(c).into()),
            )
            .field("pid", std::process::id())
            .field("version", env!("CARGO_PKG_VERSION"));
        if let Ok(line) = serde_json::to_string(&event) {
            self.push_counted(&line);
        }
    }

    /// Signs the chain as it stands: the `seq` and `chain` of the line
    /// before the checkpoint. Nothing without a key or new lines.
    fn push_checkpoint(&mut self, reason: &'static str) {
        let Some(key) = self.key.clone() else {
            return;
        };
        if self.since_checkpoint == 0 {
            return;
        }
        let message = checkpoint_message(self.chain.seq, &self.chain.value);
        let sig = STANDARD.encode(key.sign(message.as_bytes()).to_bytes());
        let event = SecurityEvent::new("checkpoint", reason)
            .field("signed_seq", self.chain.seq)
            .field("signed_chain", hex::encode(self.chain.value))
            .field("sig", sig);
        if let Ok(line) = serde_json::to_string(&event) {
            self.push(&line);
        }
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
    }
}

/// Reads the last line of a file `len` bytes long.
fn tail(file: &File, len: u64) -> Tail {
    let mut last = [0u8; 1];
    if file.read_exact_at(&mut last, len - 1).is_err() || last[0] != b'\n' {
        return Tail::Other { newline: true };
    }
    let end = len - 1;
    let mut window = 64 * 1024u64;
    loop {
        let start = end.saturating_sub(window);
        let mut buf = vec![0u8; (end - start) as usize];
        if file.read_exact_at(&mut buf, start).is_err() {
            return Tail::Other { newline: false };
        }
        let line = match memchr::memrchr(b'\n', &buf) {
            Some(i) => &buf[i + 1..],
            None if start == 0 => &buf[..],
            None if window >= MAX_TAIL => return Tail::Other { newline: false },
            None => {
                window *= 4;
                continue;
            }
        };
        return std::str::from_utf8(line)
            .ok()
            .and_then(super::state_of)
            .map_or(Tail::Other { newline: false }, Tail::Chained);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::seclog::verify::{verify_files, VerifyError};

    fn sink(path: &std::path::Path, key: Option<Arc<SigningKey>>) -> ChainedSink {
        ChainedSink::new(path.to_path_buf(), key, Arc::new(AtomicU64::new(0)))
    }

    fn event(n: usize) -> String {
        serde_json::to_string(&SecurityEvent::new("auth_failure", format!("n{n}"))).unwrap()
    }

    fn events(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn two_processes_writing_at_once_make_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut s = sink(&path, None);
                    for i in 0..200 {
                        s.write(&mut vec![event(w * 1000 + i), event(i)], None);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let done = verify_files(std::slice::from_ref(&path), None).unwrap();
        assert_eq!(done.lines, 802);
        let opened = events(&path)
            .iter()
            .filter(|e| e["event"] == "log_opened")
            .count();
        assert_eq!(opened, 2);
    }

    #[test]
    fn interval_and_shutdown_checkpoints_sign_the_line_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let key = SigningKey::from_bytes(&[9; 32]);
        let public = key.verifying_key();
        let mut s = sink(&path, Some(Arc::new(key)));
        s.write(&mut vec![event(1)], None);
        assert!(s.checkpoint_due_in().is_some());
        s.last_checkpoint -= CHECKPOINT_EVERY;
        assert_eq!(s.checkpoint_due_in(), Some(std::time::Duration::ZERO));
        s.write(&mut Vec::new(), None);
        // Nothing new: no checkpoint, nothing due.
        s.write(&mut Vec::new(), Some("shutdown"));
        assert!(s.checkpoint_due_in().is_none());
        s.write(&mut vec![event(2)], Some("shutdown"));
        let lines = events(&path);
        let kinds: Vec<(&str, &str)> = lines
            .iter()
            .map(|e| (e["event"].as_str().unwrap(), e["reason"].as_str().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("log_opened", "new file"),
                ("auth_failure", "n1"),
                ("checkpoint", "interval"),
                ("auth_failure", "n2"),
                ("checkpoint", "shutdown"),
            ]
        );
        assert_eq!(lines[2]["signed_seq"], 2);
        assert_eq!(lines[2]["signed_chain"], lines[1]["chain"]);
        let done = verify_files(std::slice::from_ref(&path), Some(&public)).unwrap();
        assert_eq!(
            (done.lines, done.checkpoints, done.unsigned_tail),
            (5, 2, 0)
        );
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        let err = verify_files(std::slice::from_ref(&path), Some(&other)).unwrap_err();
        assert!(
            err.to_string()
                .ends_with(":3: the checkpoint signature does not verify with the given key"),
            "{err}"
        );
    }

    #[test]
    fn a_last_line_that_is_not_chained_is_reported_not_continued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        std::fs::write(&path, "{\"event\":\"old\"}\n{\"half").unwrap();
        sink(&path, None).write(&mut vec![event(1)], None);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "{\"half");
        let opened: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(opened["event"], "log_opened");
        assert_eq!(opened["seq"], 1);
        assert_eq!(opened["prev_chain"], serde_json::Value::Null);
        match verify_files(std::slice::from_ref(&path), None) {
            Err(VerifyError::Bad { line: 1, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_truncated_file_starts_again_naming_the_chain_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let mut s = sink(&path, None);
        s.write(&mut vec![event(1)], None);
        let before = events(&path)[1]["chain"].clone();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        s.write(&mut vec![event(2)], None);
        let after = events(&path);
        assert_eq!(after[0]["event"], "log_opened");
        assert_eq!(after[0]["reason"], "the file was truncated");
        assert_eq!(after[0]["prev_chain"], before);
        assert_eq!(verify_files(&[path], None).unwrap().lines, 2);
    }
}
