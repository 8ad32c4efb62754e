//! The servers of one run: the origin, the peers a user would pick instead
//! of Portcullis, and the Portcullis instances, each configured for one
//! worker thread and started through the test harness's launcher.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::common::gateway::{free_addr, run_cli, terminate, toml_str, Gateway, BIN};
use crate::tokens::{Credentials, AUDIENCE, ISSUER};

/// Everything a server's configuration depends on.
pub(crate) struct Setup<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) origin: SocketAddr,
    /// The gRPC origin (h2c) of the gRPC rows.
    pub(crate) grpc_origin: SocketAddr,
    /// An OTLP collector that accepts connections and never answers.
    pub(crate) hanging_collector: SocketAddr,
    pub(crate) connections: usize,
    pub(crate) creds: &'a Credentials,
    /// `valgrind --tool=callgrind ...` for `--instructions`, else empty.
    pub(crate) callgrind: bool,
}

impl Setup<'_> {
    fn wrapper(&self, name: &str) -> Vec<String> {
        if !self.callgrind {
            return Vec::new();
        }
        let out = self.dir.join(format!("{name}.callgrind"));
        vec![
            "valgrind".into(),
            "--tool=callgrind".into(),
            format!("--callgrind-out-file={}", out.display()),
        ]
    }

    /// Startup is some 50 times slower under valgrind.
    fn start_timeout(&self) -> Duration {
        Duration::from_secs(if self.callgrind { 300 } else { 20 })
    }

    fn nofile(&self) -> usize {
        self.connections * 4 + 1024
    }
}

/// A running server. Dropping it stops it (SIGTERM, then SIGKILL).
pub(crate) enum Server {
    Process {
        child: Option<Child>,
        addr: SocketAddr,
        callgrind_out: Option<PathBuf>,
    },
    Gateway {
        gateway: Box<Gateway>,
        callgrind_out: Option<PathBuf>,
    },
}

impl Server {
    pub(crate) fn addr(&self) -> SocketAddr {
        match self {
            Server::Process { addr, .. } => *addr,
            Server::Gateway { gateway, .. } => gateway.addr,
        }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            Server::Process { child, .. } => child.as_ref().map(Child::id),
            Server::Gateway { gateway, .. } => Some(gateway.pid()),
        }
    }

    /// Where callgrind writes this server's counts (`--instructions` only).
    pub(crate) fn callgrind_out(&self) -> Option<&Path> {
        match self {
            Server::Process { callgrind_out, .. } | Server::Gateway { callgrind_out, .. } => {
                callgrind_out.as_deref()
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Server::Process { child, .. } = self {
            if let Some(child) = child.take() {
                terminate(child);
            }
        }
    }
}

/// Starts `program args...` (under callgrind when asked), logging to
/// `DIR/NAME.log`, and waits until `addr` accepts.
fn spawn(
    setup: &Setup,
    name: &str,
    addr: SocketAddr,
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Server, String> {
    let wrapper = setup.wrapper(name);
    let mut cmd = Command::new(wrapper.first().map_or(program, String::as_str));
    if !wrapper.is_empty() {
        cmd.args(&wrapper[1..]).arg(program);
    }
    let log_path = setup.dir.join(format!("{name}.log"));
    let log = fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let child = cmd
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{name}: cannot start {program}: {e}"))?;
    let callgrind_out = setup
        .callgrind
        .then(|| setup.dir.join(format!("{name}.callgrind")));
    let mut server = Server::Process {
        child: Some(child),
        addr,
        callgrind_out,
    };
    if crate::common::gateway::wait_for_port(addr, setup.start_timeout()) {
        return Ok(server);
    }
    if let Server::Process { child, .. } = &mut server {
        if let Some(child) = child.take() {
            terminate(child);
        }
    }
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    Err(format!(
        "{name} did not accept on {addr}; its output:\n{log}"
    ))
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(path)
}

fn nginx_conf(setup: &Setup, name: &str, http: &str) -> Result<PathBuf, String> {
    let dir = setup.dir.join(name);
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let d = dir.display();
    let user = if is_root() { "user root;\n" } else { "" };
    // Under valgrind, one process: the worker is the one that counts.
    let master = if setup.callgrind {
        "master_process off;\n"
    } else {
        ""
    };
    let nofile = setup.nofile();
    let text = format!(
        "{user}{master}worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nworker_rlimit_nofile {nofile};\n\
         events {{ worker_connections {nofile}; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n{http}\n}}\n"
    );
    write(&dir, "nginx.conf", &text)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn start_nginx(setup: &Setup, name: &str, addr: SocketAddr, http: &str) -> Result<Server, String> {
    let conf = nginx_conf(setup, name, http)?;
    let prefix = format!("{}/", setup.dir.join(name).display());
    let conf = conf.display().to_string();
    spawn(
        setup,
        name,
        addr,
        "nginx",
        &["-p", &prefix, "-c", &conf, "-e", "stderr"],
        &[],
    )
}

/// The origin every row ends at: nginx answering `200 ok`. Never under
/// callgrind: it is not what is measured.
pub(crate) fn origin(
    dir: &Path,
    connections: usize,
    creds: &Credentials,
) -> Result<Server, String> {
    let addr = free_addr();
    let setup = Setup {
        dir,
        origin: addr,
        grpc_origin: addr,
        hanging_collector: addr,
        connections,
        creds,
        callgrind: false,
    };
    let http = format!("  server {{ listen {addr}; location / {{ return 200 \"ok\\n\"; }} }}");
    start_nginx(&setup, "origin", addr, &http)
}

/// The origin of the gRPC rows: this benchmark binary again, serving
/// tonic's `grpc.health.v1.Health` over h2c on one thread (see
/// [`serve_grpc`]). Never under callgrind.
pub(crate) fn grpc_origin(setup: &Setup) -> Result<Server, String> {
    let addr = free_addr();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let plain = Setup {
        callgrind: false,
        ..*setup
    };
    spawn(
        &plain,
        "grpc-origin",
        addr,
        &exe.to_string_lossy(),
        &["--grpc-origin", &addr.to_string()],
        &[],
    )
}

/// Serves tonic's health service on `addr` until killed: `Check` of the
/// empty service name answers SERVING.
pub(crate) fn serve_grpc(addr: SocketAddr) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let (_reporter, service) = tonic_health::server::health_reporter();
        tonic::transport::Server::builder()
            .add_service(service)
            .serve(addr)
            .await
            .map_err(|e| format!("gRPC origin on {addr}: {e}"))
    })
}

