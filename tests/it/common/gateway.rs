//! Starts the real `portcullis` binary in a temporary directory.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The gateway binary built by cargo for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
/// How long `start` waits for the listener to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
const START_POLL: Duration = Duration::from_millis(25);
/// How long the log helpers wait for lines to appear.
pub const LOG_WAIT: Duration = Duration::from_secs(5);
const LOG_POLL: Duration = Duration::from_millis(20);
/// How long Drop waits after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound for one-shot CLI runs (`check`, `apikey generate`).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for the old process to exit during `upgrade` (Pingora keeps it
/// alive ~5 s after handing the sockets over, plus the grace period).
pub const UPGRADE_EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 3;

/// Ports handed out by `free_port` in this process, never handed out twice.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A currently free port on 127.0.0.1 (bind port 0, read it, drop it), never
/// the same twice within one test binary.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        if HANDED_OUT.lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("no fresh free port after 100 attempts");
}

/// `127.0.0.1:<free_port()>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Polls (every 25 ms, up to `timeout`) until `addr` accepts a TCP connection.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let max_polls = timeout.as_millis() / START_POLL.as_millis() + 1;
    for _ in 0..max_polls {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(START_POLL);
    }
    false
}

/// A TOML basic string (quoted, escaped).
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `[server]`, `[log]` and first `[[listeners]]` sections that
/// [`Gateway::start`] prepends to a test's configuration fragment; the
/// listener speaks h2c too inside [`super::h2c::over_h2c`].
pub fn config_header(dir: &Path, listen: SocketAddr) -> String {
    let p = |name: &str| toml_str(&dir.join(name).to_string_lossy());
    format!(
        "[server]\n\
         threads = 2\n\
         pid_file = {}\n\
         upgrade_sock = {}\n\
         grace_period_seconds = 1\n\
         graceful_shutdown_timeout_seconds = 1\n\
         \n\
         [log]\n\
         level = \"info\"\n\
         access_log = {}\n\
         security_log = {}\n\
         \n\
         [[listeners]]\n\
         name = \"http\"\n\
         listen = \"{listen}\"\n\
         {}\
         \n",
        p("portcullis.pid"),
        p("upgrade.sock"),
        p("access.log"),
        p("security.log"),
        if super::h2c::enable_on(listen) {
            "http2 = true\n"
        } else {
            ""
        },
    )
}

/// Replaces every `{dir}` with the temporary directory's path.
pub fn expand_dir(text: &str, dir: &Path) -> String {
    text.replace("{dir}", &dir.to_string_lossy())
}

/// A running `portcullis run` process. Dropping it stops the process
/// (SIGTERM, then SIGKILL after 5 s) and deletes `dir`.
pub struct Gateway {
    pub dir: TempDir,
    /// The first listener.
    pub addr: SocketAddr,
    pub access_log_path: PathBuf,
    pub security_log_path: PathBuf,
    pub upgrade_sock: PathBuf,
    config_path: PathBuf,
    /// What `start` prepended (empty for `start_full`).
    header: String,
    /// A command the binary runs under (e.g. valgrind), empty for none.
    wrapper: Vec<String>,
    start_timeout: Duration,
    child: Option<Child>,
}

impl Gateway {
    /// Starts the gateway with `config_body` (TOML without `[server]`,
    /// `[log]` and `[[listeners]]`; `{dir}` is replaced by the temporary
    /// directory). Panics with the gateway's stderr if it does not come up.
    pub fn start(config_body: &str) -> Gateway {
        Self::start_with_files(config_body, &[])
    }

