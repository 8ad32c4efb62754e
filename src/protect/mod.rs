//! Protecting the backends: client network rules, rate limits and
//! lockouts, request body validation, CORS, the WAF, and the token state
//! gateways share: replay caches and revocations.

pub(crate) mod cors;
pub mod ratelimit;
pub mod replay;
pub mod revocation;
pub(crate) mod schema;
pub mod waf;