/// nginx as a proxy; `/headers/` also sets what Portcullis sets upstream
/// and answers (request id both ways, X-Forwarded-*), so that row compares
/// like with like.
/// Also returns the addresses of its h2c (prior knowledge) server and of
/// its gRPC proxy (`grpc_pass`, h2c both sides).
pub(crate) fn nginx(setup: &Setup) -> Result<(Server, SocketAddr, SocketAddr), String> {
    let addr = free_addr();
    let h2 = free_addr();
    let grpc = free_addr();
    let grpc_origin = setup.grpc_origin;
    let keepalive = setup.connections.max(64);
    let origin = setup.origin;
    let http = format!(
        "  upstream origin {{ server {origin}; keepalive {keepalive}; keepalive_requests 1000000; }}\n\
         server {{\n    listen {addr};\n    proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\";\n\
         location / {{ proxy_pass http://origin; }}\n\
         location /headers/ {{\n      proxy_pass http://origin;\n\
         proxy_set_header Connection \"\";\n\
         proxy_set_header X-Request-Id $request_id;\n\
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         proxy_set_header X-Forwarded-Proto $scheme;\n\
         proxy_set_header X-Forwarded-Host $host;\n\
         add_header X-Request-Id $request_id always;\n    }}\n  }}\n\
         server {{\n    listen {h2} http2;\n    proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\";\n    location / {{ proxy_pass http://origin; }}\n  }}\n\
         upstream grpc_origin {{ server {grpc_origin}; keepalive {keepalive}; keepalive_requests 1000000; }}\n\
         server {{\n    listen {grpc} http2;\n    location / {{ grpc_pass grpc://grpc_origin; }}\n  }}"
    );
    Ok((start_nginx(setup, "nginx", addr, &http)?, h2, grpc))
}

