//! OpenTelemetry tracing (CONTRACT §12): one server span per request,
//! continued from a trusted `traceparent`, handed to the upstream as the
//! parent of its own spans, and exported as OTLP/HTTP protobuf.
//!
//! The request path does only what it must: two random ids, the sampling
//! decision, the `traceparent` written as hex into a fixed buffer, and at
//! the end one small record (ids, times, status, and the span's strings in
//! one buffer) offered to a bounded queue. Everything OTLP (span names,
//! attributes, protobuf) is built on the exporter thread, a batch at a
//! time. When the collector is slow, down or hanging, spans are dropped
//! and counted, and no request waits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use opentelemetry_proto::tonic::trace::v1::{span, status};
use prometheus::IntCounter;
use rand::Rng;

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
/// W3C: `tracestate` longer than this may be dropped.
const MAX_TRACESTATE: usize = 512;
/// `00-` + 32 + `-` + 16 + `-` + 2.
const TRACEPARENT_LEN: usize = 55;
/// The sampled bit of the trace flags.
const SAMPLED: u8 = 1;
/// OTLP span flags: the context says whether its parent is remote, and
/// (for a continued trace) that it is.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The tracer of one `[tracing]` configuration.
pub struct Tracing {
    pub config: TracingConfig,
    /// New traces whose id's low 63 bits fall below this are sampled.
    threshold: u64,
    queue: Arc<Queue>,
}

/// The request path's end of the exporter's queue. The exporter sleeps
/// until a batch is full or the flush interval ends, never woken per span:
/// a sender wakes it only when its span makes a full batch.
struct Queue {
    /// Taken on drop, so the exporter, woken then, finds the queue closed.
    tx: Option<SyncSender<Done>>,
    dropped: IntCounter,
    /// Spans sent and not yet taken by the exporter.
    pending: Arc<AtomicUsize>,
    exporter: Thread,
}

impl Queue {
    fn send(&self, done: Done) {
        let Some(tx) = &self.tx else {
            return;
        };
        let pending = self.pending.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        match tx.try_send(done) {
            Ok(()) if pending == BATCH => self.exporter.unpark(),
            Ok(()) => {}
            Err(_) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                self.dropped.inc();
            }
        }
    }
}

impl Drop for Queue {
    /// The last span is in: the exporter sends the rest now.
    fn drop(&mut self) {
        drop(self.tx.take());
        self.exporter.unpark();
    }
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
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let pending = Arc::new(AtomicUsize::new(0));
        let exporter = Exporter {
            endpoint: config.otlp_endpoint.clone(),
            service_name: config.service_name.clone(),
            failed: counters.failed,
            pending: pending.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("otlp-exporter".into())
            .spawn(move || exporter.run(rx))
            .map_err(TracingError::Exporter)?;
        Ok(Tracing {
            threshold: threshold(config.sample_ratio),
            config,
            queue: Arc::new(Queue {
                tx: Some(tx),
                dropped: counters.dropped,
                pending,
                exporter: handle.thread().clone(),
            }),
        })
    }

    /// The span of a request that arrived at `start` with `headers`: the
    /// child of the client's trace when it is trusted and well formed,
    /// else the root of a new one.
    pub fn start(&self, headers: &HeaderMap, start: SystemTime) -> RequestSpan {
        let mut rng = rand::rng();
        let parent = if self.config.trust_incoming {
            incoming(headers)
        } else {
            None
        };
        let (trace_id, parent_id, flags, tracestate) = match parent {
            Some(p) => (p.trace_id, Some(p.span_id), p.flags, p.tracestate),
            None => {
                let id = nonzero_u128(&mut rng).to_be_bytes();
                let flags = if self.sampled(&id) { SAMPLED } else { 0 };
                (id, None, flags, None)
            }
        };
        let span_id = nonzero_u64(&mut rng).to_be_bytes();
        let traceparent = HeaderValue::from_bytes(&traceparent(&trace_id, &span_id, flags)).ok();
        RequestSpan {
            trace_id,
            span_id,
            parent_id,
            flags,
            start,
            traceparent,
            tracestate,
            queue: (flags & SAMPLED != 0).then(|| self.queue.clone()),
        }
    }

