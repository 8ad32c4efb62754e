//! `--instructions`: every server runs under callgrind, and each row gets
//! warm-up requests and then counted ones, one after another on one
//! keep-alive connection (one HTTP/2 connection for the h2c and gRPC
//! rows, a stream per request). Counts repeat to a fraction of a percent where
//! req/s on a shared machine drifts by tens: they are the server's own
//! user-space work, without the kernel's socket work or the origin's.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::client::Conn;
use crate::common::h2c::Connection;
use crate::rows::Credential;
use crate::tokens::Credentials;
use crate::{Args, Fleet, Target};

/// The counting client of a row: HTTP/1.1 keep-alive or one h2c
/// connection.
enum Client {
    Http1(Conn),
    H2(Connection),
}

impl Client {
    fn open(target: &Target) -> Result<Client, String> {
        if target.row.h2 {
            return Ok(Client::H2(Connection::open(target.addr)));
        }
        Conn::try_open(target.addr)
            .map(Client::Http1)
            .map_err(|e| e.to_string())
    }

    /// One request; its status (a gRPC call must also end with status 0).
    fn request(&mut self, target: &Target, headers: &[(&str, &str)]) -> Result<u16, String> {
        let path = target.row.path;
        match self {
            Client::Http1(conn) => conn
                .request("GET", path, headers, None)
                .map(|r| r.status)
                .map_err(|e| e.to_string()),
            Client::H2(conn) if target.row.grpc => {
                let mut fields = vec![("content-type", "application/grpc"), ("te", "trailers")];
                fields.extend_from_slice(headers);
                let resp = conn.request(
                    "bench.example",
                    "POST",
                    path,
                    &fields,
                    Some(crate::load::GRPC_CHECK),
                );
                match crate::grpc_status(&resp) {
                    Some("0") => Ok(resp.status),
                    other => Err(format!("grpc-status {other:?}")),
                }
            }
            Client::H2(conn) => Ok(conn
                .request("bench.example", "GET", path, headers, None)
                .status),
        }
    }
}

/// Instructions per request of each target (`None`: not countable).
pub(crate) fn instructions(
    args: &Args,
    fleet: &Fleet,
    targets: &[Target],
    creds: &Credentials,
) -> Result<Vec<Option<u64>>, String> {
    let tokens = &creds.tokens;
    let warmup = (args.requests / 10).max(1);
    let mut counts = Vec::with_capacity(targets.len());
    for target in targets {
        let server = fleet.server(target.row.peer);
        let (Some(pid), Some(out)) = (
            server.and_then(|s| s.pid()),
            server.and_then(|s| s.callgrind_out()),
        ) else {
            counts.push(None);
            continue;
        };
        let mut client = Client::open(target)?;
        let proofs = if target.row.credential == Credential::Dpop {
            creds
                .dpop
                .proofs(&crate::local_htu(target.row), warmup + args.requests)?
        } else {
            Vec::new()
        };
        let mut send = |n: usize, offset: usize| -> Result<(), String> {
            for i in 0..n {
                let bearer;
                let header = match target.row.credential {
                    Credential::Tokens => {
                        bearer = format!(
                            "Authorization: Bearer {}",
                            tokens[(offset + i) % tokens.len()]
                        );
                        Some(bearer.as_str())
                    }
                    _ => target.header.as_deref(),
                };
                let mut headers: Vec<(&str, &str)> = header
                    .and_then(|h| h.split_once(": "))
                    .into_iter()
                    .collect();
                if let Some(proof) = proofs.get(offset + i) {
                    headers.push(("authorization", &creds.dpop.authorization));
                    headers.push(("dpop", proof));
                }
                let status = client
                    .request(target, &headers)
                    .map_err(|e| format!("{}: {e}", target.row.name))?;
                if status != target.row.status {
                    return Err(format!("{} answered {status}", target.row.name));
                }
            }
            Ok(())
        };
        send(warmup, 0)?;
        callgrind_control(&["-z"], pid)?;
        send(args.requests, warmup)?;
        callgrind_control(&["-d"], pid)?;
        let dump = out.with_file_name(format!("{}.callgrind", target.row.name.replace(' ', "_")));
        let total = take_newest(out, &dump)?;
        counts.push(Some(total / args.requests as u64));
    }
    Ok(counts)
}

