//! Request routing: path normalization and the route table.

pub mod table;
pub mod target;
