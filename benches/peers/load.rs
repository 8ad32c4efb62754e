//! One wrk run against one row, and what it printed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// wrk's threads (its connections are spread over them).
pub(crate) const WRK_THREADS: usize = 1;

/// How wrk is run: the same for every row.
pub(crate) struct Wrk {
    pub(crate) connections: usize,
    pub(crate) cpu: usize,
}

/// The request of a row: a path, an optional header, and optionally a file
/// of tokens sent one per request, round robin.
pub(crate) struct Load<'a> {
    pub(crate) url: String,
    pub(crate) header: Option<&'a str>,
    pub(crate) tokens_script: Option<&'a Path>,
    /// A gRPC row's request message, sent as the body of every call.
    pub(crate) grpc_body: Option<&'a Path>,
}

/// One gRPC message frame (uncompressed, 0 bytes long): an empty
/// `HealthCheckRequest`, the check of the whole server.
pub(crate) const GRPC_CHECK: &[u8] = &[0, 0, 0, 0, 0];

/// What one run measured.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Run {
    pub(crate) rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub(crate) requests: u64,
    pub non_2xx: u64,
    pub(crate) socket_errors: u64,
}

impl Wrk {
    pub(crate) fn run(&self, load: &Load, seconds: u64) -> Result<Run, String> {
        let mut cmd = Command::new("taskset");
        cmd.args([
            "-c",
            &self.cpu.to_string(),
            "wrk",
            "-t",
            &WRK_THREADS.to_string(),
        ])
        .args(["-c", &self.connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "--latency"]);
        if let Some(header) = load.header {
            cmd.args(["-H", header]);
        }
        if let Some(script) = load.tokens_script {
            cmd.arg("-s").arg(script);
        }
        let out = cmd
            .arg(&load.url)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run wrk: {e} (Debian: apt-get install wrk)"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "wrk failed against {}: {text}{}",
                load.url,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        parse(&text).ok_or_else(|| format!("cannot read wrk's output for {}:\n{text}", load.url))
    }
}

impl Wrk {
    /// The same load over h2c by prior knowledge: h2load with one stream
    /// per connection, so `connections` requests are in flight as with
    /// wrk. h2load reports no percentiles: p50 and p99 are left out.
    pub(crate) fn run_h2load(&self, load: &Load, seconds: u64) -> Result<Run, String> {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &self.cpu.to_string(), "h2load", "-t", "1", "-m", "1"])
            .args(["-c", &self.connections.to_string()])
            .args(["-D", &seconds.to_string()]);
        if let Some(header) = load.header {
            cmd.args(["-H", header]);
        }
        if let Some(body) = load.grpc_body {
            cmd.arg("-d").arg(body);
            cmd.args(["-H", "content-type: application/grpc", "-H", "te: trailers"]);
        }
        let out = cmd
            .arg(&load.url)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                format!("cannot run h2load: {e} (Debian: apt-get install nghttp2-client)")
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_h2load(&text)
            .ok_or_else(|| format!("cannot read h2load's output for {}:\n{text}", load.url))
    }
}

/// `finished in 10.00s, 12345.60 req/s, ...`, `requests: N total, ...
/// S succeeded, F failed, E errored, T timeout`, `status codes: A 2xx, ...`.
pub(crate) fn parse_h2load(text: &str) -> Option<Run> {
    let mut run = Run {
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        ..Run::default()
    };
    let mut rps = None;
    let count = |words: &[&str], what: &str| {
        words
            .windows(2)
            .find(|w| w[1].trim_end_matches(',') == what)
            .and_then(|w| w[0].parse::<u64>().ok())
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["finished", "in", _, r, "req/s,", ..] => rps = r.parse().ok(),
            ["requests:", ..] => {
                run.requests = count(&words, "done")?;
                run.socket_errors = count(&words, "errored")? + count(&words, "timeout")?;
            }
            ["status", "codes:", ..] => {
                run.non_2xx = count(&words, "3xx")? + count(&words, "4xx")? + count(&words, "5xx")?;
            }
            _ => {}
        }
    }
    run.rps = rps?;
    Some(run)
}

/// A Lua script for wrk that sends the tokens of `tokens_file` as bearer
/// tokens, a different one on each request.
pub(crate) fn tokens_script(dir: &Path, tokens_file: &Path) -> Result<PathBuf, String> {
    let script = format!(
        "local tokens = {{}}\n\
         for line in io.lines(\"{}\") do tokens[#tokens + 1] = \"Bearer \" .. line end\n\
         local i = 0\n\
         request = function()\n\
           i = i % #tokens + 1\n\
           return wrk.format(nil, nil, {{ [\"Authorization\"] = tokens[i] }})\n\
         end\n",
        tokens_file.display()
    );
    let path = dir.join("tokens.lua");
    fs::write(&path, script).map_err(|e| e.to_string())?;
    Ok(path)
}

/// A Lua script for wrk that sends `authorization` and, on each request,
/// the next DPoP proof of `proofs_file` (one per line), read when each
/// thread starts; thread `k` of [`WRK_THREADS`] takes lines `k`, `k + n`, …,
/// so no proof is sent twice. Once they run out the header is empty and
/// the gateway's refusals show as unexpected statuses.
pub(crate) fn dpop_script(
    dir: &Path,
    proofs_file: &Path,
    authorization: &str,
) -> Result<PathBuf, String> {
    let script = format!(
        "local next_thread = 0\n\
         function setup(thread)\n\
           thread:set(\"thread_id\", next_thread)\n\
           next_thread = next_thread + 1\n\
         end\n\
         local proofs = {{}}\n\
         local i = 0\n\
         function init(args)\n\
           local n = 0\n\
           for line in io.lines(\"{}\") do\n\
             if n % {WRK_THREADS} == thread_id then proofs[#proofs + 1] = line end\n\
             n = n + 1\n\
           end\n\
         end\n\
         function request()\n\
           i = i + 1\n\
           return wrk.format(nil, nil, {{ [\"Authorization\"] = \"{authorization}\", [\"DPoP\"] = proofs[i] or \"\" }})\n\
         end\n",
        proofs_file.display()
    );
    let path = dir.join("dpop.lua");
    fs::write(&path, script).map_err(|e| e.to_string())?;
    Ok(path)
}

pub(crate) fn parse(text: &str) -> Option<Run> {
    let mut run = Run::default();
    let (mut p50, mut p99, mut rps) = (None, None, None);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => p50 = millis(v),
            ["99%", v] => p99 = millis(v),
            ["Requests/sec:", v] => rps = v.parse().ok(),
            [n, "requests", "in", ..] => run.requests = n.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => run.non_2xx = n.parse().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                run.socket_errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    run.rps = rps?;
    run.p50_ms = p50?;
    run.p99_ms = p99?;
    Some(run)
}

/// wrk's latencies: `812.00us`, `1.23ms`, `2.00s`, `1.50m`.
fn millis(v: &str) -> Option<f64> {
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}
