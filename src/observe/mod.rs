//! What the gateway records: access log, security events.
//!
//! Nothing on the request path writes to a file or stdout itself: lines go
//! through [`writer::LogWriter`], whose queue never blocks.

pub mod access;
pub mod security;
pub mod writer;

use crate::config::Log;
use writer::LogWriter;

/// The process's log destinations.
pub struct Observer {
    pub access: Option<LogWriter>,
    pub security: LogWriter,
}

impl Observer {
    pub fn new(log: &Log) -> Self {
        Observer {
            access: LogWriter::for_target(&log.access_log),
            security: LogWriter::for_target(&log.security_log).unwrap_or_else(LogWriter::stdout),
        }
    }
}

/// RFC 3339 timestamp with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
