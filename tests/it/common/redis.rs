//! A real `redis-server` on a free loopback port, without persistence, for
//! the shared rate-limit store. `stop` and `restart` (same port) simulate
//! an outage; Drop kills it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::gateway::free_port;

/// Where CI and the dev machine install it.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";
/// How long `start`/`restart` wait for `PING` to answer.
pub const REDIS_START_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(25);
/// How long `stop` waits for the killed process to be reaped.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a fresh port; panics if it does not answer in time.
    pub fn start() -> Self {
        let mut server = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir for redis"),
            child: None,
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "yes"])
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
