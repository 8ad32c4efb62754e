//! The command line: `check` and `run` on valid and invalid configurations.

use crate::common;

use std::io::Write;

use common::client::{get, send_raw, Conn};
use common::gateway::{check, run_cli, Gateway};

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

#[test]
fn check_accepts_the_shipped_configurations() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for conf in ["conf/demo.toml", "conf/portcullis.toml"] {
        let out = check(&root.join(conf));
        assert!(
            out.status.success(),
            "{conf}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    }
}

#[test]
fn check_reports_every_error_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "bad.toml",
        r#"[[listeners]]
name = "http"
listen = "127.0.0.1:1"

[[routes]]
name = "orders"
path_prefix = "/orders"
respond = { status = 200 }
requre_scopes = ["orders:read"]

[[routes]]
name = "x"
path = "/x"
public = true
respond = { status = 999 }
"#,
    );
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let file = path.display().to_string();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "{file}:5:1: route `orders` must name its `auth` providers"
        )),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{file}:9:1: unknown key `requre_scopes` in [routes[0]]"
        )),
        "{stderr}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "{file}:15:22: `status` in [routes[1].respond] must be between 100 and 599"
        )),
        "{stderr}"
    );
}

#[test]
fn check_on_a_missing_file() {
    let out = check(std::path::Path::new("/nonexistent/portcullis.toml"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("/nonexistent/portcullis.toml: cannot read configuration"));
}

#[test]
fn run_refuses_an_invalid_configuration() {
    let err = Gateway::try_start(
        "[[routes]]\nname = \"open\"\npath = \"/\"\nrespond = { status = 200 }\n",
    )
    .err()
    .expect("a route that is neither public nor authenticated must not be served");
    assert!(
        err.contains("must name its `auth` providers or say `public = true`"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "bad.toml", "[server]\nthreads = \"two\"\n");
    let out = run_cli(&["run", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains(":2:11: `threads` in [server] must be an integer"));
}

#[test]
fn garbage_requests_never_take_the_process_down() {
    let gw = Gateway::start(
        "[[routes]]\nname = \"ping\"\npath = \"/ping\"\npublic = true\nrespond = { status = 200, body = \"pong\" }\n",
    );
    let junk: Vec<Vec<u8>> = vec![
        b"\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET ping HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET * HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET http://evil.example/ping HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
        b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n".to_vec(),
        b"POST /ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
        b"POST /ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        [
            b"GET /".as_slice(),
            &[0xff, 0xfe],
            b" HTTP/1.1\r\nHost: x\r\n\r\n",
        ]
        .concat(),
        [
            b"GET / HTTP/1.1\r\nHost: x\r\nX: ".as_slice(),
            &[0xff, 0x00],
            b"\r\n\r\n",
        ]
        .concat(),
        format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a/".repeat(5000)).into_bytes(),
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
            "X-A: b\r\n".repeat(300)
        )
        .into_bytes(),
    ];
    for request in &junk {
        let _ = send_raw(gw.addr, request);
    }
    // Half-sent request, then hang up.
    let mut conn = Conn::open(gw.addr);
    conn.write_raw(b"GET /ping HTTP/1.1\r\nHo").unwrap();
    drop(conn);
    let r = get(gw.addr, "/ping");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "pong");
}

#[test]
fn schema_describes_the_shipped_configurations_and_refuses_a_typo() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run_cli(&["schema"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let validator = jsonschema::validator_for(&schema).unwrap();
    let as_json = |text: &str| serde_json::to_value(toml::from_str::<toml::Value>(text).unwrap());
    for conf in ["conf/demo.toml", "conf/portcullis.toml"] {
        let text = std::fs::read_to_string(root.join(conf)).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&as_json(&text).unwrap())
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{conf}: {errors:?}");
        let typo = text.replacen("[server]", "[server]\nworker_threads = 4", 1);
        assert!(
            !validator.is_valid(&as_json(&typo).unwrap()),
            "{conf} with a typo"
        );
    }

    let out = run_cli(&["schema", "--keys"]);
    assert!(out.status.success());
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let validator = jsonschema::validator_for(&keys).unwrap();
    let text = std::fs::read_to_string(root.join("conf/demo-api-keys.toml")).unwrap();
    assert!(validator.is_valid(&as_json(&text).unwrap()));
}
