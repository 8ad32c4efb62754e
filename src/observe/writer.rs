//! A log sink that never makes the request path wait.
//!
//! Lines go into a bounded queue drained by one thread that owns the file or
//! stdout. When the queue is full the line is dropped and counted: losing a
//! log line under overload is better than stalling every request behind a
//! slow disk or a blocked pipe.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, OnceLock};

use crate::config::LogTarget;

const QUEUE_LINES: usize = 65_536;

#[derive(Debug, Clone)]
enum Destination {
    Stdout,
    File(PathBuf),
}

pub struct LogWriter {
    destination: Destination,
    /// Started on first use rather than at construction: Pingora forks when
    /// it daemonizes, and a thread started before the fork would not exist
    /// in the child.
    tx: OnceLock<SyncSender<String>>,
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

    fn new(destination: Destination) -> Self {
        LogWriter {
            destination,
            tx: OnceLock::new(),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues one line (without its newline). Never blocks.
    pub fn write_line(&self, line: String) {
        let tx = self.tx.get_or_init(|| self.spawn());
        if tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines lost because the queue was full or the writer had failed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn spawn(&self) -> SyncSender<String> {
        let (tx, rx) = sync_channel(QUEUE_LINES);
        let destination = self.destination.clone();
        let spawned = std::thread::Builder::new()
            .name("portcullis-log".into())
            .spawn(move || drain(destination, rx));
        if let Err(e) = spawned {
            eprintln!("portcullis: cannot start log writer thread: {e}");
        }
        tx
    }
}

fn drain(destination: Destination, rx: Receiver<String>) {
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
    while let Ok(line) = rx.recv() {
        let mut next = Some(line);
        // Write everything already queued, then flush once.
        while let Some(line) = next {
            if out
                .write_all(line.as_bytes())
                .and_then(|_| out.write_all(b"\n"))
                .is_err()
            {
                return;
            }
            next = rx.try_recv().ok();
        }
        if out.flush().is_err() {
            return;
        }
    }
}
