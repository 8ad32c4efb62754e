//! Places in configuration files, so that what is compiled after parsing
//! (policies, schemas, certificates, key files) is still reported as
//! `FILE:LINE:COL`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// A 1-based line and column in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<Path>,
    pub line: usize,
    pub col: usize,
}

impl Location {
    /// `cols` characters further on the same line.
    #[must_use]
    pub fn right(&self, cols: usize) -> Location {
        Location {
            col: self.col + cols,
            ..self.clone()
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// A value and where the configuration wrote it. Two are equal when their
/// values are: a reload that only moves a value keeps what was built from
/// it.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub at: Location,
}

impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Eq> Eq for Located<T> {}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}
