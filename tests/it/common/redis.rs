//! A real `redis-server` on a free loopback port, without persistence, for
//! the shared rate-limit store. `stop` and `restart` (same port) simulate
//! an outage; Drop kills it. [`RedisServer::start_tls`] adds a TLS port,
//! [`RedisCluster`] makes three of them one Redis Cluster, and
//! [`RedisSentinel`] a primary, its replica and a sentinel watching them.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::gateway::free_port;

/// Where CI and the dev machine install it.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";
pub const REDIS_CLI: &str = "/usr/bin/redis-cli";
/// How long `start`/`restart` wait for `PING` to answer.
pub const REDIS_START_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(25);
/// How long `stop` waits for the killed process to be reaped.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RedisServer {
    port: u16,
    tls_port: Option<u16>,
    /// A configuration file, which comes first (a sentinel's).
    conf: Option<PathBuf>,
    /// Arguments beyond the harness's own, kept for `restart`.
    args: Vec<OsString>,
    dir: TempDir,
    child: Option<Child>,
}

/// The PEM texts of a TLS server, and whether it asks clients for a
/// certificate (`--tls-auth-clients`).
pub struct TlsFiles<'a> {
    pub cert: &'a str,
    pub key: &'a str,
    pub ca: &'a str,
    pub auth_clients: bool,
}

impl RedisServer {
    /// Starts a server on a fresh port; panics if it does not answer in time.
    pub fn start() -> Self {
        Self::start_with(|_| Vec::new(), None)
    }

    /// A server that also listens with TLS on [`Self::tls_url`]; the plain
    /// port stays for the test's own commands.
    pub fn start_tls(files: &TlsFiles<'_>) -> Self {
        Self::start_with(
            |dir| {
                let write = |name: &str, text: &str| {
                    let path = dir.join(name);
                    std::fs::write(&path, text).expect("write redis TLS file");
                    path.into_os_string()
                };
                vec![
                    "--tls-cert-file".into(),
                    write("server.pem", files.cert),
                    "--tls-key-file".into(),
                    write("server.key", files.key),
                    "--tls-ca-cert-file".into(),
                    write("ca.pem", files.ca),
                    "--tls-auth-clients".into(),
                    if files.auth_clients { "yes" } else { "no" }.into(),
                ]
            },
            Some(free_port()),
        )
    }

    /// `args` gets the server's directory.
    fn start_with(
        args: impl FnOnce(&std::path::Path) -> Vec<OsString>,
        tls_port: Option<u16>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir for redis");
        let mut server = RedisServer {
            port: free_port(),
            tls_port,
            conf: None,
            args: args(dir.path()),
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TLS port's URL, by the name its certificate is for.
    pub fn tls_url(&self, host: &str) -> String {
        let port = self.tls_port.expect("a server started with start_tls");
        format!("rediss://{host}:{port}")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(POLL);
            }
            panic!(
                "redis-server on port {} did not exit after SIGKILL",
                self.port
            );
        }
    }

