//! What the gateway records: access log, security events, metrics.
//!
//! Nothing on the request path writes to a file or stdout itself: lines go
//! through [`writer::LogWriter`], whose queue never blocks.

pub mod access;
pub mod alerts;
pub mod metrics;
pub mod otel;
pub mod outcome;
pub mod recent;
pub mod seclog;
pub mod security;
pub mod series;
pub mod writer;

use std::time::Duration;

use crate::config::{self, Alerts, Log};
use alerts::Alerter;
use metrics::{Consumers, Metrics};
use security::SecurityEvent;
use writer::LogWriter;

/// How long shutdown waits for the logs to be written.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The process's log destinations, metrics and alerts; lives as long as
/// the process, across reloads.
pub struct Observer {
    pub access: Option<LogWriter>,
    pub security: LogWriter,
    pub metrics: Metrics,
    pub consumers: Consumers,
    /// Follows `[alerts]` across reloads.
    pub alerts: Alerter,
    /// The admin dashboard's recent security events and per-route charts.
    pub recent: recent::RecentEvents,
    pub charts: series::Charts,
}

impl Observer {
    pub fn new(log: &Log) -> prometheus::Result<Self> {
        let security = match &log.security_log {
            // Validation allows the chain only with a file.
            config::LogTarget::File(path) if log.security_log_chain => {
                let key = log.security_log_key.as_ref().map(|k| k.key.clone());
                LogWriter::chained(path.clone(), key)
            }
            target => LogWriter::for_target(target).unwrap_or_else(LogWriter::stdout),
        };
        let metrics = Metrics::new()?;
        Ok(Observer {
            access: LogWriter::for_target(&log.access_log),
            security,
            consumers: Consumers::new(&metrics, log.max_consumer_labels),
            alerts: Alerter::new(
                metrics.alerts_sent.clone(),
                metrics.alerts_failed.clone(),
                metrics.alerts_dropped.clone(),
            ),
            metrics,
            recent: recent::RecentEvents::new(recent::RECENT_EVENTS),
            charts: series::Charts::default(),
        })
    }

    /// The one way security events are recorded.
    pub fn security_event(&self, event: &SecurityEvent) {
        self.metrics
            .security_events
            .with_label_values(&[event.event])
            .inc();
        let store_up = match event.event {
            "rate_limit_store_unavailable" => Some(0),
            "rate_limit_store_recovered" => Some(1),
            _ => None,
        };
        if let Some(up) = store_up {
            self.metrics
                .rate_limit_store_up
                .with_label_values(&["redis"])
                .set(up);
        }
        self.alerts.security_event(event);
        if let Some(line) = event.to_line() {
            self.recent.push(event.event, &line);
            self.security.write_line(line);
        }
    }

    /// Takes the `[alerts]` of a (re)loaded configuration.
    pub fn configure_alerts(&self, alerts: Option<&Alerts>) {
        self.alerts.configure(alerts);
    }

    /// At shutdown: writes what the logs still queue, and the security
    /// log's final checkpoint.
    pub fn close(&self) {
        self.security.close(CLOSE_TIMEOUT);
        if let Some(access) = &self.access {
            access.close(CLOSE_TIMEOUT);
        }
    }
}

/// RFC 3339 timestamp with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
