//! The dashboard in a real browser: Debian's `chromium`, headless, driven
//! through `chromedriver` over WebDriver (fantoccini) against the real
//! binary. The page must refuse without the token (and with a wrong one),
//! then show a route, an unhealthy target, a lockout and an event whose
//! text is a script, as text, without running it. It saves the
//! screenshot the README shows (target/dashboard.png; with
//! `PORTCULLIS_SCREENSHOT=docs/dashboard.png`, the README's own).
//!
//! Without chromium the test fails when `PORTCULLIS_CI` is set (CI installs
//! it) and is skipped with a message otherwise.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use super::dashboard::{self, Dashboard, TOKEN, XSS};
use common::gateway::free_port;
use common::wait_until;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

/// `chromedriver` on its own port, stopped on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(log: &Path) -> Driver {
        let port = free_port();
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {CHROMEDRIVER}: {e}"));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            wait_until(WAIT, || std::net::TcpStream::connect(addr).is_ok()),
            "chromedriver did not listen on {addr}"
        );
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether chromium and its driver are installed; on CI their absence is
/// a failure, not a skip.
fn browser_available() -> bool {
    let present = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !present {
        let message = format!(
            "{CHROMIUM} or {CHROMEDRIVER} is missing: install Debian's `chromium` and \
             `chromium-driver` (scripts/setup.sh does)"
        );
        assert!(std::env::var_os("PORTCULLIS_CI").is_none(), "{message}");
        eprintln!("skipping the browser test: {message}");
    }
    present
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

async fn connect(driver: &Driver, profile: &Path) -> Client {
    let mut args = vec![
        "--headless=new".to_string(),
        "--disable-gpu".to_string(),
        "--disable-dev-shm-usage".to_string(),
        "--no-first-run".to_string(),
        "--window-size=1400,2200".to_string(),
        format!("--user-data-dir={}", profile.display()),
    ];
    // Chromium's sandbox refuses to run as root.
    if is_root() {
        args.push("--no-sandbox".to_string());
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_string(),
        json!({"binary": CHROMIUM, "args": args}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap_or_else(|e| panic!("WebDriver session: {e}"))
}

async fn eval(client: &Client, script: &str) -> Value {
    client
        .execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// Polls `script` (a JS expression) until it is true; bounded by `WAIT`.
async fn wait_js(client: &Client, script: &str) {
    let deadline = Instant::now() + WAIT;
    let body = format!("return Boolean({script});");
    loop {
        if eval(client, &body).await == Value::Bool(true) {
            return;
        }
        if Instant::now() >= deadline {
            let page = eval(client, "return document.body.innerText;").await;
            panic!("not true within {WAIT:?}: {script}\npage:\n{page}");
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn log_in(client: &Client, token: &str) {
    let field = client.find(Locator::Css("#token")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(token).await.unwrap();
    client
        .find(Locator::Css("#login button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

fn text_of(selector: &str) -> String {
    format!("(document.querySelector({selector:?}) || {{}}).textContent || ''")
}

async fn drive(client: &Client, d: &Dashboard) {
    let url = format!("http://{}/ui/", d.admin);
    client.goto(&url).await.unwrap();

    // No token: the API refuses and the page says so.
    wait_js(
        client,
        &format!(
            "!document.getElementById('login').hidden && {}.includes('refused the request without an admin token (HTTP 401)')",
            text_of("#refusal")
        ),
    )
    .await;
    assert_eq!(
        eval(
            client,
            "return document.getElementById('dashboard').hidden;"
        )
        .await,
        json!(true)
    );

    // A wrong token: refused too, and not kept.
    log_in(client, &format!("{TOKEN}-wrong")).await;
    wait_js(
        client,
        &format!(
            "{}.includes('refused the admin token (HTTP 401)')",
            text_of("#refusal")
        ),
    )
    .await;
    assert_eq!(
        eval(client, "return sessionStorage.length;").await,
        json!(0)
    );

    // The token: the dashboard, with everything the gateway is doing.
    log_in(client, TOKEN).await;
    wait_js(
        client,
        &format!(
            "!document.getElementById('dashboard').hidden && \
             getComputedStyle(document.getElementById('login')).display === 'none' && \
             {}.includes('orders')",
            text_of("#routes tbody")
        ),
    )
    .await;
    let dead = d.dead.to_string();
    wait_js(
        client,
        &format!(
            "Array.from(document.querySelectorAll('#upstreams tbody tr')).some(r => \
             r.textContent.includes({dead:?}) && r.textContent.includes('unhealthy'))"
        ),
    )
    .await;
    wait_js(
        client,
        &format!("{}.includes('127.0.0.1')", text_of("#lockouts tbody")),
    )
    .await;
    wait_js(
        client,
        &format!("{}.includes({XSS:?})", text_of("#events tbody")),
    )
    .await;
    wait_js(
        client,
        "document.querySelectorAll('#charts svg polyline').length >= 6",
    )
    .await;
    wait_js(
        client,
        &format!("{}.includes('https')", text_of("#certificates tbody")),
    )
    .await;

    // The event was drawn as text: no element came of it and nothing ran.
    assert_eq!(
        eval(client, "return document.querySelectorAll('script').length;").await,
        json!(1)
    );
    assert_eq!(
        eval(client, "return typeof window.__pwned;").await,
        json!("undefined")
    );
    assert_eq!(
        eval(
            client,
            "return document.querySelectorAll('#events img, #events script').length;"
        )
        .await,
        json!(0)
    );
    // The token is in the tab's session storage at most, never a cookie.
    assert_eq!(eval(client, "return document.cookie;").await, json!(""));
    assert_eq!(
        eval(
            client,
            "return sessionStorage.getItem('portcullis-admin-token');"
        )
        .await,
        json!(TOKEN)
    );

    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    // Under target/ so a test run leaves the tree clean;
    // `PORTCULLIS_SCREENSHOT=docs/dashboard.png` refreshes the README's.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = match std::env::var_os("PORTCULLIS_SCREENSHOT") {
        Some(path) => root.join(path),
        None => root.join("target/dashboard.png"),
    };
    std::fs::write(&out, &png).unwrap_or_else(|e| panic!("{}: {e}", out.display()));

    // The event filter keeps one kind.
    client
        .find(Locator::Css("#event-filter"))
        .await
        .unwrap()
        .send_keys("token_revoked")
        .await
        .unwrap();
    eval(
        client,
        "document.getElementById('event-filter').dispatchEvent(new Event('change')); return null;",
    )
    .await;
    wait_js(
        client,
        "(() => { const rows = Array.from(document.querySelectorAll('#events tbody tr')); \
         return rows.length === 1 && rows[0].cells[1].textContent === 'token_revoked'; })()",
    )
    .await;

    // Forgetting the token locks the page again.
    client
        .find(Locator::Css("#forget"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        client,
        "document.getElementById('dashboard').hidden && sessionStorage.length === 0",
    )
    .await;
}

#[test]
fn the_dashboard_in_chromium() {
    if !browser_available() {
        return;
    }
    let d = dashboard::start();
    dashboard::wait_unhealthy(&d);
    let r = common::request(
        d.gw.addr,
        "GET",
        "/orders/1",
        &[("x-api-key", dashboard::API_KEY)],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    dashboard::lock_out(d.gw.addr);
    dashboard::revoke_xss_subject(d.admin);

    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(&d.gw.dir.path().join("chromedriver.log"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = connect(&driver, profile.path()).await;
        drive(&client, &d).await;
        client.close().await.unwrap();
    });
}
