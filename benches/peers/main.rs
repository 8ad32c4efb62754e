//! Throughput, latency and instructions per request of Portcullis against
//! the proxies a user would pick instead, all in one run on loopback.
//!
//! `scripts/bench.sh [--quick | --instructions | --only jwt,401 ...]`
//! (a wrapper around `cargo bench --bench peers -- ...`); `--help` lists
//! every option. README "Benchmarks" says how to read the output. Without
//! `--bench` (as `cargo test` runs it) it only checks that every
//! configuration it would write is accepted.

// The test harness: the test binary uses all of it, and panics are how
// it reports a broken setup.
#[allow(
    dead_code,
    unreachable_pub,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used
)]
#[path = "../../tests/it/common/mod.rs"]
mod common;
mod count;
mod load;
mod report;
mod rows;
mod servers;
mod tokens;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;

use load::{Load, Run, Wrk};
use rows::{Credential, Peer, Row, ROWS};
use servers::{Instance, Server, Setup};
use tokens::Credentials;

#[derive(Parser)]
#[command(about = "Portcullis against nginx, HAProxy, Caddy, pingap and bare Pingora")]
struct Args {
    /// Rounds; rows are interleaved within a round, the first row rotating.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of discarded warm-up before each run.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// The CPU of every server (origin and proxy share it).
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// The CPU of wrk.
    #[arg(long, default_value_t = 1)]
    wrk_cpu: usize,
    /// Only rows whose name contains one of these (comma-separated);
    /// `direct` and `nginx` always run.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// A smoke run: 2 s, one round.
    #[arg(long)]
    quick: bool,
    /// Count instructions per request under callgrind instead of timing.
    #[arg(long)]
    instructions: bool,
    /// Counted requests per row with `--instructions`.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Distinct tokens of the uncached JWT rows.
    #[arg(long, default_value_t = 10_000)]
    distinct: usize,
    /// Where the plot of throughput and p99 per row goes (needs gnuplot).
    #[arg(long, default_value = "target/bench/peers.png")]
    plot: PathBuf,
    /// Keep the run's directory (configurations, logs).
    #[arg(long)]
    keep: bool,
    /// Passed by `cargo bench`; without it, only the configurations are checked.
    #[arg(long, hide = true)]
    bench: bool,
    /// Be the gRPC origin on this address (the bench starts itself so).
    #[arg(long, hide = true)]
    grpc_origin: Option<SocketAddr>,
}

fn main() {
    let mut args = Args::parse();
    let result = if let Some(addr) = args.grpc_origin {
        servers::serve_grpc(addr)
    } else if args.bench {
        if args.quick {
            args.duration = 2;
            args.rounds = 1;
        }
        bench(&args)
    } else {
        check_configs()
    };
    if let Err(e) = result {
        eprintln!("peers: {e}");
        std::process::exit(1);
    }
}

/// A smoke test for `cargo test`: the gateway accepts what the bench writes.
fn check_configs() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let creds = Credentials::create(dir.path(), 2)?;
    let setup = Setup {
        dir: dir.path(),
        origin: common::free_addr(),
        grpc_origin: common::free_addr(),
        hanging_collector: common::free_addr(),
        connections: 64,
        creds: &creds,
        callgrind: false,
    };
    for instance in [
        Instance::Plain,
        Instance::Logged,
        Instance::Redis,
        Instance::Traced,
        Instance::TracedHanging,
        Instance::Chained,
    ] {
        let text = servers::portcullis_config(
            &setup,
            dir.path(),
            common::free_addr(),
            common::free_addr(),
            instance,
            Some("redis://127.0.0.1:1"),
        );
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("keys.toml"), "").map_err(|e| e.to_string())?;
        let out = common::gateway::check(&path);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    load::parse("    50%  1.00ms\n    99%  2.00s\n  1 requests in 1s\nRequests/sec: 1.0\n")
        .ok_or_else(|| "wrk output parser".to_string())?;
    let h2 = load::parse_h2load(
        "finished in 1.00s, 10.00 req/s, 1KB/s\n\
         requests: 10 total, 10 started, 10 done, 9 succeeded, 1 failed, 0 errored, 0 timeout\n\
         status codes: 9 2xx, 0 3xx, 1 4xx, 0 5xx\n",
    )
    .ok_or_else(|| "h2load output parser".to_string())?;
    if (h2.requests, h2.non_2xx, h2.rps) != (10, 1, 10.0) {
        return Err("h2load output parser".into());
    }
    println!(
        "peers: the gateway accepts every benchmark configuration (measure with scripts/bench.sh)"
    );
    Ok(())
}

