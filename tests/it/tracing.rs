//! OpenTelemetry tracing through the real binary (CONTRACT §12): spans at
//! a real OTLP/HTTP receiver (protobuf decoded with opentelemetry-proto),
//! the trace context the upstream gets, sampling, and collectors that fail
//! or hang without a request noticing.

use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::common;
use common::client::request;
use common::gateway::{check, free_addr, Gateway};
use common::sink::{Mode, Sink};
use common::upstream::Upstream;
use common::wait_until;

/// An OTLP/HTTP collector on 127.0.0.1: every span of every export it
/// received, or (`hang`) one that reads requests and never answers.
struct Collector {
    addr: SocketAddr,
    sink: Sink,
}

impl Collector {
    fn start(hang: bool) -> Collector {
        let sink = Sink::start(if hang { Mode::Hang } else { Mode::Accept });
        Collector {
            addr: sink.addr,
            sink,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    fn spans(&self) -> Vec<Span> {
        let exports = self.sink.bodies();
        let exports = exports
            .iter()
            .filter_map(|b| ExportTraceServiceRequest::decode(b.as_slice()).ok());
        exports
            .flat_map(|e| e.resource_spans)
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
            .collect()
    }

    fn wait_spans(&self, n: usize) -> Vec<Span> {
        wait_until(Duration::from_secs(10), || self.spans().len() >= n);
        self.spans()
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    })
}

fn config(up: &Upstream, admin: SocketAddr, tracing: &str) -> String {
    format!(
        "[admin]\nlisten = \"{admin}\"\n\n{tracing}\n\n[upstreams.app]\ntargets = [\"{}\"]\n\n\
         [[routes]]\nname = \"orders\"\npath_prefix = \"/orders\"\npublic = true\nupstream = \"app\"\n",
        up.addr()
    )
}

fn tracing_to(collector: &Collector, extra: &str) -> String {
    format!(
        "[tracing]\notlp_endpoint = \"{}\"\nservice_name = \"gw-test\"\n{extra}",
        collector.endpoint()
    )
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn upstream_traceparent(up: &Upstream) -> Option<String> {
    up.last_request()?["headers"]["traceparent"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn a_trusted_trace_is_continued_and_its_span_exported() {
    let (up, collector) = (Upstream::start("app"), Collector::start(false));
    let gw = Gateway::start(&config(&up, free_addr(), &tracing_to(&collector, "")));
    let incoming = format!("00-{TRACE}-{PARENT}-01");
    let r = request(
        gw.addr,
        "GET",
        "/orders/7?token=s3cr3t-query",
        &[
            ("traceparent", &incoming),
            ("tracestate", "vendor=abc"),
            ("authorization", "Bearer s3cr3t-token"),
        ],
        None,
    );
    assert_eq!(r.status, 200);
    let seen = up.last_request().unwrap();
    let child = seen["headers"]["traceparent"].as_str().unwrap().to_string();
    let parts: Vec<&str> = child.split('-').collect();
    assert_eq!(parts.len(), 4, "{child}");
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", TRACE, "01"),
        "{child}"
    );
    assert_ne!(
        parts[2], PARENT,
        "the upstream's parent is the gateway's span"
    );
    assert_eq!(seen["headers"]["tracestate"], "vendor=abc");
    let spans = collector.wait_spans(1);
    let span = spans.first().expect("no span exported");
    assert_eq!(hex::encode(&span.trace_id), TRACE);
    assert_eq!(hex::encode(&span.parent_span_id), PARENT);
    assert_eq!(hex::encode(&span.span_id), parts[2]);
    assert_eq!(span.name, "GET orders");
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(
        attribute(span, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attribute(span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attribute(span, "http.route").as_deref(), Some("/orders/*"));
    assert_eq!(
        attribute(span, "portcullis.route").as_deref(),
        Some("orders")
    );
    assert_eq!(
        attribute(span, "portcullis.upstream").as_deref(),
        Some("app")
    );
    let text = format!("{span:?}");
    assert!(
        !text.contains("s3cr3t"),
        "a secret reached the span: {text}"
    );
    let line = gw.wait_access_log(1).pop().unwrap();
    assert_eq!(line["trace_id"], TRACE, "{line}");
}

#[test]
fn an_untrusted_or_doubled_context_starts_a_new_trace() {
    let (up, collector) = (Upstream::start("app"), Collector::start(false));
    let gw = Gateway::start(&config(
        &up,
        free_addr(),
        &tracing_to(&collector, "trust_incoming = false\n"),
    ));
    let incoming = format!("00-{TRACE}-{PARENT}-01");
    let r = request(
        gw.addr,
        "GET",
        "/orders",
        &[("traceparent", &incoming), ("tracestate", "vendor=abc")],
        None,
    );
    assert_eq!(r.status, 200);
    let child = upstream_traceparent(&up).unwrap();
    assert!(!child.contains(TRACE), "{child}");
    assert!(up.last_request().unwrap()["headers"]
        .get("tracestate")
        .is_none());
    // Trusted, but sent twice: no context either.
    let (up2, collector2) = (Upstream::start("app"), Collector::start(false));
    let gw2 = Gateway::start(&config(&up2, free_addr(), &tracing_to(&collector2, "")));
    let other = "00-11111111111111111111111111111111-2222222222222222-01";
    let r = request(
        gw2.addr,
        "GET",
        "/orders",
        &[("traceparent", &incoming), ("traceparent", other)],
        None,
    );
    assert_eq!(r.status, 200);
    let child = upstream_traceparent(&up2).unwrap();
    assert!(!child.contains(TRACE) && !child.contains("1111"), "{child}");
    assert_eq!(collector.wait_spans(1).len(), 1);
}

#[test]
fn without_tracing_the_context_passes_unchanged_and_a_reload_turns_it_on() {
    let up = Upstream::start("app");
    let admin = free_addr();
    let gw = Gateway::start(&config(&up, admin, ""));
    let incoming = format!("00-{TRACE}-{PARENT}-01");
    let r = request(
        gw.addr,
        "GET",
        "/orders",
        &[("traceparent", &incoming), ("tracestate", "vendor=abc")],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        upstream_traceparent(&up).as_deref(),
        Some(incoming.as_str())
    );
    assert_eq!(
        up.last_request().unwrap()["headers"]["tracestate"],
        "vendor=abc"
    );
    assert!(gw.wait_access_log(1)[0].get("trace_id").is_none());
    // A reload turns tracing on.
    let collector = Collector::start(false);
    gw.write_config_body(&config(&up, admin, &tracing_to(&collector, "")));
    assert_eq!(request(admin, "POST", "/reload", &[], None).status, 200);
    let r = request(
        gw.addr,
        "GET",
        "/orders",
        &[("traceparent", &incoming)],
        None,
    );
    assert_eq!(r.status, 200);
    let child = upstream_traceparent(&up).unwrap();
    assert!(child.contains(TRACE) && !child.contains(PARENT), "{child}");
    assert_eq!(collector.wait_spans(1).len(), 1);
}

#[test]
fn the_ratio_samples_new_traces_and_a_sampled_parent_is_followed() {
    let (up, collector) = (Upstream::start("app"), Collector::start(false));
    let gw = Gateway::start(&config(
        &up,
        free_addr(),
        &tracing_to(&collector, "sample_ratio = 0.0\n"),
    ));
    for _ in 0..5 {
        assert_eq!(request(gw.addr, "GET", "/orders", &[], None).status, 200);
        let child = upstream_traceparent(&up).unwrap();
        assert!(
            child.ends_with("-00"),
            "an unsampled trace still propagates: {child}"
        );
    }
    let incoming = format!("00-{TRACE}-{PARENT}-01");
    let r = request(
        gw.addr,
        "GET",
        "/orders",
        &[("traceparent", &incoming)],
        None,
    );
    assert_eq!(r.status, 200);
    let spans = collector.wait_spans(1);
    assert_eq!(spans.len(), 1, "only the sampled parent's span");
    assert_eq!(hex::encode(&spans[0].trace_id), TRACE);
}

#[test]
fn a_failing_or_hanging_collector_never_fails_a_request() {
    let up = Upstream::start("app");
    let hanging = Collector::start(true);
    let admin = free_addr();
    let gw = Gateway::start(&config(&up, admin, &tracing_to(&hanging, "")));
    let metric = |name: &str| -> f64 {
        request(admin, "GET", "/metrics", &[], None)
            .body_str()
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    // The queue fills while the export hangs: spans are dropped, counted,
    // and every request is answered.
    let mut conn = common::Conn::open(gw.addr);
    let mut dropped = false;
    for _ in 0..40 {
        for _ in 0..500 {
            assert_eq!(conn.get("/orders").unwrap().status, 200);
        }
        if metric("portcullis_trace_spans_dropped_total") > 0.0 {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "no span was counted as dropped");
    // A collector that is not there: exports fail, counted; requests pass.
    let down = free_addr();
    let admin2 = free_addr();
    let gw2 = Gateway::start(&config(
        &up,
        admin2,
        &format!("[tracing]\notlp_endpoint = \"http://{down}/v1/traces\"\n"),
    ));
    assert_eq!(request(gw2.addr, "GET", "/orders", &[], None).status, 200);
    let failures = || {
        request(admin2, "GET", "/metrics", &[], None)
            .body_str()
            .lines()
            .any(|l| l.starts_with("portcullis_trace_export_failures_total") && !l.ends_with(" 0"))
    };
    assert!(
        wait_until(Duration::from_secs(10), failures),
        "no failed export counted"
    );
    assert_eq!(request(gw2.addr, "GET", "/orders", &[], None).status, 200);
}

#[test]
fn tracing_mistakes_are_refused_at_load() {
    let up = Upstream::start("app");
    for (tracing, expected) in [
        (
            "[tracing]\notlp_endpoint = \"grpc://x:4317\"\n",
            "http:// or https:// URL",
        ),
        (
            "[tracing]\notlp_endpoint = \"http://x/v1/traces\"\nsample_ratio = 1.5\n",
            "from 0.0 to 1.0",
        ),
        ("[tracing]\nservice_name = \"a\"\n", "otlp_endpoint"),
        (
            "[tracing]\notlp_endpoint = \"http://x/v1/traces\"\nratio = 1\n",
            "unknown key `ratio`",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        let text = format!(
            "[[listeners]]\nname = \"h\"\nlisten = \"127.0.0.1:1\"\n\n{}",
            config(&up, free_addr(), tracing)
        );
        std::fs::write(&path, text).unwrap();
        let out = check(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{tracing} was accepted");
        assert!(stderr.contains(expected), "{tracing}: {stderr}");
        assert!(stderr.contains("t.toml:"), "{stderr}");
    }
}
