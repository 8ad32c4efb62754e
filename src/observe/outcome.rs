//! A finished request as the logs and metrics see it: the outcome events
//! the pipeline collected, and the one function that records them.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::access::AccessRecord;
use super::metrics::{method_label, status_label, UNMATCHED};
use super::security::SecurityEvent;
use super::Observer;

/// Something a stage decided that the security log or the metrics record.
/// Collected in the order it happened, written once the request is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A provider refused the credential (`reason` as in CONTRACT §6); a
    /// missing credential is counted but is not a security event.
    AuthFailure {
        provider: Arc<str>,
        reason: &'static str,
        /// Known when the credential itself was valid: a revoked token.
        subject: Option<Arc<str>>,
    },
    /// An authorization rule (or the network rules) refused the request.
    AuthzDenied { rule: &'static str },
    /// This request's failed credential locked its client out.
    LockedOut,
    /// The route's rate limit refused the request.
    RateLimited,
    /// A refusal that points at a hostile or broken client.
    Rejected { reason: Cow<'static, str> },
    /// The WAF's decision on a `waf` route: the CRS rules that matched and
    /// the anomaly score, never what they matched.
    Waf {
        action: WafAction,
        reason: WafReason,
        rules: Vec<u32>,
        score: Option<u32>,
    },
}

/// What the WAF did with a request (the metric's `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WafAction {
    Pass,
    Detect,
    Block,
}

impl WafAction {
    pub fn as_str(self) -> &'static str {
        match self {
            WafAction::Pass => "pass",
            WafAction::Detect => "detect",
            WafAction::Block => "block",
        }
    }
}

/// Why the WAF acted (the security event's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WafReason {
    /// The anomaly score reached the threshold.
    AnomalyThreshold,
    /// The inspection did not end within `[waf] timeout_ms`.
    Timeout,
}

impl WafReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WafReason::AnomalyThreshold => "anomaly_threshold",
            WafReason::Timeout => "timeout",
        }
    }
}

/// One finished request, borrowed from the request's state.
pub struct Finished<'a> {
    pub request_id: &'a str,
    pub client_ip: Option<IpAddr>,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub target: Option<SocketAddr>,
    pub status: u16,
    pub bytes_sent: usize,
    pub bytes_received: usize,
    pub elapsed: Duration,
    pub upstream_elapsed: Option<Duration>,
    pub auth_method: Option<&'a str>,
    pub subject: Option<&'a str>,
    /// The identity's consumer, else its subject; none without identity.
    pub consumer: Option<&'a str>,
    pub events: &'a [Event],
    /// A gRPC call's `grpc-status`.
    pub grpc_status: Option<&'static str>,
    /// On a caching route, the `x-cache-status` the response carried.
    pub cache_status: Option<&'static str>,
    pub trace_id: Option<&'a str>,
}

impl Observer {
    /// Security events, metrics and the access line of one request.
    pub fn request_finished(&self, done: &Finished<'_>) {
        let route_label = done.route.unwrap_or(UNMATCHED);
        for event in done.events {
            self.outcome_event(event, done, route_label);
        }
        let metrics = &self.metrics;
        metrics
            .requests
            .with_label_values(&[
                route_label,
                method_label(done.method),
                status_label(done.status),
            ])
            .inc();
        if let Some(consumer) = done.consumer {
            self.consumers.record(consumer, done.status);
        }
        if let Some(result) = done.cache_status {
            metrics
                .cache_requests
                .with_label_values(&[route_label, result])
                .inc();
        }
        if let Some(grpc_status) = done.grpc_status {
            metrics
                .grpc_requests
                .with_label_values(&[route_label, grpc_status])
                .inc();
        }
        metrics
            .request_duration
            .with_label_values(&[route_label])
            .observe(done.elapsed.as_secs_f64());
        if let Some(route) = done.route {
            self.charts.record(route, done.status, done.elapsed);
        }
        if let (Some(upstream), Some(up)) = (done.upstream, done.upstream_elapsed) {
            metrics
                .upstream_duration
                .with_label_values(&[upstream])
                .observe(up.as_secs_f64());
        }
        let Some(access) = &self.access else {
            return;
        };
        let record = AccessRecord {
            ts: super::now_rfc3339(),
            request_id: done.request_id,
            client_ip: done.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            method: done.method.as_str(),
            path: done.path,
            route: done.route,
            upstream: done.upstream,
            target: done.target.map(|t| t.to_string()),
            status: done.status,
            bytes_sent: done.bytes_sent,
            bytes_received: done.bytes_received,
            duration_ms: ms(done.elapsed),
            upstream_ms: done.upstream_elapsed.map(ms),
            auth_method: done.auth_method,
            subject: done.subject,
            trace_id: done.trace_id,
        };
        access.write_line(record.to_line());
    }