    /// Starts a fresh, empty server on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Sends one inline command and returns the first reply line.
    pub fn command(&self, line: &str) -> std::io::Result<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(format!("{line}\r\n").as_bytes())?;
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        // Bounded: a reply line longer than 64 KiB is not one we send for.
        for _ in 0..65_536 {
            if stream.read(&mut byte)? == 0 || byte[0] == b'\n' {
                break;
            }
            reply.push(byte[0]);
        }
        Ok(String::from_utf8_lossy(&reply).trim_end().to_string())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) {
        let child = Command::new(REDIS_SERVER)
            .args(&self.conf)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "yes"])
            .args(
                self.tls_port
                    .map(|p| vec!["--tls-port".to_string(), p.to_string()])
                    .unwrap_or_default(),
            )
            .args(&self.args)
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {REDIS_SERVER}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + REDIS_START_TIMEOUT;
        while Instant::now() < deadline {
            if self.command("PING").map(|r| r == "+PONG").unwrap_or(false) {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                    panic!("redis-server exited with {status}:\n{log}");
                }
            }
            std::thread::sleep(POLL);
        }
        panic!(
            "redis-server on port {} did not answer PING in time",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three masters (no replicas) on loopback ports, every slot assigned:
/// `redis-cli --cluster create`. Each node's `nodes.conf` is in its own
/// directory, so a node restarted on its port rejoins with its slots
/// (and no data).
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

/// A killed node is marked failed (and the cluster down, as its slots are
/// uncovered) after this.
const NODE_TIMEOUT_MS: &str = "2000";

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(
                    |_| {
                        // The bus port defaults to port + 10000, which
                        // may be taken or past 65535.
                        let bus = free_port().to_string();
                        [
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            "nodes.conf",
                            "--cluster-node-timeout",
                            NODE_TIMEOUT_MS,
                            "--cluster-port",
                            &bus,
                        ]
                        .into_iter()
                        .map(OsString::from)
                        .collect()
                    },
                    None,
                )
            })
            .collect();
        let cluster = RedisCluster { nodes };
        let out = Command::new(REDIS_CLI)
            .arg("--cluster")
            .arg("create")
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", n.port)),
            )
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {REDIS_CLI}: {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            cluster.wait_ok(),
            "the cluster did not reach cluster_state:ok"
        );
        cluster
    }

    /// Seed URLs, one per node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Whether every running node says `cluster_state:ok` within the
    /// bound.
    pub fn wait_ok(&self) -> bool {
        super::wait_until(Duration::from_secs(20), || {
            self.nodes
                .iter()
                .filter(|n| n.child.is_some())
                .all(|n| n.cluster_state() == "ok")
        })
    }
}

impl RedisServer {
    /// `cluster_state` of `CLUSTER INFO` ("ok", "fail"), empty when the
    /// node does not answer.
    pub fn cluster_state(&self) -> String {
        self.cluster_info()
            .lines()
            .find_map(|l| l.strip_prefix("cluster_state:"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    fn cluster_info(&self) -> String {
        self.cli(&["cluster", "info"])
    }
}

/// The name the sentinel monitors.
pub const SENTINEL_MASTER: &str = "mymaster";

/// A primary, its replica, and one sentinel (quorum 1) that fails over to
/// the replica a second after the primary stops answering.
pub struct RedisSentinel {
    pub primary: RedisServer,
    pub replica: RedisServer,
    pub sentinel: RedisServer,
}

impl RedisSentinel {
    pub fn start() -> Self {
        let primary = RedisServer::start();
        let replica = RedisServer::start_with(
            |_| {
                ["--replicaof", "127.0.0.1", &primary.port.to_string()]
                    .into_iter()
                    .map(OsString::from)
                    .collect()
            },
            None,
        );
        let dir = tempfile::tempdir().expect("tempdir for redis");
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                 sentinel failover-timeout {SENTINEL_MASTER} 3000\n",
                primary.port
            ),
        )
        .expect("write sentinel.conf");
        let mut sentinel = RedisServer {
            port: free_port(),
            tls_port: None,
            conf: Some(conf),
            args: vec!["--sentinel".into()],
            dir,
            child: None,
        };
        sentinel.spawn();
        let watched = RedisSentinel {
            primary,
            replica,
            sentinel,
        };
        // A failover needs a replica the sentinel knows and that is in
        // sync.
        assert!(
            super::wait_until(Duration::from_secs(20), || {
                watched
                    .replica
                    .cli(&["info", "replication"])
                    .contains("master_link_status:up")
                    && watched
                        .sentinel
                        .cli(&["sentinel", "replicas", SENTINEL_MASTER])
                        .contains(&watched.replica.port.to_string())
            }),
            "the sentinel never saw the replica"
        );
        watched
    }

    pub fn url(&self) -> String {
        self.sentinel.url()
    }

    /// The port of the primary the sentinel names now.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinel
            .cli(&["sentinel", "get-master-addr-by-name", SENTINEL_MASTER])
            .lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
    }
}

impl RedisServer {
    /// `redis-cli -p PORT ARGS...`'s output, empty when it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        Command::new(REDIS_CLI)
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}