/// The running servers, by peer.
struct Fleet {
    servers: Vec<(Peer, Server)>,
    addrs: HashMap<Peer, SocketAddr>,
    /// The shared store of the Redis instance.
    redis: Option<common::redis::RedisServer>,
    skipped: Vec<String>,
}

impl Fleet {
    fn add(&mut self, peer: Peer, started: Result<Server, String>) {
        match started {
            Ok(server) => {
                self.addrs.insert(peer, server.addr());
                self.servers.push((peer, server));
            }
            Err(e) => self.skipped.push(format!("{peer:?}: {e}")),
        }
    }

    fn server(&self, peer: Peer) -> Option<&Server> {
        let peer = match peer {
            Peer::HaproxyTcp | Peer::HaproxyH2c | Peer::HaproxyGrpc => Peer::Haproxy,
            Peer::NginxH2c | Peer::NginxGrpc => Peer::Nginx,
            Peer::PortcullisH2c | Peer::PortcullisGrpc => Peer::Portcullis(Instance::Plain),
            other => other,
        };
        self.servers
            .iter()
            .find(|(p, _)| *p == peer)
            .map(|(_, s)| s)
    }
}

fn wanted(args: &Args, row: &Row) -> bool {
    args.only.is_empty()
        || row.name == "direct"
        || row.name == "nginx"
        || args.only.iter().any(|o| row.name.contains(o.as_str()))
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

fn bench(args: &Args) -> Result<(), String> {
    // Every server inherits the bench's CPU; wrk gets its own.
    let pid = std::process::id().to_string();
    let pinned = Command::new("taskset")
        .args(["-a", "-cp", &args.server_cpu.to_string(), &pid])
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    if !pinned.status.success() {
        return Err(format!("cannot pin to CPU {}", args.server_cpu));
    }
    let run_dir = tempfile::Builder::new()
        .prefix("portcullis-peers-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dir = run_dir.path();
    let rows: Vec<&Row> = ROWS.iter().filter(|r| wanted(args, r)).collect();
    let needs = |peer: Peer| rows.iter().any(|r| r.peer == peer);
    let distinct = if rows.iter().any(|r| r.credential == Credential::Tokens) {
        args.distinct
    } else {
        1
    };
    let creds = Credentials::create(dir, distinct)?;
    let unset = SocketAddr::from(([127, 0, 0, 1], 0));
    // Accepts and never answers: the exporter's posts hang until they
    // time out, and the queue fills and drops.
    let hanging = needs(Peer::Portcullis(Instance::TracedHanging))
        .then(|| common::sink::Sink::start(common::sink::Mode::Hang));
    let setup = Setup {
        dir,
        origin: unset,
        grpc_origin: unset,
        hanging_collector: hanging.as_ref().map_or(unset, |s| s.addr),
        connections: args.connections,
        creds: &creds,
        callgrind: args.instructions,
    };
    let origin = servers::origin(dir, args.connections, &creds)?;
    let grpc_origin = if rows.iter().any(|r| r.grpc) {
        Some(servers::grpc_origin(&setup)?)
    } else {
        None
    };
    let setup = Setup {
        origin: origin.addr(),
        // Without gRPC rows the peers' gRPC upstreams name the HTTP origin:
        // nginx refuses port 0, and nothing is sent there.
        grpc_origin: grpc_origin.as_ref().map_or(origin.addr(), Server::addr),
        ..setup
    };
    let mut fleet = Fleet {
        servers: Vec::new(),
        addrs: HashMap::from([(Peer::Direct, origin.addr())]),
        redis: None,
        skipped: Vec::new(),
    };
    if let Some(server) = grpc_origin {
        fleet.add(Peer::GrpcDirect, Ok(server));
    }
    let grpc_body = dir.join("grpc-check.bin");
    std::fs::write(&grpc_body, load::GRPC_CHECK).map_err(|e| e.to_string())?;
    let (api_key, keys_entry) = servers::api_key()?;
    start_fleet(args, &setup, &mut fleet, &needs, &keys_entry)?;
    let script = load::tokens_script(dir, &creds.tokens_file)?;
    let proofs_file = dir.join("dpop-proofs.txt");
    let dpop_script = load::dpop_script(dir, &proofs_file, &creds.dpop.authorization)?;
    let bearer = format!("Authorization: Bearer {}", creds.token);
    let key_header = format!("x-api-key: {api_key}");
    let mut present = Vec::new();
    for row in rows {
        let Some(&addr) = fleet.addrs.get(&row.peer) else {
            continue;
        };
        let header = match row.credential {
            Credential::Token => Some(bearer.as_str()),
            Credential::ApiKey => Some(key_header.as_str()),
            Credential::None | Credential::Tokens | Credential::Dpop => None,
        };
        let first_token = format!("Authorization: Bearer {}", creds.tokens[0]);
        let probe_headers: Vec<(String, String)> = match row.credential {
            Credential::Tokens => split_header(&first_token),
            Credential::Dpop => vec![
                ("authorization".into(), creds.dpop.authorization.clone()),
                ("dpop".into(), one_proof(&creds.dpop, row)?),
            ],
            _ => header.map(split_header).unwrap_or_default(),
        };
        // Other h2c rows: the warm-up checks them (the probe speaks
        // HTTP/1.1), but only a gRPC probe sees the call's grpc-status.
        if row.grpc {
            probe_grpc(row, addr)?;
        } else if !row.h2 {
            probe(row, addr, &probe_headers)?;
        }
        present.push(Target {
            row,
            addr,
            header: header.map(str::to_string),
            tokens: match row.credential {
                Credential::Tokens => Some(script.clone()),
                Credential::Dpop => Some(dpop_script.clone()),
                _ => None,
            },
            body: row.grpc.then_some(grpc_body.as_path()),
        });
    }
    report::header(args, &fleet.skipped);
    if args.instructions {
        let counts = count::instructions(args, &fleet, &present, &creds)?;
        report::instructions(&present, &counts);
        report::stages(&present, dir, args.requests);
    } else {
        let runs = measure(args, &present, &creds, &proofs_file)?;
        report::throughput(&present, &runs);
        report::plot(&present, &runs, &args.plot);
    }
    if args.keep {
        println!("kept {}", run_dir.keep().display());
    }
    drop(hanging);
    Ok(())
}

/// `Name: value` as a header pair.
fn split_header(h: &str) -> Vec<(String, String)> {
    h.split_once(": ")
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .into_iter()
        .collect()
}

/// The `htu` of a DPoP row's proofs for a client that sends
/// `Host: localhost` (the harness's), as the probe and the counting client
/// do.
pub(crate) fn local_htu(row: &Row) -> String {
    format!("http://localhost{}", row.path)
}

fn one_proof(dpop: &tokens::Dpop, row: &Row) -> Result<String, String> {
    dpop.proofs(&local_htu(row), 1)?
        .pop()
        .ok_or_else(|| "no proof minted".to_string())
}

/// DPoP proofs a run cannot outrun: a proof costs a signature check, so
/// the DPoP route stays well below this.
const PROOFS_PER_SECOND: u64 = 8_000;

fn start_fleet(
    args: &Args,
    setup: &Setup,
    fleet: &mut Fleet,
    needs: &dyn Fn(Peer) -> bool,
    keys_entry: &str,
) -> Result<(), String> {
    if [Peer::Nginx, Peer::NginxH2c, Peer::NginxGrpc]
        .into_iter()
        .any(needs)
    {
        match servers::nginx(setup) {
            Ok((server, h2, grpc)) => {
                fleet.addrs.insert(Peer::NginxH2c, h2);
                fleet.addrs.insert(Peer::NginxGrpc, grpc);
                fleet.add(Peer::Nginx, Ok(server));
            }
            Err(e) => fleet.add(Peer::Nginx, Err(e)),
        }
    }
    let haproxy = [
        Peer::Haproxy,
        Peer::HaproxyTcp,
        Peer::HaproxyH2c,
        Peer::HaproxyGrpc,
    ];
    if haproxy.into_iter().any(needs) && installed("haproxy") {
        match servers::haproxy(setup) {
            Ok((server, [tcp, h2, grpc])) => {
                fleet.addrs.insert(Peer::HaproxyTcp, tcp);
                fleet.addrs.insert(Peer::HaproxyH2c, h2);
                fleet.addrs.insert(Peer::HaproxyGrpc, grpc);
                fleet.add(Peer::Haproxy, Ok(server));
            }
            Err(e) => fleet.add(Peer::Haproxy, Err(e)),
        }
    }
    // Go under valgrind counts its runtime more than its proxying.
    if needs(Peer::Caddy) && installed("caddy") && !args.instructions {
        fleet.add(Peer::Caddy, servers::caddy(setup));
    }
    let pingap = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers/pingap/bin/pingap");
    if needs(Peer::Pingap) {
        if pingap.exists() {
            fleet.add(Peer::Pingap, servers::pingap(setup, &pingap));
        } else {
            fleet.skipped.push(
                "pingap: not built (cargo install pingap@0.13.1 --locked --root target/peers/pingap)"
                    .into(),
            );
        }
    }
    let baseline = Path::new(common::gateway::BIN).with_file_name("examples/pingora_baseline");
    if needs(Peer::Pingora) {
        if baseline.exists() {
            fleet.add(Peer::Pingora, servers::pingora(setup, &baseline));
        } else {
            fleet.skipped.push(
                "pingora bare: not built (cargo build --release --example pingora_baseline)".into(),
            );
        }
    }
    for instance in [
        Instance::Plain,
        Instance::Logged,
        Instance::Traced,
        Instance::TracedHanging,
        Instance::Chained,
    ] {
        let h2 = instance == Instance::Plain
            && (needs(Peer::PortcullisH2c) || needs(Peer::PortcullisGrpc));
        if needs(Peer::Portcullis(instance)) || h2 {
            let started = servers::portcullis(setup, instance, keys_entry, None);
            if let (Ok((_, h2)), Instance::Plain) = (&started, instance) {
                fleet.addrs.insert(Peer::PortcullisH2c, *h2);
                fleet.addrs.insert(Peer::PortcullisGrpc, *h2);
            }
            fleet.add(Peer::Portcullis(instance), started.map(|(s, _)| s));
        }
    }
    if needs(Peer::Portcullis(Instance::Redis)) && installed("redis-server") {
        let redis = common::redis::RedisServer::start();
        let url = redis.url();
        fleet.redis = Some(redis);
        let started = servers::portcullis(setup, Instance::Redis, keys_entry, Some(&url));
        fleet.add(Peer::Portcullis(Instance::Redis), started.map(|(s, _)| s));
    }
    Ok(())
}

/// A row with the address and credentials it runs with.
pub(crate) struct Target<'a> {
    pub(crate) row: &'a Row,
    pub(crate) addr: SocketAddr,
    pub(crate) header: Option<String>,
    pub(crate) tokens: Option<PathBuf>,
    /// The request body of a gRPC row.
    pub(crate) body: Option<&'a Path>,
}

impl Target<'_> {
    fn load(&self) -> Load<'_> {
        Load {
            url: format!("http://{}{}", self.addr, self.row.path),
            header: self.header.as_deref(),
            tokens_script: self.tokens.as_deref(),
            grpc_body: self.body,
        }
    }
}

