//! Security events of CONTRACT §6: the one place every event goes through.

use std::borrow::Cow;
use std::net::IpAddr;

use serde::Serialize;

/// A security event; the request fields are filled when the event belongs
/// to a request.
#[derive(Debug, Clone, Serialize)]
pub struct SecurityEvent<'a> {
    pub ts: String,
    pub event: &'static str,
    pub request_id: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub route: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub reason: Cow<'a, str>,
    /// Event-specific fields (`provider`, `upstream`, `target`, ...).
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl<'a> SecurityEvent<'a> {
    pub fn new(event: &'static str, reason: impl Into<Cow<'a, str>>) -> Self {
        SecurityEvent {
            ts: super::now_rfc3339(),
            event,
            request_id: None,
            client_ip: None,
            route: None,
            subject: None,
            reason: reason.into(),
            fields: serde_json::Map::new(),
        }
    }

    pub fn field(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        self.fields.insert(name.to_string(), value.into());
        self
    }

    /// The event's JSON line, as the security log writes it.
    pub fn to_line(&self) -> Option<String> {
        serde_json::to_string(self).ok()
    }
}
