//! Prometheus metrics of CONTRACT §7.
//!
//! Label values are always bounded: route and upstream names come from the
//! configuration, methods outside the standard set collapse to `OTHER`, and
//! requests that matched no route are counted under `unmatched` — a raw
//! path never becomes a label, so clients cannot grow the series count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label for requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub auth_failures: IntCounterVec,
    /// Refused replays by provider and kind (`dpop_proof`, `token`).
    pub tokens_replayed: IntCounterVec,
    pub authz_denied: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub target_healthy: IntGaugeVec,
    /// 1 while outlier detection keeps a target out.
    pub target_ejected: IntGaugeVec,
    pub jwks_refresh: IntCounterVec,
    pub config_reloads: IntCounterVec,
    /// gRPC calls by route and `grpc-status`.
    pub grpc_requests: IntCounterVec,
    /// The WAF's decisions by route and action (pass, detect, block).
    pub waf_decisions: IntCounterVec,
    /// Requests of caching routes by route and `x-cache-status`.
    pub cache_requests: IntCounterVec,
    /// What the response cache holds, in bytes as it counts them.
    pub cache_bytes: prometheus::IntGauge,
    /// Finished spans the export queue had no room for.
    pub trace_spans_dropped: prometheus::IntCounter,
    /// OTLP export requests that failed or timed out.
    pub trace_export_failures: prometheus::IntCounter,
    /// Client connections open now.
    pub connections: prometheus::IntGauge,
    /// Connections closed at once or early, by reason.
    pub connections_refused: IntCounterVec,
    /// Security events by name (bounded: names are the gateway's own).
    pub security_events: IntCounterVec,
    /// 1 while the shared rate-limit store answers, 0 after it failed;
    /// follows the store's `rate_limit_store_*` events, so it exists only
    /// once the store has failed (an alert on `== 0` never fires without
    /// a store).
    pub rate_limit_store_up: IntGaugeVec,
    pub alerts_sent: IntCounter,
    /// Alerts given up after every try failed.
    pub alerts_failed: IntCounter,
    /// Alerts pushed out of a full queue.
    pub alerts_dropped: IntCounter,
    /// Read through [`Consumers`], which bounds the label set.
    consumer_requests: IntCounterVec,
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
) -> prometheus::Result<HistogramVec> {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    let h = HistogramVec::new(opts, &[label])?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}

