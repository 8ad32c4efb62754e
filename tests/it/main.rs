//! The integration tests: one binary, a module per area. Every test
//! starts the real `portcullis` binary with its own free ports and real
//! peers on 127.0.0.1, so the modules run in parallel.

#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

mod alerts;
mod auth_api_key;
mod auth_introspection;
mod auth_jwt;
mod authz;
mod browser;
mod cache;
mod canonical;
mod cli;
mod connections;
mod dashboard;
mod deploy;
mod dpop;
mod grpc;
mod harness_smoke;
mod hygiene;
mod import_kong;
mod mtls;
mod operations;
mod pipeline;
mod protection;
mod protocols;
mod ratelimit_store;
mod redis_fleet;
mod replay;
mod resilience;
mod revocation;
mod routing;
mod seclog;
mod tls;
mod tracing;
mod upstreams;
mod validation;
mod versions;
mod waf;
mod websocket;
