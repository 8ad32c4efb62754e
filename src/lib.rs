//! Portcullis: a security-first API gateway on Pingora.
//!
//! The configuration file is parsed and validated ([`config`]), compiled
//! into an immutable [`runtime::Runtime`], and served by the Pingora proxy
//! in [`proxy`], which runs every request through its stages in one fixed
//! order.

pub mod admin;
pub mod auth;
pub mod authz;
pub mod config;
pub mod front;
pub mod observe;
pub mod protect;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod tasks;
pub mod tls;
pub mod ttl;
pub mod upstream;
