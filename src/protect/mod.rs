//! Protecting the backends: client network rules, rate limits and
//! lockouts, request body validation and CORS.

pub mod cors;
pub mod ratelimit;
pub mod schema;
