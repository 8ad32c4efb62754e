//! OpenTelemetry tracing (CONTRACT §12): one server span per request,
//! continued from a trusted `traceparent`, handed to the upstream as the
//! parent of its own spans, and exported as OTLP/HTTP protobuf.
//!
//! A finished span is only ever offered to a bounded queue: when the
//! collector is slow, down or hanging, spans are dropped and counted, and
//! no request waits. One exporter thread per configuration batches the
//! queue and posts it.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, Span, SpanData, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use prometheus::IntCounter;
use prost::Message;

use crate::config::TracingConfig;

/// Spans waiting for the exporter; beyond it they are dropped.
const QUEUE: usize = 2048;
/// The most spans in one export request.
const BATCH: usize = 512;
/// How long spans wait to fill a batch.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// The bound of one export request; a hanging collector costs the
/// exporter thread this long, never a request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The tracer of one `[tracing]` configuration.
pub struct Tracing {
    pub config: TracingConfig,
    tracer: SdkTracer,
}

/// The counters the exporter keeps.
#[derive(Clone)]
pub struct ExportCounters {
    pub dropped: IntCounter,
    pub failed: IntCounter,
}

#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error("cannot start the span exporter: {0}")]
    Exporter(std::io::Error),
}

impl Tracing {
    pub fn new(config: TracingConfig, counters: ExportCounters) -> Result<Tracing, TracingError> {
        let resource = Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .build();
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let exporter = Exporter {
            endpoint: config.otlp_endpoint.clone(),
            resource: ResourceAttributesWithSchema::from(&resource),
            failed: counters.failed.clone(),
        };
        std::thread::Builder::new()
            .name("otlp-exporter".into())
            .spawn(move || exporter.run(rx))
            .map_err(TracingError::Exporter)?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Queue {
                tx,
                dropped: counters.dropped,
            })
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("portcullis");
        Ok(Tracing { config, tracer })
    }

    /// The span of a request that arrived at `start` with `headers`: the
    /// child of the client's trace when it is trusted and well formed,
    /// else the root of a new one.
    pub fn start(&self, headers: &HeaderMap, start: SystemTime) -> RequestSpan {
        let parent = if self.config.trust_incoming {
            TraceContextPropagator::new().extract(&OneValue(headers))
        } else {
            Context::new()
        };
        let span = self
            .tracer
            .span_builder("request")
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .start_with_context(&self.tracer, &parent);
        let cx = span.span_context();
        let traceparent = HeaderValue::from_str(&format!(
            "00-{}-{}-{:02x}",
            cx.trace_id(),
            cx.span_id(),
            cx.trace_flags().to_u8()
        ))
        .ok();
        let tracestate = Some(cx.trace_state().header())
            .filter(|s| !s.is_empty())
            .and_then(|s| HeaderValue::from_str(&s).ok());
        RequestSpan {
            span,
            traceparent,
            tracestate,
        }
    }
}

/// The trace context headers of a request: a header sent twice is no
/// context at all, so the upstream and the gateway never read different
/// ones.
struct OneValue<'a>(&'a HeaderMap);

impl Extractor for OneValue<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let mut values = self.0.get_all(key).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => v.to_str().ok(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// One request's span and the trace context the upstream gets.
pub struct RequestSpan {
    span: Span,
    /// `00-<trace id>-<span id>-<flags>` of this span.
    pub traceparent: Option<HeaderValue>,
    /// The incoming `tracestate`, when trusted.
    pub tracestate: Option<HeaderValue>,
}

/// What the span says about a finished request (never a token or query).
pub struct SpanEnd<'a> {
    pub method: &'a str,
    pub route: Option<&'a str>,
    pub route_pattern: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub auth_method: Option<&'a str>,
    pub status: u16,
}

impl RequestSpan {
    /// The trace id (32 hex digits), for the access log.
    pub fn trace_id(&self) -> String {
        self.span.span_context().trace_id().to_string()
    }

    pub fn finish(mut self, end: &SpanEnd<'_>) {
        if !self.span.is_recording() {
            return;
        }
        self.span.update_name(match end.route {
            Some(route) => format!("{} {route}", end.method),
            None => end.method.to_string(),
        });
        let mut attributes = vec![
            KeyValue::new("http.request.method", end.method.to_string()),
            KeyValue::new("http.response.status_code", i64::from(end.status)),
        ];
        if let Some(pattern) = end.route_pattern {
            attributes.push(KeyValue::new("http.route", pattern.to_string()));
        }
        for (key, value) in [
            ("portcullis.route", end.route),
            ("portcullis.upstream", end.upstream),
            ("portcullis.auth_method", end.auth_method),
        ] {
            if let Some(v) = value {
                attributes.push(KeyValue::new(key, v.to_string()));
            }
        }
        self.span.set_attributes(attributes);
        if end.status >= 500 || end.status == 0 {
            self.span.set_status(Status::error(""));
        }
        self.span.end();
    }
}

/// Hands finished spans to the exporter thread without ever blocking.
#[derive(Debug)]
struct Queue {
    tx: SyncSender<SpanData>,
    dropped: IntCounter,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.tx.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

struct Exporter {
    endpoint: String,
    resource: ResourceAttributesWithSchema,
    failed: IntCounter,
}

impl Exporter {
    /// Batches the queue until every sender is gone, then sends the rest.
    fn run(self, rx: Receiver<SpanData>) {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            self.failed.inc();
            return;
        };
        let Ok(client) = reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build() else {
            self.failed.inc();
            return;
        };
        let mut batch = Vec::with_capacity(BATCH);
        let mut since = Instant::now();
        loop {
            let open = match rx.recv_timeout(FLUSH_EVERY) {
                Ok(span) => {
                    batch.push(span);
                    true
                }
                Err(RecvTimeoutError::Timeout) => true,
                Err(RecvTimeoutError::Disconnected) => false,
            };
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(_) => break,
                }
            }
            let due = batch.len() >= BATCH || since.elapsed() >= FLUSH_EVERY || !open;
            if due && !batch.is_empty() {
                let spans = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                runtime.block_on(self.export(&client, spans));
                since = Instant::now();
            }
            if !open {
                return;
            }
        }
    }

    async fn export(&self, client: &reqwest::Client, spans: Vec<SpanData>) {
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, &self.resource),
        };
        let sent = client
            .post(&self.endpoint)
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(request.encode_to_vec())
            .send()
            .await;
        if !sent.is_ok_and(|r| r.status().is_success()) {
            self.failed.inc();
        }
    }
}
