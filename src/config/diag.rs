//! Configuration diagnostics: every problem found in a file, with its place.
//!
//! Validation never stops at the first error: operators fix a file faster when
//! `check` lists everything at once, the way compilers do.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::model::Pending;
use crate::core::location::Location;

/// One problem in a configuration file, shown as `FILE:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column; `None` when the problem has no place in a
    /// file (e.g. the file cannot be read).
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                line,
                col,
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl ConfigError {
    /// An error found after parsing, at the place of the value it is about.
    pub fn at(location: &Location, message: impl Into<String>) -> Self {
        ConfigError {
            file: location.file.to_path_buf(),
            position: Some((location.line, location.col)),
            message: message.into(),
        }
    }

    /// An error about the file as a whole.
    pub fn in_file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            position: None,
            message: message.into(),
        }
    }
}

/// All the problems of one load, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A source text and the errors found in it so far.
pub struct Diagnostics<'s> {
    file: &'s Path,
    text: &'s str,
    errors: Vec<(usize, ConfigError)>,
    pending: Vec<Pending>,
}

impl<'s> Diagnostics<'s> {
    pub fn new(file: &'s Path, text: &'s str) -> Self {
        Diagnostics {
            file,
            text,
            errors: Vec::new(),
            pending: Vec::new(),
        }
    }

    pub fn file(&self) -> &'s Path {
        self.file
    }

    /// The source text of `span`, as written (quotes included).
    pub fn source(&self, span: Range<usize>) -> &'s str {
        self.text.get(span).unwrap_or("")
    }

    /// Records an error at the start of `span`.
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let position = Some(line_col(self.text, span.start));
        self.errors.push((
            span.start,
            ConfigError {
                file: self.file.to_path_buf(),
                position,
                message: message.into(),
            },
        ));
    }

    /// A value the runtime compiles, for `check` to compile should the
    /// file not make a `Config`.
    pub fn pending(&mut self, value: Pending) {
        self.pending.push(value);
    }

    pub fn take_pending(&mut self) -> Vec<Pending> {
        std::mem::take(&mut self.pending)
    }

    /// Where `span` starts, for values compiled after parsing.
    pub fn location(&self, span: Range<usize>) -> Location {
        let (line, col) = line_col(self.text, span.start);
        Location {
            file: self.file.into(),
            line,
            col,
        }
    }

    /// Errors found in another file that this one names (e.g. a keys
    /// file), reported at the place that names it so the order stays
    /// readable.
    pub fn absorb(&mut self, at: Range<usize>, errors: Vec<ConfigError>) {
        self.errors
            .extend(errors.into_iter().map(|e| (at.start, e)));
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The errors sorted by their place in the file.
    pub fn into_errors(mut self) -> Vec<ConfigError> {
        self.errors.sort_by_key(|(offset, _)| *offset);
        self.errors.into_iter().map(|(_, e)| e).collect()
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

/// The known name closest to a misspelt one, if any is close enough to be a
/// plausible typo (`requre_scopes` -> `require_scopes`).
pub fn did_you_mean<'a>(
    unknown: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(unknown, k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 4));
    }

    #[test]
    fn suggests_close_names_only() {
        let known = ["require_scopes", "path_prefix", "upstream"];
        assert_eq!(did_you_mean("requre_scopes", known), Some("require_scopes"));
        assert_eq!(did_you_mean("upstrem", known), Some("upstream"));
        assert_eq!(did_you_mean("zzz", known), None);
    }
}