    /// The ratio sampler of a new trace (the OpenTelemetry SDK's rule: the
    /// id's low 8 bytes, shifted right once, below ratio × 2⁶³).
    fn sampled(&self, trace_id: &[u8; 16]) -> bool {
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        (u64::from_be_bytes(low) >> 1) < self.threshold
    }
}

fn threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else {
        // Saturating float-to-int: a ratio ≤ 0 samples nothing.
        (ratio.max(0.0) * (1u64 << 63) as f64) as u64
    }
}

fn nonzero_u128(rng: &mut impl Rng) -> u128 {
    loop {
        let v: u128 = rng.random();
        if v != 0 {
            return v;
        }
    }
}

fn nonzero_u64(rng: &mut impl Rng) -> u64 {
    loop {
        let v: u64 = rng.random();
        if v != 0 {
            return v;
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// `00-<trace id>-<span id>-<flags>`, written in place.
fn traceparent(trace_id: &[u8; 16], span_id: &[u8; 8], flags: u8) -> [u8; TRACEPARENT_LEN] {
    let mut out = [b'-'; TRACEPARENT_LEN];
    out[0] = b'0';
    out[1] = b'0';
    write_hex(&mut out[3..35], trace_id);
    write_hex(&mut out[36..52], span_id);
    write_hex(&mut out[53..55], &[flags]);
    out
}

/// A trusted parent: its ids, its sampled bit, and its `tracestate`.
struct Parent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
    tracestate: Option<HeaderValue>,
}

/// The one value of a header: a header sent twice is no context at all,
/// so the upstream and the gateway never read different ones.
fn one<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => Some(v),
        _ => None,
    }
}

fn incoming(headers: &HeaderMap) -> Option<Parent> {
    let (trace_id, span_id, flags) = parse_traceparent(one(headers, TRACEPARENT)?.as_bytes())?;
    let tracestate = one(headers, TRACESTATE)
        .filter(|v| valid_tracestate(v.as_bytes()))
        .cloned();
    Some(Parent {
        trace_id,
        span_id,
        flags,
        tracestate,
    })
}

/// W3C trace context: `vv-<32 hex>-<16 hex>-<2 hex>` in lower case,
/// version `ff` invalid, version `00` exactly this long (a later version
/// may append `-…`), neither id all zeros; of the flags only `sampled` is
/// kept.
fn parse_traceparent(v: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    let v = v.trim_ascii();
    if v.len() < TRACEPARENT_LEN
        || [2, 35, 52].iter().any(|&i| v.get(i) != Some(&b'-'))
        || (v.len() > TRACEPARENT_LEN && v.get(TRACEPARENT_LEN) != Some(&b'-'))
    {
        return None;
    }
    let mut version = [0u8; 1];
    hex_into(v.get(0..2)?, &mut version)?;
    if version[0] == 0xff || (version[0] == 0 && v.len() != TRACEPARENT_LEN) {
        return None;
    }
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    let mut flags = [0u8; 1];
    hex_into(v.get(3..35)?, &mut trace_id)?;
    hex_into(v.get(36..52)?, &mut span_id)?;
    hex_into(v.get(53..55)?, &mut flags)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some((trace_id, span_id, flags[0] & SAMPLED))
}

fn hex_into(hex: &[u8], out: &mut [u8]) -> Option<()> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if hex.len() != out.len() * 2 {
        return None;
    }
    for (b, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *b = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(())
}

/// A `tracestate` passed on only when it is a list of `key=value`
/// members within the W3C size bound; anything else is dropped, as a
/// malformed one must be.
fn valid_tracestate(v: &[u8]) -> bool {
    v.len() <= MAX_TRACESTATE
        && v.split(|&c| c == b',')
            .map(<[u8]>::trim_ascii)
            .filter(|m| !m.is_empty())
            .all(|m| {
                m.iter().position(|&c| c == b'=').is_some_and(|eq| {
                    eq > 0 && eq + 1 < m.len() && m.iter().all(|&c| (0x20..=0x7e).contains(&c))
                })
            })
}