    /// Like [`Gateway::start`], but first writes `files` (relative path,
    /// contents; `{dir}` expanded in both) into the temporary directory, for
    /// keys files, JWKS files, schemas, secrets...
    pub fn start_with_files(config_body: &str, files: &[(&str, &str)]) -> Gateway {
        Self::try_start_with_files(config_body, files).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Gateway::start`] but returns the failure (with stderr) instead
    /// of panicking, e.g. to check that `run` refuses an invalid config.
    pub fn try_start(config_body: &str) -> Result<Gateway, String> {
        Self::try_start_with_files(config_body, &[])
    }

    pub fn try_start_with_files(
        config_body: &str,
        files: &[(&str, &str)],
    ) -> Result<Gateway, String> {
        let mut last_err = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = new_dir();
            write_files(dir.path(), files);
            let addr = free_addr();
            let header = config_header(dir.path(), addr);
            let full = format!("{header}{}", expand_dir(config_body, dir.path()));
            match Self::launch(full, header, addr, dir) {
                Ok(gw) => return Ok(gw),
                // Another process grabbed the port between free_port() and
                // the gateway's bind: try again with a new port.
                Err(e) if e.contains("already in use") || e.contains("AddrInUse") => last_err = e,
                Err(e) => return Err(e),
            }
        }
        Err(last_err)
    }

    /// Starts the gateway with a complete configuration written by the test
    /// (`{dir}` is NOT expanded); `addr` is the listener to wait for.
    pub fn start_full(full_toml: String, addr: SocketAddr, dir: TempDir) -> Gateway {
        Self::try_start_full(full_toml, addr, dir).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start_full(
        full_toml: String,
        addr: SocketAddr,
        dir: TempDir,
    ) -> Result<Gateway, String> {
        Self::try_start_wrapped(full_toml, addr, dir, &[], START_TIMEOUT)
    }

    /// Like [`Gateway::try_start_full`], with the binary run under
    /// `wrapper` (the benchmark's `valgrind --tool=callgrind ...`), which
    /// may need longer than [`START_TIMEOUT`] to come up.
    pub fn try_start_wrapped(
        full_toml: String,
        addr: SocketAddr,
        dir: TempDir,
        wrapper: &[String],
        start_timeout: Duration,
    ) -> Result<Gateway, String> {
        Self::launch_with(full_toml, String::new(), addr, dir, wrapper, start_timeout)
    }

    fn launch(
        full: String,
        header: String,
        addr: SocketAddr,
        dir: TempDir,
    ) -> Result<Self, String> {
        Self::launch_with(full, header, addr, dir, &[], START_TIMEOUT)
    }

    fn launch_with(
        full: String,
        header: String,
        addr: SocketAddr,
        dir: TempDir,
        wrapper: &[String],
        start_timeout: Duration,
    ) -> Result<Self, String> {
        let config_path = dir.path().join("portcullis.toml");
        fs::write(&config_path, &full).expect("write portcullis.toml");
        let mut gw = Gateway {
            access_log_path: dir.path().join("access.log"),
            security_log_path: dir.path().join("security.log"),
            upgrade_sock: dir.path().join("upgrade.sock"),
            dir,
            addr,
            config_path,
            header,
            wrapper: wrapper.to_vec(),
            start_timeout,
            child: None,
        };
        gw.child = Some(gw.spawn_run(&[]));
        gw.wait_ready()?;
        super::schema::assert_accepted(&full);
        Ok(gw)
    }

    fn spawn_run(&self, extra_args: &[&str]) -> Child {
        let log = |name: &str| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
                .unwrap_or_else(|e| panic!("open {name}: {e}"))
        };
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.arg("run")
            .arg("-c")
            .arg(&self.config_path)
            .args(extra_args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"))
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let timeout = self.start_timeout;
        let deadline = Instant::now() + timeout;
        let max_polls = timeout.as_millis() / START_POLL.as_millis() + 1;
        for _ in 0..max_polls {
            if let Some(status) = self.try_wait() {
                return Err(format!(
                    "portcullis exited during startup ({status}); config:\n{}\nstderr:\n{}",
                    self.config(),
                    self.stderr()
                ));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(250)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(START_POLL);
        }
        Err(format!(
            "portcullis did not accept on {} within {timeout:?}; config:\n{}\nstderr:\n{}",
            self.addr,
            self.config(),
            self.stderr()
        ))
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The current configuration file's contents.
    pub fn config(&self) -> String {
        fs::read_to_string(&self.config_path).unwrap_or_default()
    }

    /// Writes `dir/name` (for files the config names); `{dir}` is expanded.
    pub fn write_file(&self, name: &str, contents: &str) {
        write_files(self.dir.path(), &[(name, contents)]);
    }

    /// Rewrites the configuration with the same generated header (and
    /// listener port) and a new body (`{dir}` expanded); replaces the file
    /// atomically. Follow with `signal("HUP")` or `POST /reload`.
    pub fn write_config_body(&self, config_body: &str) {
        let full = format!(
            "{}{}",
            self.header,
            expand_dir(config_body, self.dir.path())
        );
        self.write_config_full(&full);
    }

    /// Replaces the whole configuration file atomically (no expansion).
    pub fn write_config_full(&self, full_toml: &str) {
        let tmp = self.dir.path().join(".portcullis.toml.tmp");
        fs::write(&tmp, full_toml).expect("write config");
        fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// The current process id (changes after `upgrade`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("gateway process").id()
    }

    /// Sends a signal by name ("HUP", "SIGQUIT", "TERM"...) with `kill -s`.
    pub fn signal(&self, sig: &str) {
        send_signal(self.pid(), sig);
    }

    /// The exit status if the process has exited (without blocking).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits (bounded) for the process to exit, e.g. after SIGTERM.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(self.child.as_mut()?, timeout)
    }

    /// Pingora graceful upgrade: starts `run --upgrade` with the same
    /// configuration, waits for it to listen on the upgrade socket, sends
    /// SIGQUIT to the old process so it hands the listening sockets over,
    /// waits (bounded) for the old process to exit and returns its status.
    /// Afterwards `pid()` is the new process. Panics (with stderr) if the new
    /// process dies or the socket never appears.
    pub fn upgrade(&mut self) -> ExitStatus {
        let _ = fs::remove_file(&self.upgrade_sock); // stale socket of a previous upgrade
        let mut new = self.spawn_run(&["--upgrade"]);
        let deadline = Instant::now() + START_TIMEOUT;
        let max_polls = START_TIMEOUT.as_millis() / START_POLL.as_millis() + 1;
        for _ in 0..max_polls {
            if let Ok(Some(status)) = new.try_wait() {
                panic!(
                    "upgraded portcullis exited ({status}); stderr:\n{}",
                    self.stderr()
                );
            }
            if self.upgrade_sock.exists() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(START_POLL);
        }
        if !self.upgrade_sock.exists() {
            let _ = new.kill();
            let _ = new.wait();
            panic!(
                "upgraded portcullis never created {}; stderr:\n{}",
                self.upgrade_sock.display(),
                self.stderr()
            );
        }
        let mut old = self.child.replace(new).expect("gateway process");
        send_signal(old.id(), "QUIT");
        match wait_child(&mut old, UPGRADE_EXIT_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = old.kill();
                let status = old.wait().expect("wait old portcullis");
                panic!(
                    "old portcullis did not exit within {UPGRADE_EXIT_TIMEOUT:?} after SIGQUIT \
                     (killed: {status}); stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    pub fn stderr(&self) -> String {
        read_lossy(&self.dir.path().join("stderr.log"))
    }

    pub fn stdout(&self) -> String {
        read_lossy(&self.dir.path().join("stdout.log"))
    }

    /// Parsed JSON lines of the access log (an unterminated last line that
    /// does not parse yet is skipped; any other non-JSON line panics).
    pub fn access_log(&self) -> Vec<Value> {
        read_json_lines(&self.access_log_path)
    }

    /// Polls up to 5 s until the access log has at least `n` lines.
    pub fn wait_access_log(&self, n: usize) -> Vec<Value> {
        poll_log(|| self.access_log(), |lines| lines.len() >= n)
    }

    pub fn security_log(&self) -> Vec<Value> {
        read_json_lines(&self.security_log_path)
    }

    /// Security log records whose `event` is `event`.
    pub fn security_events(&self, event: &str) -> Vec<Value> {
        filter_event(self.security_log(), event)
    }

    /// Polls up to 5 s until at least `n` records with this `event` exist;
    /// returns those found (possibly fewer).
    pub fn wait_security_events(&self, event: &str, n: usize) -> Vec<Value> {
        filter_event(
            poll_log(
                || self.security_log(),
                |lines| filter_event(lines.to_vec(), event).len() >= n,
            ),
            event,
        )
    }

    /// The first record with this `event`, waiting up to 5 s for it.
    pub fn wait_security_event(&self, event: &str) -> Option<Value> {
        self.wait_security_events(event, 1).into_iter().next()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let stderr = self.stderr();
            let mut start = stderr.len().saturating_sub(8192);
            while !stderr.is_char_boundary(start) {
                start += 1; // terminates: len() is a boundary
            }
            let tail = &stderr[start..];
            // Whether the process was still there says which side failed.
            let process = match self.try_wait() {
                Some(status) => format!("exited: {status}"),
                None => "still running".to_string(),
            };
            eprintln!(
                "---- portcullis stderr ({}, {process}) ----\n{tail}\n---- end ----",
                self.dir.path().display()
            );
        }
        if let Some(child) = self.child.take() {
            terminate(child);
        }
    }
}

/// `portcullis check -c config_path` (bounded to 30 s).
pub fn check(config_path: &Path) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("check").arg("-c").arg(config_path);
    run_bounded(cmd, CLI_TIMEOUT)
}

/// `portcullis ARGS...` (e.g. `["apikey", "generate", "--consumer", "acme"]`),
/// bounded to 30 s.
pub fn run_cli(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    run_bounded(cmd, CLI_TIMEOUT)
}

/// Runs a command with captured output; kills it after `timeout`.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = match wait_child(&mut child, timeout) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let status = child.wait().expect("wait");
            panic!("{cmd:?} did not finish within {timeout:?} (killed: {status})");
        }
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn new_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("portcullis-test-")
        .tempdir()
        .expect("create temp dir")
}

fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (name, contents) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create dirs");
        }
        fs::write(&path, expand_dir(contents, dir))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

fn send_signal(pid: u32, sig: &str) {
    let upper = sig.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let status = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {name} {pid} failed: {status}");
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let step = Duration::from_millis(20);
    let max_polls = timeout.as_millis() / step.as_millis() + 1;
    for _ in 0..max_polls {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(step);
    }
    child.try_wait().ok().flatten()
}

/// SIGTERM, wait up to 5 s, then SIGKILL. The child is not reaped before
/// it is signalled, so its pid cannot have been reused.
pub fn terminate(mut child: Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status();
    if let Some(status) = wait_child(&mut child, STOP_TIMEOUT) {
        return Some(status);
    }
    let _ = child.kill();
    child.wait().ok()
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn read_json_lines(path: &Path) -> Vec<Value> {
    let text = read_lossy(path);
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(value) => out.push(value),
            // The asynchronous writer may be mid-line.
            Err(_) if i + 1 == lines.len() && !complete => {}
            Err(e) => panic!(
                "{}: line {} is not JSON ({e}): {line}",
                path.display(),
                i + 1
            ),
        }
    }
    out
}

fn poll_log(read: impl Fn() -> Vec<Value>, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + LOG_WAIT;
    let max_polls = LOG_WAIT.as_millis() / LOG_POLL.as_millis() + 1;
    let mut lines = read();
    for _ in 0..max_polls {
        if done(&lines) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(LOG_POLL);
        lines = read();
    }
    lines
}

fn filter_event(lines: Vec<Value>, event: &str) -> Vec<Value> {
    lines
        .into_iter()
        .filter(|v| v.get("event").and_then(Value::as_str) == Some(event))
        .collect()
}