    fn outcome_event(&self, event: &Event, done: &Finished<'_>, route_label: &str) {
        let metrics = &self.metrics;
        let mut provider = None;
        let (name, reason, subject) = match event {
            Event::AuthFailure {
                provider: p,
                reason,
                subject,
            } => {
                metrics
                    .auth_failures
                    .with_label_values(&[&**p, reason])
                    .inc();
                if *reason == "missing" {
                    return;
                }
                if let Some(kind) = replay_kind(reason) {
                    metrics
                        .tokens_replayed
                        .with_label_values(&[&**p, kind])
                        .inc();
                }
                provider = Some(&**p);
                (
                    failure_event(reason),
                    Cow::Borrowed(*reason),
                    subject.as_deref(),
                )
            }
            Event::AuthzDenied { rule } => {
                metrics.authz_denied.with_label_values(&[route_label]).inc();
                ("authz_denied", Cow::Borrowed(*rule), done.subject)
            }
            Event::LockedOut => (
                "brute_force_lockout",
                Cow::Borrowed("failed_auth_threshold"),
                None,
            ),
            Event::RateLimited => {
                metrics.rate_limited.with_label_values(&[route_label]).inc();
                ("rate_limited", Cow::Borrowed("rate_limit"), done.subject)
            }
            Event::Rejected { reason } => ("request_rejected", reason.clone(), None),
            Event::Waf {
                action,
                reason,
                rules,
                score,
            } => {
                metrics
                    .waf_decisions
                    .with_label_values(&[route_label, action.as_str()])
                    .inc();
                let name = match action {
                    WafAction::Pass => return,
                    WafAction::Detect => "waf_detected",
                    WafAction::Block => "waf_blocked",
                };
                let mut e = SecurityEvent::new(name, reason.as_str())
                    .field("rule_ids", rules.clone())
                    .field("anomaly_score", *score);
                e.request_id = Some(done.request_id);
                e.client_ip = done.client_ip;
                e.route = done.route;
                e.subject = done.subject;
                self.security_event(&e);
                return;
            }
        };
        let mut e = SecurityEvent::new(name, reason);
        if let Some(p) = provider {
            e = e.field("provider", p);
        }
        e.request_id = Some(done.request_id);
        e.client_ip = done.client_ip;
        e.route = done.route;
        e.subject = subject;
        self.security_event(&e);
    }
}

/// The security event of a refused credential: token revocation and
/// replay have their own (CONTRACT §13), everything else is
/// `auth_failure`.
fn failure_event(reason: &str) -> &'static str {
    match reason {
        "revoked" => "token_revoked_used",
        "replayed" | "dpop_proof_replayed" => "token_replayed",
        _ => "auth_failure",
    }
}

/// The `kind` of `portcullis_tokens_replayed_total` for a replay's
/// failure reason.
fn replay_kind(reason: &str) -> Option<&'static str> {
    match reason {
        "replayed" => Some("token"),
        "dpop_proof_replayed" => Some("dpop_proof"),
        _ => None,
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}