/// One request's span and the trace context the upstream gets.
pub struct RequestSpan {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_id: Option<[u8; 8]>,
    flags: u8,
    start: SystemTime,
    /// `00-<trace id>-<span id>-<flags>` of this span.
    pub traceparent: Option<HeaderValue>,
    /// The incoming `tracestate`, when trusted.
    pub tracestate: Option<HeaderValue>,
    /// Where a sampled span goes when it ends (none: not sampled).
    queue: Option<Arc<Queue>>,
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

/// A trace id as 32 hex digits, without allocating.
pub struct TraceIdHex([u8; 32]);

impl TraceIdHex {
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl RequestSpan {
    /// The trace id (32 hex digits), for the access log.
    pub fn trace_id(&self) -> TraceIdHex {
        let mut out = [0u8; 32];
        write_hex(&mut out, &self.trace_id);
        TraceIdHex(out)
    }

    pub fn finish(self, end: &SpanEnd<'_>) {
        let Some(queue) = self.queue else {
            return;
        };
        let parts = [
            Some(end.method),
            end.route,
            end.route_pattern,
            end.upstream,
            end.auth_method,
        ];
        let mut strings = String::with_capacity(parts.iter().flatten().map(|s| s.len()).sum());
        let mut lens = [None; 5];
        for (len, part) in lens.iter_mut().zip(parts) {
            if let Some(s) = part {
                strings.push_str(s);
                *len = Some(s.len());
            }
        }
        let done = Done {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_id: self.parent_id,
            flags: self.flags,
            start: self.start,
            end: SystemTime::now(),
            status: end.status,
            strings,
            lens,
        };
        queue.send(done);
    }
}

/// A finished, sampled span as the request path leaves it: the strings
/// of [`SpanEnd`] back to back in one buffer, with their lengths.
struct Done {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_id: Option<[u8; 8]>,
    flags: u8,
    start: SystemTime,
    end: SystemTime,
    status: u16,
    strings: String,
    /// method, route, route pattern, upstream, auth method.
    lens: [Option<usize>; 5],
}

impl Done {
    /// The five strings of [`SpanEnd`], `None` where absent.
    fn parts(&self) -> [Option<&str>; 5] {
        let mut at = 0;
        self.lens.map(|len| {
            len.and_then(|n| {
                let s = self.strings.get(at..at + n);
                at += n;
                s
            })
        })
    }

    /// This span as an OTLP `Span` message's fields, in the order and
    /// with the defaults left out as prost writes them.
    fn encode(&self, out: &mut Vec<u8>) {
        let [method, route, pattern, upstream, auth] = self.parts();
        let method = method.unwrap_or_default();
        bytes(out, 1, &self.trace_id);
        bytes(out, 2, &self.span_id);
        if let Some(parent) = &self.parent_id {
            bytes(out, 4, parent);
        }
        // `<METHOD> <route>`, or the method alone.
        let name_len = method.len() + route.map_or(0, |r| r.len() + 1);
        if name_len > 0 {
            tag(out, 5, LEN);
            varint(out, name_len as u64);
            out.extend_from_slice(method.as_bytes());
            if let Some(route) = route {
                out.push(b' ');
                out.extend_from_slice(route.as_bytes());
            }
        }
        tag(out, 6, VARINT);
        varint(out, span::SpanKind::Server as u64);
        for (field, t) in [(7, self.start), (8, self.end)] {
            let nanos = unix_nanos(t);
            if nanos != 0 {
                tag(out, field, I64);
                out.extend_from_slice(&nanos.to_le_bytes());
            }
        }
        message(out, 9, |out| {
            text_attribute(out, "http.request.method", method)
        });
        message(out, 9, |out| {
            text(out, 1, "http.response.status_code");
            message(out, 2, |out| {
                tag(out, 3, VARINT);
                varint(out, u64::from(self.status));
            });
        });
        for (key, value) in [
            ("http.route", pattern),
            ("portcullis.route", route),
            ("portcullis.upstream", upstream),
            ("portcullis.auth_method", auth),
        ] {
            if let Some(v) = value {
                message(out, 9, |out| text_attribute(out, key, v));
            }
        }
        if self.status >= 500 || self.status == 0 {
            message(out, 15, |out| {
                tag(out, 3, VARINT);
                varint(out, status::StatusCode::Error as u64);
            });
        }
        let remote = if self.parent_id.is_some() {
            IS_REMOTE
        } else {
            0
        };
        tag(out, 16, I32);
        out.extend_from_slice(&(u32::from(self.flags) | HAS_IS_REMOTE | remote).to_le_bytes());
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Protobuf wire types.
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, u64::from(field << 3 | u32::from(wire)));
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    tag(out, field, LEN);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A string field; proto3 leaves an empty one out.
fn text(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        bytes(out, field, s.as_bytes());
    }
}

/// A `KeyValue` with a string `AnyValue` (a oneof: written even empty).
fn text_attribute(out: &mut Vec<u8>, key: &str, value: &str) {
    text(out, 1, key);
    message(out, 2, |out| bytes(out, 1, value.as_bytes()));
}

/// A length-delimited field whose bytes `body` appends: written after a
/// one-byte length, moved up in the rare case the length needs more.
fn message(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, LEN);
    let at = out.len();
    out.push(0);
    body(out);
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
        return;
    }
    let mut prefix = [0u8; 10];
    let mut n = 0;
    let mut v = len as u64;
    while v >= 0x80 {
        prefix[n] = (v & 0x7f) as u8 | 0x80;
        v >>= 7;
        n += 1;
    }
    prefix[n] = v as u8;
    out.splice(at..=at, prefix[..=n].iter().copied());
}

