//! The access log line of CONTRACT §6.

use serde::Serialize;

/// One finished request, borrowed from the request's context.
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    pub ts: String,
    pub request_id: &'a str,
    pub client_ip: String,
    pub method: &'a str,
    /// The normalized path (what was routed), without the query string, so
    /// query-borne secrets never reach the log.
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub target: Option<String>,
    pub status: u16,
    pub bytes_sent: usize,
    /// Request body bytes read from the client (an upgraded connection's
    /// whole stream from the client).
    pub bytes_received: usize,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub auth_method: Option<&'a str>,
    pub subject: Option<&'a str>,
    /// The request's trace (32 hex digits) when `[tracing]` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
}

impl AccessRecord<'_> {
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
