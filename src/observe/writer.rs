//! A log sink that never makes the request path wait.
//!
//! Lines go into a bounded queue drained by one thread that owns the file or
//! stdout. When the queue is full the line is dropped and counted: losing a
//! log line under overload is better than stalling every request behind a
//! slow disk or a blocked pipe.
//!
//! A chained security log (`[log] security_log_chain`) is drained by
//! [`crate::observe::seclog::sink`], which seals each line in queue order.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;

use super::seclog::sink::ChainedSink;
use crate::config::LogTarget;

const QUEUE_LINES: usize = 65_536;

#[derive(Debug, Clone)]
enum Destination {
    Stdout,
    File(PathBuf),
}

/// What the writer thread receives.
pub(crate) enum Msg {
    Line(String),
    /// Write what is queued (and the shutdown checkpoint), then answer.
    Close(SyncSender<()>),
}

/// How a chained log signs its checkpoints.
#[derive(Clone)]
struct Chained {
    key: Option<Arc<SigningKey>>,
}

pub struct LogWriter {
    destination: Destination,
    chained: Option<Chained>,
    /// Started on first use rather than at construction: Pingora forks when
    /// it daemonizes, and a thread started before the fork would not exist
    /// in the child.
    tx: OnceLock<SyncSender<Msg>>,
    dropped: Arc<AtomicU64>,
}

impl LogWriter {
    /// `None` when the target is `off`.
    pub fn for_target(target: &LogTarget) -> Option<Self> {
        match target {
            LogTarget::Off => None,
            LogTarget::Stdout => Some(Self::stdout()),
            LogTarget::File(p) => Some(Self::new(Destination::File(p.clone()))),
        }
    }

    pub fn stdout() -> Self {
        Self::new(Destination::Stdout)
    }

    /// The chained security log of CONTRACT §12 in `path`, signed with
    /// `key` when there is one.
    pub fn chained(path: PathBuf, key: Option<Arc<SigningKey>>) -> Self {
        let mut writer = Self::new(Destination::File(path));
        writer.chained = Some(Chained { key });
        writer
    }

    fn new(destination: Destination) -> Self {
        LogWriter {
            destination,
            chained: None,
            tx: OnceLock::new(),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues one line (without its newline). Never blocks.
    pub fn write_line(&self, line: String) {
        let tx = self.tx.get_or_init(|| self.spawn());
        if tx.try_send(Msg::Line(line)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes what is queued, and a chained log's shutdown checkpoint;
    /// waits at most `timeout` for the writer.
    pub fn close(&self, timeout: Duration) {
        let Some(tx) = self.tx.get() else {
            return;
        };
        let deadline = Instant::now() + timeout;
        let (ack, done) = sync_channel(1);
        let mut msg = Msg::Close(ack);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    msg = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }

    /// Lines lost because the queue was full or the writer had failed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn spawn(&self) -> SyncSender<Msg> {
        let (tx, rx) = sync_channel(QUEUE_LINES);
        let destination = self.destination.clone();
        let chained = self.chained.clone();
        let dropped = self.dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("portcullis-log".into())
            .spawn(move || match (chained, destination) {
                (Some(c), Destination::File(path)) => {
                    ChainedSink::new(path, c.key, dropped).run(rx)
                }
                (_, destination) => drain(destination, rx),
            });
        if let Err(e) = spawned {
            eprintln!("portcullis: cannot start log writer thread: {e}");
        }
        tx
    }
}

fn drain(destination: Destination, rx: Receiver<Msg>) {
    let sink: Box<dyn Write> = match &destination {
        Destination::Stdout => Box::new(std::io::stdout()),
        Destination::File(path) => match OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("portcullis: cannot open log file {}: {e}", path.display());
                return;
            }
        },
    };
    let mut out = BufWriter::with_capacity(64 * 1024, sink);
    while let Ok(msg) = rx.recv() {
        let mut next = Some(msg);
        let mut close = None;
        // Write everything already queued, then flush once.
        while let Some(msg) = next {
            match msg {
                Msg::Line(line) => {
                    if out
                        .write_all(line.as_bytes())
                        .and_then(|_| out.write_all(b"\n"))
                        .is_err()
                    {
                        return;
                    }
                }
                Msg::Close(ack) => close = Some(ack),
            }
            next = rx.try_recv().ok();
        }
        if out.flush().is_err() {
            return;
        }
        if let Some(ack) = close {
            let _ = ack.send(());
        }
    }
}