/// One request before measuring: a row that answers wrongly is a broken
/// configuration, not a result.
fn probe(row: &Row, addr: SocketAddr, headers: &[(String, String)]) -> Result<(), String> {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let resp = common::client::Conn::try_open(addr)
        .and_then(|mut c| c.request("GET", row.path, &headers, None))
        .map_err(|e| format!("{}: {e}", row.name))?;
    if resp.status != row.status {
        return Err(format!(
            "{} answered {} (expected {}): {}",
            row.name,
            resp.status,
            row.status,
            resp.body_str()
        ));
    }
    Ok(())
}

/// One call before measuring a gRPC row: HTTP 200 alone says nothing,
/// the call's `grpc-status` must be 0.
fn probe_grpc(row: &Row, addr: SocketAddr) -> Result<(), String> {
    let resp = common::h2c::send(
        addr,
        "bench.example",
        "POST",
        row.path,
        &[("content-type", "application/grpc"), ("te", "trailers")],
        Some(load::GRPC_CHECK),
    );
    let status = grpc_status(&resp);
    if resp.status != 200 || status != Some("0") {
        return Err(format!(
            "{} answered {} with grpc-status {status:?}",
            row.name, resp.status
        ));
    }
    Ok(())
}

/// A call's `grpc-status`: from its trailers, or from its headers for a
/// Trailers-Only answer.
pub(crate) fn grpc_status(resp: &common::h2c::H2Response) -> Option<&str> {
    resp.trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| resp.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
}

