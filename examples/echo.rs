//! A stand-alone echo upstream for demos:
//!
//! ```text
//! cargo run --release --example echo -- [ADDR] [NAME]   # defaults 127.0.0.1:9001 echo
//! ```
//!
//! Answers every request with a JSON echo of what it received (see
//! `tests/it/common/upstream.rs`) until Ctrl-C.

#[allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]
#[path = "../tests/it/common/upstream.rs"]
mod upstream;

use std::net::SocketAddr;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9001".to_string());
    let name = args.next().unwrap_or_else(|| "echo".to_string());
    let addr: SocketAddr = match addr.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("invalid address {addr:?}: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match upstream::Upstream::start_on(&name, addr) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("echo upstream {name} listening on {}", server.addr());

    // Block until Ctrl-C (or SIGTERM), then stop cleanly.
    let waited = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|runtime| {
            runtime.block_on(async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                Ok(())
            })
        });
    server.stop();
    match waited {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot wait for a signal: {e}");
            ExitCode::FAILURE
        }
    }
}