fn callgrind_control(flags: &[&str], pid: u32) -> Result<(), String> {
    let ok = Command::new("callgrind_control")
        .args(flags)
        .arg(pid.to_string())
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(())
        .ok_or_else(|| format!("callgrind_control {flags:?} cannot reach pid {pid}"))
}

/// The instruction total of the newest dump next to `out` (`OUT.1`, ...),
/// which is then renamed to `dump`.
fn take_newest(out: &Path, dump: &Path) -> Result<u64, String> {
    let dir = out.parent().ok_or("callgrind output has no folder")?;
    let prefix = format!("{}.", out.file_name().unwrap_or_default().to_string_lossy());
    let newest = fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .ok_or_else(|| format!("callgrind wrote no dump for {}", out.display()))?
        .path();
    let text = fs::read_to_string(&newest).map_err(|e| e.to_string())?;
    fs::rename(&newest, dump).map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no instruction total in {}", newest.display()))
}

/// Where a Portcullis request's instructions go: (label, pattern of the
/// function, nested in the hook above). Async hooks are `{{closure}}`s.
const STAGES: &[(&str, &str, bool)] = &[
    ("head check", "portcullis::front::head::check", false),
    (
        "early_request_filter",
        "ProxyHttp>::early_request_filter::{{closure}}",
        false,
    ),
    (
        "request_filter",
        "ProxyHttp>::request_filter::{{closure}}",
        false,
    ),
    (
        "canonical",
        "portcullis::proxy::request::Canonical::build",
        true,
    ),
    ("route", "portcullis::proxy::stages::route", true),
    (
        "authenticate",
        "as portcullis::auth::Authenticator>::authenticate::{{closure}}",
        true,
    ),
    (
        "authorize",
        "portcullis::proxy::stages::authorize::{{closure}}",
        true,
    ),
    (
        "rate_limit",
        "portcullis::proxy::stages::rate_limit::{{closure}}",
        true,
    ),
    (
        "refusal",
        "portcullis::proxy::respond::send_reject::{{closure}}",
        true,
    ),
    (
        "upstream_peer",
        "ProxyHttp>::upstream_peer::{{closure}}",
        false,
    ),
    (
        "upstream_request_filter",
        "ProxyHttp>::upstream_request_filter::{{closure}}",
        false,
    ),
    (
        "response_filter",
        "ProxyHttp>::response_filter::{{closure}}",
        false,
    ),
    ("logging", "ProxyHttp>::logging::{{closure}}", false),
];

/// Instructions per request of each stage of [`STAGES`] found in `dump`
/// (inclusive, through `callgrind_annotate`), then what is left: Pingora,
/// tokio and the socket calls.
pub(crate) fn stages(dump: &Path, requests: usize) -> Vec<(&'static str, bool, u64)> {
    let Ok(out) = Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100", "--auto=no"])
        .arg(dump)
        .output()
    else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut total = 0u64;
    let mut found = vec![0u64; STAGES.len()];
    for line in text.lines() {
        let Some((count, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Ok(count) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        if rest.ends_with("PROGRAM TOTALS") {
            total = count;
        }
        // A function inlined from several files has an entry per file:
        // the largest is the function's own.
        let name = rest.rsplit_once(" [").map_or(rest, |(n, _)| n);
        for (i, (_, pattern, _)) in STAGES.iter().enumerate() {
            if name.ends_with(pattern) {
                found[i] = found[i].max(count);
            }
        }
    }
    let per = |n: u64| n / requests as u64;
    let top: u64 = STAGES
        .iter()
        .zip(&found)
        .filter(|((_, _, nested), _)| !nested)
        .map(|(_, n)| n)
        .sum();
    let mut rows: Vec<_> = STAGES
        .iter()
        .zip(&found)
        .filter(|(_, n)| **n > 0)
        .map(|((label, _, nested), n)| (*label, *nested, per(*n)))
        .collect();
    rows.push((
        "Pingora, tokio, sockets",
        false,
        per(total.saturating_sub(top)),
    ));
    rows
}
