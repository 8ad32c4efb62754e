//! Protecting the backends: client network rules, rate limits and
//! lockouts, request body validation, CORS and the WAF.

pub(crate) mod cors;
pub mod ratelimit;
pub(crate) mod schema;
pub mod waf;