/// HAProxy in HTTP mode (plain, and `jwt_verify` under `/jwt` with the
/// same claim checks as Portcullis' provider) and a second frontend in TCP
/// mode, the ceiling of any proxy, an h2c frontend, and a gRPC one (h2c
/// both sides). Returns the process and the TCP, h2c and gRPC addresses.
pub(crate) fn haproxy(setup: &Setup) -> Result<(Server, [SocketAddr; 3]), String> {
    let http = free_addr();
    let tcp = free_addr();
    let h2 = free_addr();
    let grpc = free_addr();
    let origin = setup.origin;
    let grpc_origin = setup.grpc_origin;
    let pem = setup.creds.public_pem.display();
    let nofile = setup.nofile();
    let text = format!(
        "global\n    nbthread 1\n    maxconn {nofile}\n\n\
         defaults\n    mode http\n    option http-keep-alive\n    http-reuse always\n\
         timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\n\
         frontend bench\n    bind {http}\n    acl jwt path_beg /jwt\n\
         http-request set-var(txn.bearer) http_auth_bearer if jwt\n\
         http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg') if jwt\n\
         http-request return status 401 if jwt !{{ var(txn.alg) -m str RS256 }}\n\
         http-request return status 401 if jwt !{{ var(txn.bearer),jwt_verify(txn.alg,\"{pem}\") 1 }}\n\
         http-request return status 401 if jwt !{{ var(txn.bearer),jwt_payload_query('$.iss') -m str {ISSUER} }}\n\
         http-request return status 401 if jwt !{{ var(txn.bearer),jwt_payload_query('$.aud') -m str {AUDIENCE} }}\n\
         http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int') if jwt\n\
         http-request set-var(txn.now) date() if jwt\n\
         http-request return status 401 if jwt {{ var(txn.exp),sub(txn.now) -m int lt 0 }}\n\
         default_backend origin\n\n\
         backend origin\n    server origin {origin}\n\n\
         frontend h2c\n    bind {h2} proto h2\n    default_backend origin\n\n\
         frontend grpc\n    bind {grpc} proto h2\n    default_backend grpc_origin\n\n\
         backend grpc_origin\n    server origin {grpc_origin} proto h2\n\n\
         frontend tcp\n    mode tcp\n    bind {tcp}\n    default_backend tcp_origin\n\n\
         backend tcp_origin\n    mode tcp\n    server origin {origin}\n"
    );
    let cfg = write(setup.dir, "haproxy.cfg", &text)?;
    let cfg = cfg.display().to_string();
    let check = Command::new("haproxy")
        .args(["-c", "-q", "-f", &cfg])
        .output()
        .map_err(|e| format!("haproxy: {e}"))?;
    if !check.status.success() {
        return Err(format!(
            "haproxy rejects {cfg}: {}",
            String::from_utf8_lossy(&check.stderr)
        ));
    }
    Ok((
        spawn(setup, "haproxy", http, "haproxy", &["-db", "-f", &cfg], &[])?,
        [tcp, h2, grpc],
    ))
}

/// Caddy's `reverse_proxy` (it adds X-Forwarded-* by default), one OS
/// thread for Go code.
pub(crate) fn caddy(setup: &Setup) -> Result<Server, String> {
    let addr = free_addr();
    let text = format!(
        "{{\n  admin off\n  auto_https off\n}}\n\
         http://{addr} {{\n  reverse_proxy {}\n}}\n",
        setup.origin
    );
    let file = write(setup.dir, "Caddyfile", &text)?;
    let file = file.display().to_string();
    let home = setup.dir.display().to_string();
    spawn(
        setup,
        "caddy",
        addr,
        "caddy",
        &["run", "--config", &file, "--adapter", "caddyfile"],
        &[
            ("GOMAXPROCS", "1"),
            ("HOME", &home),
            ("XDG_DATA_HOME", &home),
        ],
    )
}

/// pingap, the strongest gateway on Pingora, as a plain proxy.
pub(crate) fn pingap(setup: &Setup, program: &Path) -> Result<Server, String> {
    let addr = free_addr();
    let dir = setup.dir.join("pingap");
    let text = format!(
        "[basic]\nthreads = 1\nlog_level = \"warn\"\npid_file = \"{}/pingap.pid\"\n\n\
         [upstreams.origin]\naddrs = [\"{}\"]\n\n\
         [locations.all]\nupstream = \"origin\"\n\n\
         [servers.bench]\naddr = \"{addr}\"\nlocations = [\"all\"]\n",
        dir.display(),
        setup.origin
    );
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = write(&dir, "pingap.toml", &text)?;
    let file = file.display().to_string();
    spawn(
        setup,
        "pingap",
        addr,
        &program.to_string_lossy(),
        &["-c", &file],
        &[],
    )
}

