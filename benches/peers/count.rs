//! `--instructions`: every server runs under callgrind, and each row gets
//! warm-up requests and then counted ones, one after another on one
//! keep-alive connection. Counts repeat to a fraction of a percent where
//! req/s on a shared machine drifts by tens: they are the server's own
//! user-space work, without the kernel's socket work or the origin's.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::client::Conn;
use crate::rows::Credential;
use crate::{Args, Fleet, Target};

/// Instructions per request of each target (`None`: not countable).
pub(crate) fn instructions(
    args: &Args,
    fleet: &Fleet,
    targets: &[Target],
    tokens: &[String],
) -> Result<Vec<Option<u64>>, String> {
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
        let mut conn = Conn::try_open(target.addr).map_err(|e| e.to_string())?;
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
                let headers: Vec<(&str, &str)> = header
                    .and_then(|h| h.split_once(": "))
                    .into_iter()
                    .collect();
                let resp = conn
                    .request("GET", target.row.path, &headers, None)
                    .map_err(|e| format!("{}: {e}", target.row.name))?;
                if resp.status != target.row.status {
                    return Err(format!("{} answered {}", target.row.name, resp.status));
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
