//! The leaf of the crate: plain types every layer shares, depending on
//! nothing else in it. Addresses and networks, what a route matches on,
//! algorithm names, secrets, the canonical path, header text, and the
//! small runtime helpers (expiring caches, task accounting).

pub mod alg;
pub mod ids;
pub mod location;
pub mod matching;
pub mod net;
pub mod normalize;
pub mod once;
pub mod secret;
pub(crate) mod tasks;
pub(crate) mod text;
pub(crate) mod ttl;
