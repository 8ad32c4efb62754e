//! The request pipeline in process, over an in-memory stream instead of a
//! socket: what the in-process tests and the criterion bench of a whole
//! request's checks drive. Not part of the gateway's interface.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use pingora::proxy::Session;
use tokio::io::AsyncWriteExt;

use crate::config::{self, ConfigErrors};
use crate::core::ids::ListenerId;
use crate::observe::outcome::Event;
use crate::observe::Observer;
use crate::proxy::ctx::Ctx;
use crate::proxy::pipeline::{self, LocalReply, Verdict};
use crate::proxy::request::Conn;
use crate::runtime::Runtime;

/// A compiled configuration whose pipeline runs on requests given as bytes.
pub struct Pipeline {
    runtime: Arc<Runtime>,
}

/// What the pipeline decided about one request.
#[derive(Debug)]
pub struct Decided {
    /// `None` when the request goes upstream; else the status of the
    /// gateway's own answer.
    pub status: Option<u16>,
    /// The CONTRACT §4 code of a refusal.
    pub error: Option<&'static str>,
    /// Headers of the gateway's own answer (`Allow`, `WWW-Authenticate`,
    /// `Retry-After`, `Access-Control-*`...), names in lower case.
    pub headers: Vec<(String, String)>,
    pub route: Option<String>,
    /// The canonical origin-form target (empty when the request was refused
    /// before the canonical step).
    pub target: String,
    /// The outcome events the stages recorded, in order.
    pub events: Vec<Event>,
}

impl Pipeline {
    /// Compiles configuration text as if it were read from `gateway.toml`.
    pub fn new(config_text: &str) -> Result<Pipeline, ConfigErrors> {
        let path = Path::new("gateway.toml");
        let config = config::parse_str(path, config_text)?;
        let observer = Observer::new(&config.log).map_err(|e| {
            ConfigErrors(vec![config::ConfigError::in_file(
                path,
                format!("metrics: {e}"),
            )])
        })?;
        let runtime = Runtime::compile(config, 1, &Arc::new(observer), None)?;
        Ok(Pipeline {
            runtime: Arc::new(runtime),
        })
    }

    /// Runs the pipeline on one HTTP/1.1 request (`raw`, head and body) from
    /// `peer`, on listener 0. `None` when Pingora cannot read the head.
    pub async fn run(&self, raw: &[u8], peer: IpAddr) -> Option<Decided> {
        let (mut client, server) = tokio::io::duplex(raw.len() + 1024);
        client.write_all(raw).await.ok()?;
        let mut session = Session::new_h1(Box::new(server));
        if !session.read_request().await.ok()? {
            return None;
        }
        let mut ctx = Ctx::new(self.runtime.clone());
        let conn = Conn {
            peer: Some(crate::core::net::canonical_ip(peer)),
            listener: Some(ListenerId::new(0)),
            https: false,
        };
        ctx.begin(&session.req_header().headers, conn);
        let verdict = pipeline::run(&mut session, &mut ctx).await;
        let mut decided = Decided {
            status: None,
            error: None,
            headers: Vec::new(),
            route: ctx.route().map(|r| r.name.clone()),
            target: ctx.canon.target().to_string(),
            events: Vec::new(),
        };
        let text = |n: &str, v: &http::HeaderValue| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        };
        match verdict {
            Verdict::Continue => {}
            Verdict::Reply(LocalReply::Refuse(reject)) => {
                decided.status = Some(reject.status());
                decided.error = Some(reject.code.as_str());
                decided.headers = reject.headers.iter().map(|(n, v)| text(n, v)).collect();
            }
            Verdict::Reply(LocalReply::Preflight) => {
                decided.status = Some(204);
                decided.headers = (ctx.decoration.cors_headers.iter())
                    .map(|(n, v)| text(n.as_str(), v))
                    .collect();
            }
            Verdict::Reply(LocalReply::Direct { status, .. }) => decided.status = Some(status),
        }
        decided.events = std::mem::take(&mut ctx.outcome.events);
        drop(client);
        Some(decided)
    }
}
