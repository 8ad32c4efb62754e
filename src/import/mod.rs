//! `portcullis import`: configurations of other gateways converted into a
//! Portcullis configuration and keys file, with every construct that has no
//! equivalent listed rather than dropped.

pub mod kong;
mod toml_out;
