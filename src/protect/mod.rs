//! Protecting the backends: client network rules (and, later in the
//! request, rate limits and lockouts).

pub mod cidr;
pub mod cors;
pub mod schema;