fn target_ejected(registry: &Registry) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(
        Opts::new(
            "portcullis_upstream_target_ejected",
            "1 while outlier detection keeps the target out, else 0 (upstreams with outlier_detection)",
        ),
        &["upstream", "target"],
    )?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let r = &registry;
        let target_healthy = IntGaugeVec::new(
            Opts::new(
                "portcullis_upstream_target_healthy",
                "1 when the target passes its health checks, else 0",
            ),
            &["upstream", "target"],
        )?;
        registry.register(Box::new(target_healthy.clone()))?;
        let connections = prometheus::IntGauge::new(
            "portcullis_connections_active",
            "Client connections open now, all listeners together",
        )?;
        registry.register(Box::new(connections.clone()))?;
        let cache_bytes = prometheus::IntGauge::new(
            "portcullis_cache_bytes",
            "Bytes the response cache holds (bodies, headers, keys and bookkeeping)",
        )?;
        registry.register(Box::new(cache_bytes.clone()))?;
        let trace_spans_dropped = prometheus::IntCounter::new(
            "portcullis_trace_spans_dropped_total",
            "Finished spans dropped because the export queue was full",
        )?;
        registry.register(Box::new(trace_spans_dropped.clone()))?;
        let trace_export_failures = prometheus::IntCounter::new(
            "portcullis_trace_export_failures_total",
            "OTLP export requests that failed, timed out or were refused",
        )?;
        registry.register(Box::new(trace_export_failures.clone()))?;
        let rate_limit_store_up = IntGaugeVec::new(
            Opts::new(
                "portcullis_rate_limit_store_up",
                "1 while the shared rate-limit store answers, 0 once it failed (set by its events)",
            ),
            &["store"],
        )?;
        registry.register(Box::new(rate_limit_store_up.clone()))?;
        let single = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let alerts_sent = single(
            "portcullis_alerts_sent_total",
            "Alerts the webhook accepted (2xx)",
        )?;
        let alerts_failed = single(
            "portcullis_alerts_failed_total",
            "Alerts given up after 3 failed tries",
        )?;
        let alerts_dropped = single(
            "portcullis_alerts_dropped_total",
            "Alerts dropped because 1,000 were already queued (the oldest goes)",
        )?;
        let metrics = Metrics {
            trace_spans_dropped,
            trace_export_failures,
            cache_bytes,
            cache_requests: counter(
                r,
                "portcullis_cache_requests_total",
                "Requests of caching routes by route and result (HIT, MISS, EXPIRED, BYPASS)",
                &["route", "result"],
            )?,
            security_events: counter(
                r,
                "portcullis_security_events_total",
                "Security log events by event name",
                &["event"],
            )?,
            rate_limit_store_up,
            alerts_sent,
            alerts_failed,
            alerts_dropped,
            consumer_requests: counter(
                r,
                "portcullis_consumer_requests_total",
                "Requests of authenticated callers by consumer (else subject) and status class; \
                 consumers beyond [log] max_consumer_labels count as `other`",
                &["consumer", "status_class"],
            )?,
            connections,
            connections_refused: counter(
                r,
                "portcullis_connections_refused_total",
                "Client connections closed by a connection limit, by reason (max_connections, max_connections_per_ip, tls_handshake_timeout, header_timeout, idle_timeout)",
                &["reason"],
            )?,
            requests: counter(
                r,
                "portcullis_requests_total",
                "Requests by route, method and response status",
                &["route", "method", "status"],
            )?,
            request_duration: histogram(
                r,
                "portcullis_request_duration_seconds",
                "Time from request start to the end of the response, by route",
                "route",
            )?,
            upstream_duration: histogram(
                r,
                "portcullis_upstream_duration_seconds",
                "Time from choosing a target to the upstream's response header, by upstream",
                "upstream",
            )?,
            auth_failures: counter(
                r,
                "portcullis_auth_failures_total",
                "Refused credentials by provider and reason",
                &["provider", "reason"],
            )?,
            tokens_replayed: counter(
                r,
                "portcullis_tokens_replayed_total",
                "Replays refused by provider and kind (dpop_proof, token)",
                &["provider", "kind"],
            )?,
            authz_denied: counter(
                r,
                "portcullis_authz_denied_total",
                "Authorization denials by route",
                &["route"],
            )?,
            rate_limited: counter(
                r,
                "portcullis_rate_limited_total",
                "Requests refused by a rate limit, by route",
                &["route"],
            )?,
            target_healthy,
            target_ejected: target_ejected(r)?,
            waf_decisions: counter(
                r,
                "portcullis_waf_decisions_total",
                "WAF decisions by route and action (pass, detect, block)",
                &["route", "action"],
            )?,
            grpc_requests: counter(
                r,
                "portcullis_grpc_requests_total",
                "gRPC calls by route and grpc-status (the gateway's refusal or the upstream's)",
                &["route", "grpc_status"],
            )?,
            jwks_refresh: counter(
                r,
                "portcullis_jwks_refresh_total",
                "JWKS refreshes by provider and result",
                &["provider", "result"],
            )?,
            config_reloads: counter(
                r,
                "portcullis_config_reloads_total",
                "Configuration reloads by result (ok, error)",
                &["result"],
            )?,
            registry,
        };
        // Both results exist from the start, so a dashboard can alert on
        // the first failure.
        for result in ["ok", "error"] {
            metrics
                .config_reloads
                .with_label_values(&[result])
                .inc_by(0);
        }
        Ok(metrics)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The label of requests from consumers beyond the cap.
pub const OTHER_CONSUMER: &str = "other";
/// Longer consumer names are cut to this many bytes in labels.
const MAX_CONSUMER_LABEL_BYTES: usize = 128;
const STATUS_CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// `portcullis_consumer_requests_total` with at most `max` consumer
/// labels: the first `max` consumers seen keep their own, every later one
/// counts as `other`, for the life of the process. A request takes one
/// shard's read lock and bumps an atomic; nothing global.
pub struct Consumers {
    family: IntCounterVec,
    max: usize,
    admitted: AtomicUsize,
    known: DashMap<Box<str>, Arc<ByClass>>,
    other: Arc<ByClass>,
}

/// One consumer's counters, made per status class on first use.
struct ByClass {
    label: Box<str>,
    counters: [OnceLock<IntCounter>; 6],
}

