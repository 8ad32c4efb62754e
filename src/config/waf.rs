//! `[waf]` and a route's `waf` / `waf_exclude_rules` (CONTRACT §14).

use std::time::Duration;

use toml::de::DeValue;

use super::diag::Diagnostics;
use super::model::{RouteWaf, WafConfig, WafMode, WafOversize};
use super::reader::Table;
use super::schema::Items;
use crate::core::location::Located;

/// Pingora replays a body read before forwarding only up to 64 KiB, so a
/// WAF route never buffers more than that for inspection.
pub(super) const MAX_INSPECT_BODY_BYTES: u64 = 64 * 1024;

/// Far above what the CRS takes on an ordinary request, so only a
/// pathological one (or a saturated pool) reaches it.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);

pub(super) fn waf(d: &mut Diagnostics, root: &Table) -> Option<WafConfig> {
    let t = root.table(d, "waf")?;
    if let Some(engine) = t.string(d, "engine") {
        if engine.get_ref() != "modsecurity" {
            d.error(
                engine.span(),
                "`engine` must be \"modsecurity\" (the only WAF engine)",
            );
        }
    }
    let rules: Vec<_> = t
        .strings(d, "rules")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| {
            if r.get_ref().is_empty() {
                d.error(r.span(), "a rule file path must not be empty");
                return None;
            }
            Some(Located {
                at: d.location(r.span()),
                value: r.into_inner(),
            })
        })
        .collect();
    if rules.is_empty() && !d.has_errors() {
        let span = t.raw("rules").map_or_else(|| t.span(), |v| v.span());
        d.error(
            span,
            "`rules` must name at least one rule file (the OWASP CRS: /etc/modsecurity/crs/crs-setup.conf, /usr/share/modsecurity-crs/rules/*.conf)",
        );
    }
    let paranoia_level = t.integer(d, "paranoia_level", 1..=4).unwrap_or(1) as u8;
    let anomaly_threshold = t.integer(d, "anomaly_threshold", 1..=10_000).unwrap_or(5) as u32;
    // A larger value (CONTRACT §14's example says 131072) is accepted and
    // inspects what can be replayed; a longer body follows `oversize`.
    let inspect_body_bytes = t
        .integer(d, "inspect_body_bytes", 0..=u64::from(u32::MAX))
        .unwrap_or(MAX_INSPECT_BODY_BYTES)
        .min(MAX_INSPECT_BODY_BYTES);
    let oversize = t
        .keyword(
            d,
            "oversize",
            WafOversize::Reject,
            &[
                ("reject", WafOversize::Reject),
                ("inspect_prefix", WafOversize::InspectPrefix),
                ("skip", WafOversize::Skip),
            ],
        )
        .unwrap_or(WafOversize::Reject);
    let timeout = t
        .duration(d, "timeout_ms", 10..=60_000, Duration::from_millis)
        .unwrap_or(DEFAULT_TIMEOUT);
    t.finish(d);
    Some(WafConfig {
        rules,
        paranoia_level,
        anomaly_threshold,
        inspect_body_bytes,
        oversize,
        timeout,
    })
}

/// A route's WAF mode; one other than `off` needs a `[waf]` section.
pub(super) fn route_waf(d: &mut Diagnostics, t: &Table, has_waf: bool) -> RouteWaf {
    let mode = t
        .keyword(
            d,
            "waf",
            WafMode::Off,
            &[
                ("off", WafMode::Off),
                ("detect", WafMode::Detect),
                ("block", WafMode::Block),
            ],
        )
        .unwrap_or(WafMode::Off);
    if mode != WafMode::Off && !has_waf {
        let span = t.raw("waf").map_or_else(|| t.span(), |v| v.span());
        d.error(span, "a route with `waf` needs a [waf] section");
    }
    let mut exclude_rules = Vec::new();
    for item in t
        .array(d, "waf_exclude_rules", Items::Integers)
        .unwrap_or_default()
    {
        let id = match item.get_ref() {
            DeValue::Integer(i) => u32::from_str_radix(i.as_str(), i.radix())
                .ok()
                .filter(|n| *n > 0),
            _ => None,
        };
        match id {
            Some(id) => exclude_rules.push(id),
            None => d.error(
                item.span(),
                "`waf_exclude_rules` holds rule ids (positive integers, e.g. 942100)",
            ),
        }
    }
    if !exclude_rules.is_empty() && mode == WafMode::Off {
        let span = t
            .raw("waf_exclude_rules")
            .map_or_else(|| t.span(), |v| v.span());
        d.error(span, "`waf_exclude_rules` only applies with `waf`");
    }
    exclude_rules.sort_unstable();
    exclude_rules.dedup();
    RouteWaf {
        mode,
        exclude_rules,
    }
}