/// Rounds of wrk runs, rows interleaved and rotated: `runs[row][round]`.
fn measure(
    args: &Args,
    targets: &[Target],
    creds: &Credentials,
    proofs_file: &Path,
) -> Result<Vec<Vec<Run>>, String> {
    let wrk = Wrk {
        connections: args.connections,
        cpu: args.wrk_cpu,
    };
    let run = |target: &Target, seconds: u64| {
        // Fresh proofs for each run (their `iat` is now), for wrk's Host.
        if target.row.credential == Credential::Dpop {
            let htu = format!("http://{}{}", target.addr, target.row.path);
            let n = usize::try_from((seconds + 1) * PROOFS_PER_SECOND).unwrap_or(usize::MAX);
            let proofs = creds.dpop.proofs(&htu, n)?;
            std::fs::write(proofs_file, proofs.join("\n") + "\n").map_err(|e| e.to_string())?;
        }
        let load = target.load();
        if target.row.h2 {
            wrk.run_h2load(&load, seconds)
        } else {
            wrk.run(&load, seconds)
        }
    };
    let mut runs = vec![Vec::new(); targets.len()];
    for round in 0..args.rounds {
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            let target = &targets[i];
            if args.warmup > 0 {
                let warm = run(target, args.warmup)?;
                if !answered_as_expected(target.row, &warm) {
                    return Err(format!(
                        "{} answered {} unexpected statuses of {} in its warm-up",
                        target.row.name,
                        unexpected(target.row, &warm),
                        warm.requests
                    ));
                }
            }
            let measured = run(target, args.duration)?;
            report::progress(round, args.rounds, target.row, &measured);
            runs[i].push(measured);
        }
    }
    Ok(runs)
}

/// wrk counts every non-2xx: a 401 row must have only those.
pub(crate) fn unexpected(row: &Row, run: &Run) -> u64 {
    let wrong = if row.status == 200 {
        run.non_2xx
    } else {
        run.requests.saturating_sub(run.non_2xx)
    };
    wrong + run.socket_errors
}

fn answered_as_expected(row: &Row, run: &Run) -> bool {
    run.requests > 0 && unexpected(row, run) == 0
}
