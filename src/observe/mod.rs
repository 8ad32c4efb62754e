//! What the gateway records: access log, security events, metrics.
//!
//! Nothing on the request path writes to a file or stdout itself: lines go
//! through [`writer::LogWriter`], whose queue never blocks.

pub mod access;
pub mod metrics;
pub mod otel;
pub mod outcome;
pub mod security;
pub mod writer;

use crate::config::Log;
use metrics::Metrics;
use security::SecurityEvent;
use writer::LogWriter;

/// The process's log destinations and metrics; lives as long as the
/// process, across reloads.
pub struct Observer {
    pub access: Option<LogWriter>,
    pub security: LogWriter,
    pub metrics: Metrics,
}

impl Observer {
    pub fn new(log: &Log) -> prometheus::Result<Self> {
        Ok(Observer {
            access: LogWriter::for_target(&log.access_log),
            security: LogWriter::for_target(&log.security_log).unwrap_or_else(LogWriter::stdout),
            metrics: Metrics::new()?,
        })
    }

    /// The one way security events are recorded.
    pub fn security_event(&self, event: &SecurityEvent) {
        event.emit(&self.security);
    }
}

/// RFC 3339 timestamp with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
