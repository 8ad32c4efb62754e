//! Black-box test support: a real upstream, a raw HTTP/1.1 client and a
//! launcher for the `portcullis` binary, compiled once for every test
//! module.

pub mod client;
pub mod gateway;
pub mod h2_upstream;
pub mod h2c;
pub mod idp;
pub mod jwt;
pub mod raw_upstream;
pub mod redis;
pub mod schema;
pub mod sink;
pub mod upstream;

use std::time::{Duration, Instant};

pub use client::{build_request, get, request, send_raw, Conn, Response};
pub use gateway::{free_addr, free_port};
pub use upstream::Upstream;

/// Polls `f` every 20 ms until it returns true or `timeout` has passed;
/// returns whether it succeeded. `f` runs at least once.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let step = Duration::from_millis(20);
    let deadline = Instant::now() + timeout;
    let max_polls = timeout.as_millis() / step.as_millis() + 1;
    for _ in 0..max_polls {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(step);
    }
    f()
}

/// Asserts a CONTRACT §4 refusal: the status and the JSON `error` code;
/// returns the JSON body.
pub fn assert_error(resp: &Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(
        resp.status,
        status,
        "expected {status} {code}, got {:?} {}",
        resp.headers,
        resp.body_str()
    );
    let body = resp.json();
    assert_eq!(body["error"], code, "{body}");
    body
}

/// Makes each named test function (a plain `fn name()`, no `#[test]`)
/// two tests, `name::http1` and `name::h2c`: the same body with its
/// requests over HTTP/1.1, then over h2c (see [`h2c::over_h2c`]), so a
/// rule is checked on both protocols.
#[macro_export]
macro_rules! on_http1_and_h2c {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn http1() {
                    super::$name()
                }

                #[test]
                fn h2c() {
                    $crate::common::h2c::over_h2c(super::$name)
                }
            }
        )*
    };
}