struct Exporter {
    endpoint: String,
    service_name: String,
    failed: IntCounter,
    pending: Arc<AtomicUsize>,
}

impl Exporter {
    /// Batches the queue until every sender is gone, then sends the rest.
    fn run(self, rx: Receiver<Done>) {
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
            // Woken early by a full batch or the queue's close.
            std::thread::park_timeout(FLUSH_EVERY.saturating_sub(since.elapsed()));
            let mut open = true;
            loop {
                let before = batch.len();
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(span) => batch.push(span),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
                self.pending
                    .fetch_sub(batch.len() - before, Ordering::Relaxed);
                let full = batch.len() >= BATCH;
                if full || !open || since.elapsed() >= FLUSH_EVERY {
                    if !batch.is_empty() {
                        let body = self.encode(&batch);
                        batch.clear();
                        runtime.block_on(self.export(&client, body));
                    }
                    since = Instant::now();
                }
                if !full {
                    break;
                }
            }
            if !open {
                return;
            }
        }
    }

    /// One `ExportTraceServiceRequest` for the whole batch (one resource,
    /// one scope), written straight from the records: no message tree.
    fn encode(&self, spans: &[Done]) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + spans.len() * 320);
        message(&mut out, 1, |out| {
            message(out, 1, |out| {
                message(out, 1, |out| {
                    text_attribute(out, "service.name", &self.service_name)
                });
            });
            message(out, 2, |out| {
                message(out, 1, |out| text(out, 1, "portcullis"));
                for span in spans {
                    message(out, 2, |out| span.encode(out));
                }
            });
        });
        out
    }

    async fn export(&self, client: &reqwest::Client, body: Vec<u8>) {
        let sent = client
            .post(&self.endpoint)
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send()
            .await;
        if !sent.is_ok_and(|r| r.status().is_success()) {
            self.failed.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        any_value, AnyValue, InstrumentationScope, KeyValue,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use prost::Message;

    /// The export as the OTLP types and prost would make it: what the
    /// encoder must write.
    fn reference(d: &Done) -> Span {
        let [method, route, pattern, upstream, auth] = d.parts();
        let method = method.unwrap_or_default();
        let name = match route {
            Some(route) => format!("{method} {route}"),
            None => method.to_string(),
        };
        let text = |key: &str, v: &str| KeyValue {
            key: key.to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.to_string())),
            }),
        };
        let mut attributes = vec![
            text("http.request.method", method),
            KeyValue {
                key: "http.response.status_code".to_string(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(i64::from(d.status))),
                }),
            },
        ];
        for (key, value) in [
            ("http.route", pattern),
            ("portcullis.route", route),
            ("portcullis.upstream", upstream),
            ("portcullis.auth_method", auth),
        ] {
            if let Some(v) = value {
                attributes.push(text(key, v));
            }
        }
        let status = (d.status >= 500 || d.status == 0).then(|| Status {
            message: String::new(),
            code: status::StatusCode::Error as i32,
        });
        let remote = if d.parent_id.is_some() { IS_REMOTE } else { 0 };
        Span {
            trace_id: d.trace_id.to_vec(),
            span_id: d.span_id.to_vec(),
            parent_span_id: d.parent_id.map_or(Vec::new(), |p| p.to_vec()),
            flags: u32::from(d.flags) | HAS_IS_REMOTE | remote,
            name,
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: unix_nanos(d.start),
            end_time_unix_nano: unix_nanos(d.end),
            attributes,
            status,
            ..Span::default()
        }
    }

    fn reference_request(service_name: &str, spans: &[Done]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".to_string(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(service_name.to_string())),
                        }),
                    }],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "portcullis".to_string(),
                        ..InstrumentationScope::default()
                    }),
                    spans: spans.iter().map(reference).collect(),
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    #[test]
    fn traceparent_round_trips_and_look_alikes_are_refused() {
        let (t, s) = ([0xab; 16], [0x01; 8]);
        let v = traceparent(&t, &s, SAMPLED);
        assert_eq!(
            std::str::from_utf8(&v).unwrap(),
            "00-abababababababababababababababab-0101010101010101-01"
        );
        assert_eq!(parse_traceparent(&v), Some((t, s, SAMPLED)));
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03";
        assert_eq!(parse_traceparent(ok.as_bytes()).map(|p| p.2), Some(1));
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
        }
        // A later version may append fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(parse_traceparent(later.as_bytes()).is_some());
    }

    #[test]
    fn tracestate_is_a_bounded_list_of_members() {
        assert!(valid_tracestate(b"vendor=abc"));
        assert!(valid_tracestate(b"a=1, b=2,,c=3"));
        for bad in [&b"novalue"[..], b"=x", b"k=", b"k=\tx", &[b'a'; 600]] {
            assert!(!valid_tracestate(bad));
        }
    }

    #[test]
    fn the_ratio_follows_the_sdk_rule() {
        assert_eq!(threshold(1.0), u64::MAX);
        assert_eq!(threshold(0.0), 0);
        assert_eq!(threshold(-1.0), 0);
        assert_eq!(threshold(0.5), 1 << 62);
    }

    #[test]
    fn a_span_record_gives_back_its_strings() {
        let done = Done {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_id: None,
            flags: SAMPLED,
            start: UNIX_EPOCH,
            end: UNIX_EPOCH,
            status: 200,
            strings: "GETordersapp".to_string(),
            lens: [Some(3), Some(6), None, Some(3), None],
        };
        assert_eq!(
            done.parts(),
            [Some("GET"), Some("orders"), None, Some("app"), None]
        );
        let span = reference(&done);
        assert_eq!(span.name, "GET orders");
        assert_eq!(span.attributes.len(), 4);
    }

    fn record(i: usize, route: Option<&str>, parent: bool, status: u16) -> Done {
        let parts = [
            Some("GET"),
            route,
            route,
            Some("app"),
            i.is_multiple_of(2).then_some("jwt"),
        ];
        Done {
            trace_id: [i as u8 | 1; 16],
            span_id: [i as u8 ^ 0x5a; 8],
            parent_id: parent.then_some([7; 8]),
            flags: SAMPLED,
            start: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_000 + i as u64),
            end: UNIX_EPOCH + Duration::from_secs(1_700_000_001),
            status,
            strings: parts.iter().flatten().copied().collect(),
            lens: parts.map(|p| p.map(str::len)),
        }
    }

    #[test]
    fn the_encoding_is_what_prost_writes_from_the_otlp_types() {
        let long = "r".repeat(300);
        let mut spans = vec![
            record(0, Some("orders"), false, 200),
            record(1, None, true, 503),
            record(2, Some(&long), true, 0),
            Done {
                start: UNIX_EPOCH,
                ..record(3, Some("x"), false, 404)
            },
        ];
        spans.extend((4..BATCH).map(|i| record(i, Some("orders"), i.is_multiple_of(3), 200)));
        let exporter = Exporter {
            endpoint: String::new(),
            service_name: "svc".into(),
            failed: IntCounter::new("failed", "failed").unwrap(),
            pending: Arc::new(AtomicUsize::new(0)),
        };
        for batch in [&spans[..1], &spans[..4], &spans[..]] {
            let body = exporter.encode(batch);
            let expected = reference_request("svc", batch);
            assert_eq!(
                ExportTraceServiceRequest::decode(&body[..]).unwrap(),
                expected
            );
            assert_eq!(body, expected.encode_to_vec());
        }
    }
}