/// A bare Pingora proxy (`examples/pingora_baseline.rs`): the framework's
/// own cost, to separate it from what Portcullis adds.
pub(crate) fn pingora(setup: &Setup, program: &Path) -> Result<Server, String> {
    let addr = free_addr();
    let (listen, origin) = (addr.to_string(), setup.origin.to_string());
    spawn(
        setup,
        "pingora",
        addr,
        &program.to_string_lossy(),
        &[&listen, &origin],
        &[],
    )
}

/// Seconds a DPoP proof stays valid: proofs are minted just before each
/// run, so this covers a warm-up and a run with room to spare.
pub(crate) const DPOP_PROOF_LIFETIME: u64 = 300;

/// Which Portcullis instance: they differ in what is not per route.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Instance {
    /// No access log.
    Plain,
    /// Access and security log files written.
    Logged,
    /// Rate limits kept in Redis.
    Redis,
    /// `[tracing]` on, every request sampled, spans posted to the origin
    /// (which answers 200 to anything).
    Traced,
    /// The same, posting to a collector that never answers.
    TracedHanging,
    /// The security log chained (`security_log_chain = true`).
    Chained,
}

/// A fresh API key for the `/key` route: (the key, its keys-file entry).
pub(crate) fn api_key() -> Result<(String, String), String> {
    let out = run_cli(&[
        "apikey",
        "generate",
        "--consumer",
        "bench",
        "--scopes",
        "bench",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let key = text.lines().next().unwrap_or_default().to_string();
    let entry: Vec<&str> = text.lines().skip(2).collect();
    if !out.status.success() || key.is_empty() {
        return Err(format!("apikey generate failed: {text}"));
    }
    Ok((key, entry.join("\n") + "\n"))
}

/// The whole configuration of one instance: every benchmark route.
pub(crate) fn portcullis_config(
    setup: &Setup,
    dir: &Path,
    addr: SocketAddr,
    h2: SocketAddr,
    instance: Instance,
    redis_url: Option<&str>,
) -> String {
    let p = |name: &str| toml_str(&dir.join(name).to_string_lossy());
    let access_log = match instance {
        Instance::Logged => p("access.log"),
        Instance::Plain
        | Instance::Redis
        | Instance::Traced
        | Instance::TracedHanging
        | Instance::Chained => toml_str("off"),
    };
    let chain = if instance == Instance::Chained {
        "security_log_chain = true\n"
    } else {
        ""
    };
    let collector = match instance {
        Instance::Traced => Some(setup.origin),
        Instance::TracedHanging => Some(setup.hanging_collector),
        _ => None,
    };
    let tracing = collector.map_or(String::new(), |addr| {
        format!("[tracing]\notlp_endpoint = \"http://{addr}/v1/traces\"\nsample_ratio = 1.0\n\n")
    });
    let store = redis_url.map_or(String::new(), |url| {
        format!(
            "[rate_limit_store]\nkind = \"redis\"\nredis_url = {}\ntimeout_ms = 1000\n",
            toml_str(url)
        )
    });
    let jwks = toml_str(&setup.creds.jwks_file.to_string_lossy());
    let provider = |name: &str, cache: usize, extra: &str| {
        format!(
            "[auth.{name}]\nkind = \"jwt\"\nissuer = {}\naudiences = [{}]\njwks_file = {jwks}\n\
             algorithms = [\"RS256\"]\nroles_claim = \"realm_access.roles\"\n\
             token_cache_entries = {cache}\n{extra}\n",
            toml_str(ISSUER),
            toml_str(AUDIENCE)
        )
    };
    let route = |name: &str, prefix: &str, extra: &str| {
        format!("[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"origin\"\n{extra}\n")
    };
    // The OWASP CRS from Debian's package, on one route.
    let waf = "[waf]\nengine = \"modsecurity\"\n\
               rules = [\"/etc/modsecurity/crs/crs-setup.conf\", \"/usr/share/modsecurity-crs/rules/*.conf\"]\n\n\
               [[routes]]\nname = \"waf\"\npath_prefix = \"/waf/\"\nupstream = \"origin\"\npublic = true\nwaf = \"block\"\n\n";
    let unlimited = "rate_limit = { per = \"client_ip\", requests = 1000000000, window_seconds = 1, burst = 1000000000 }\n";
    format!(
        "[server]\nthreads = 1\npid_file = {}\nupgrade_sock = {}\n\
         grace_period_seconds = 0\ngraceful_shutdown_timeout_seconds = 1\n\n\
         [log]\nlevel = \"warn\"\naccess_log = {access_log}\nsecurity_log = {}\n{chain}\n\
         [[listeners]]\nname = \"http\"\nlisten = \"{addr}\"\n\n\
         [[listeners]]\nname = \"h2c\"\nlisten = \"{h2}\"\nhttp2 = true\n\n\
         [upstreams.origin]\ntargets = [\"{}\"]\n\n\
         [upstreams.grpc]\ntargets = [\"{}\"]\nprotocol = \"h2c\"\n\n{store}\n{waf}{tracing}{}{}{}\
         [auth.keys]\nkind = \"api_key\"\nkeys_file = {}\n\n{}{}{}{}{}{}{}{}{}{}{}\
         [[routes]]\nname = \"grpc\"\npath_prefix = \"/grpc.health.v1.Health/\"\npublic = true\nupstream = \"grpc\"\n",
        p("portcullis.pid"),
        p("upgrade.sock"),
        p("security.log"),
        setup.origin,
        setup.grpc_origin,
        provider("jwt", 100_000, ""),
        provider("jwt_uncached", 0, ""),
        provider(
            "dpop",
            100_000,
            &format!("dpop = \"required\"\ndpop_proof_lifetime_seconds = {DPOP_PROOF_LIFETIME}\n")
        ),
        p("keys.toml"),
        route("jwt", "/jwt/", "auth = [\"jwt\"]\n"),
        route("dpop", "/dpop/", "auth = [\"dpop\"]\n"),
        route("jwt-uncached", "/jwt-uncached/", "auth = [\"jwt_uncached\"]\n"),
        route(
            "authz",
            "/authz/",
            "auth = [\"jwt\"]\nrequire_scopes = [\"bench\"]\nallow_roles = [\"bench\"]\n\
             policy = 'identity.subject == \"bench\" && request.method == \"GET\" && claims.azp == \"bench-cli\"'\n"
        ),
        route("all-on", "/all/", &format!("auth = [\"jwt\"]\n{unlimited}")),
        route("norl", "/norl/", "public = true\n"),
        route("rl", "/rl/", &format!("public = true\n{unlimited}")),
        route("key", "/key/", "auth = [\"keys\"]\n"),
        route("cached", "/cached/", "public = true\ncache = { ttl_seconds = 3600 }\n"),
        route(
            "deny",
            "/deny/",
            "public = true\ndeny_cidrs = [\"127.0.0.0/8\"]\n"
        ),
        route("public", "/", "public = true\n"),
    )
}

/// Starts one Portcullis instance with every benchmark route; also returns
/// the address of its h2c listener.
pub(crate) fn portcullis(
    setup: &Setup,
    instance: Instance,
    keys_entry: &str,
    redis_url: Option<&str>,
) -> Result<(Server, SocketAddr), String> {
    let name = match instance {
        Instance::Plain => "portcullis",
        Instance::Logged => "portcullis-logged",
        Instance::Redis => "portcullis-redis",
        Instance::Traced => "portcullis-traced",
        Instance::TracedHanging => "portcullis-traced-hanging",
        Instance::Chained => "portcullis-chained",
    };
    let dir = tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(setup.dir)
        .map_err(|e| e.to_string())?;
    write(dir.path(), "keys.toml", keys_entry)?;
    let (addr, h2) = (free_addr(), free_addr());
    let full = portcullis_config(setup, dir.path(), addr, h2, instance, redis_url);
    let callgrind_out = setup
        .callgrind
        .then(|| setup.dir.join(format!("{name}.callgrind")));
    let gateway = start_gateway(setup, name, full, addr, dir)?;
    let server = Server::Gateway {
        gateway: Box::new(gateway),
        callgrind_out,
    };
    Ok((server, h2))
}

fn start_gateway(
    setup: &Setup,
    name: &str,
    full: String,
    addr: SocketAddr,
    dir: TempDir,
) -> Result<Gateway, String> {
    Gateway::try_start_wrapped(full, addr, dir, &setup.wrapper(name), setup.start_timeout())
        .map_err(|e| format!("{BIN}: {e}"))
}
