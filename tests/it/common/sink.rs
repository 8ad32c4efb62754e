//! A raw HTTP/1.1 receiver for what the gateway sends out on its own
//! (alert webhooks, OTLP spans): it keeps every request body and answers
//! `200`, or (`Hang`) reads requests and never answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Accept,
    /// Reads the request and never answers.
    Hang,
}

/// Connections a sink accepts, and requests it reads on one, at most.
const MAX_CONNECTIONS: usize = 256;
const MAX_REQUESTS: usize = 10_000;

pub struct Sink {
    pub addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Sink {
    pub fn start(mode: Mode) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(MAX_CONNECTIONS).flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || serve(stream, mode, &kept));
            }
        });
        Sink { addr, bodies }
    }

    /// Every body received so far, in order.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, mode: Mode, kept: &Mutex<Vec<Vec<u8>>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut reader = BufReader::new(stream);
    for _ in 0..MAX_REQUESTS {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        kept.lock().unwrap().push(body);
        match mode {
            Mode::Accept => {
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                if reader.get_mut().write_all(ok).is_err() {
                    return;
                }
            }
            // Holds the connection until the gateway gives up on it.
            Mode::Hang => {
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
                return;
            }
        }
    }
}
