//! Portcullis: a security-first API gateway on Pingora.
//!
//! The configuration file is parsed and validated ([`config`]), compiled
//! into an immutable [`runtime::Runtime`], and served by the Pingora proxy
//! in [`proxy`], which runs every request through its stages in one fixed
//! order.

pub(crate) mod admin;
pub mod auth;
pub mod authz;
pub(crate) mod cache;
pub mod config;
pub mod core;
pub mod front;
pub mod import;
pub mod observe;
pub mod protect;
pub(crate) mod proxy;
pub(crate) mod reload;
pub mod routing;
pub(crate) mod runtime;
pub mod server;
#[doc(hidden)]
pub mod testkit;
pub(crate) mod tls;
pub(crate) mod upstream;
