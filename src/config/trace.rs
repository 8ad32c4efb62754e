//! `[tracing]` (CONTRACT §12): where spans go and which are kept.

use super::diag::Diagnostics;
use super::model::TracingConfig;
use super::reader::Table;
use super::values::required_string;

pub(super) fn tracing(d: &mut Diagnostics, root: &Table) -> Option<TracingConfig> {
    let t = root.table(d, "tracing")?;
    let endpoint = required_string(d, &t, "otlp_endpoint");
    if let Some(e) = &endpoint {
        let ok = http::Uri::try_from(e.get_ref().as_str()).is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.host().is_some_and(|h| !h.is_empty())
        });
        if !ok {
            d.error(
                e.span(),
                "`otlp_endpoint` must be an http:// or https:// URL of an OTLP/HTTP traces endpoint (http://127.0.0.1:4318/v1/traces)",
            );
        }
    }
    let service_name = t
        .string(d, "service_name")
        .map_or_else(|| "portcullis".to_string(), |s| s.into_inner());
    if service_name.is_empty() || service_name.len() > 255 {
        let span = t.raw("service_name").map_or_else(|| t.span(), |v| v.span());
        d.error(span, "`service_name` must be 1 to 255 characters");
    }
    let sample_ratio = t
        .fraction(d, "sample_ratio")
        .or_else(|| t.raw("sample_ratio").is_none().then_some(1.0));
    let trust_incoming = t.boolean(d, "trust_incoming").unwrap_or(true);
    t.finish(d);
    Some(TracingConfig {
        otlp_endpoint: endpoint?.into_inner(),
        service_name,
        sample_ratio: sample_ratio?,
        trust_incoming,
    })
}
