//! Protecting the backends: client network rules, rate limits and
//! lockouts, request body validation and CORS.

pub(crate) mod cors;
pub mod ratelimit;
pub(crate) mod schema;