impl ByClass {
    fn new(label: &str) -> Self {
        ByClass {
            label: label.into(),
            counters: Default::default(),
        }
    }

    fn inc(&self, family: &IntCounterVec, status: u16) {
        let class = match status {
            100..=599 => usize::from(status / 100),
            _ => 0,
        };
        if let Some(cell) = self.counters.get(class) {
            cell.get_or_init(|| family.with_label_values(&[&*self.label, STATUS_CLASSES[class]]))
                .inc();
        }
    }
}

impl Consumers {
    pub fn new(metrics: &Metrics, max: usize) -> Self {
        Consumers {
            family: metrics.consumer_requests.clone(),
            max,
            admitted: AtomicUsize::new(0),
            known: DashMap::new(),
            other: Arc::new(ByClass::new(OTHER_CONSUMER)),
        }
    }

    pub fn record(&self, consumer: &str, status: u16) {
        let consumer = truncate(consumer, MAX_CONSUMER_LABEL_BYTES);
        if let Some(known) = self.known.get(consumer) {
            known.inc(&self.family, status);
            return;
        }
        self.admit(consumer).inc(&self.family, status);
    }

    fn admit(&self, consumer: &str) -> Arc<ByClass> {
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return self.other.clone();
        }
        match self.known.entry(consumer.into()) {
            dashmap::Entry::Occupied(e) => {
                // Another request admitted it first.
                self.admitted.fetch_sub(1, Ordering::AcqRel);
                e.get().clone()
            }
            dashmap::Entry::Vacant(v) => v.insert(Arc::new(ByClass::new(consumer))).clone(),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A bounded label for a request method.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::TRACE => "TRACE",
        http::Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// A bounded label for a response status (`0` when nothing was sent),
/// without formatting a number on every request.
pub fn status_label(status: u16) -> &'static str {
    static LABELS: OnceLock<Vec<String>> = OnceLock::new();
    let labels = LABELS.get_or_init(|| (0..600).map(|n: u16| n.to_string()).collect());
    labels
        .get(usize::from(status))
        .map_or("other", String::as_str)
}

/// The label of a `grpc-status` value: the codes of the gRPC spec (0 to
/// 16) as they are, anything else `other`, so a client or upstream cannot
/// grow the label set.
pub fn grpc_status_label(value: &http::HeaderValue) -> &'static str {
    const CODES: [&str; 17] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    CODES
        .iter()
        .find(|c| c.as_bytes() == value.as_bytes())
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_status_labels_are_bounded() {
        let label = |v: &'static str| grpc_status_label(&http::HeaderValue::from_static(v));
        assert_eq!(label("0"), "0");
        assert_eq!(label("16"), "16");
        for other in ["17", "00", "-1", " 1", "OK", ""] {
            assert_eq!(label(other), "other", "{other:?}");
        }
    }

    #[test]
    fn renders_every_family_with_bounded_labels() {
        let m = Metrics::new().unwrap();
        m.requests
            .with_label_values(&[
                UNMATCHED,
                method_label(&http::Method::from_bytes(b"PROPFIND").unwrap()),
                status_label(404),
            ])
            .inc();
        let text = m.render();
        assert!(
            text.contains(
                r#"portcullis_requests_total{method="OTHER",route="unmatched",status="404"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"portcullis_config_reloads_total{result="error"} 0"#));
        assert_eq!(status_label(0), "0");
    }

    #[test]
    fn consumer_labels_stop_at_the_cap() {
        let m = Metrics::new().unwrap();
        let consumers = Consumers::new(&m, 2);
        for name in ["alice", "bob", "carol", "alice", "dave"] {
            consumers.record(name, 200);
        }
        consumers.record("bob", 503);
        consumers.record("erin", 0);
        consumers.record(&"é".repeat(100), 200);
        let text = m.render();
        for want in [
            r#"portcullis_consumer_requests_total{consumer="alice",status_class="2xx"} 2"#,
            r#"portcullis_consumer_requests_total{consumer="bob",status_class="2xx"} 1"#,
            r#"portcullis_consumer_requests_total{consumer="bob",status_class="5xx"} 1"#,
            r#"portcullis_consumer_requests_total{consumer="other",status_class="2xx"} 3"#,
            r#"portcullis_consumer_requests_total{consumer="other",status_class="none"} 1"#,
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
        assert!(!text.contains("carol"), "{text}");
        assert_eq!(truncate(&"é".repeat(100), 5), "éé");
    }
}
