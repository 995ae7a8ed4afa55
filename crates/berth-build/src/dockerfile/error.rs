//! Errors of the Dockerfile parser and of the shell-word lexer.

use std::fmt;

/// A Dockerfile that could not be parsed.
///
/// Displays as `Dockerfile:12:5: unknown instruction: RUNN` (`file:line:column: message`);
/// the file name is `Dockerfile` unless the caller set one with [`ParseError::with_file`] or
/// [`super::parse_file`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// Name of the Dockerfile as the user knows it, if the caller set one.
    pub file: Option<String>,
    /// 1-based line of the instruction (or directive) in error.
    pub line: usize,
    /// 1-based column (in characters) of the instruction keyword, 1 when not tied to one.
    pub column: usize,
    /// What is wrong, lowercase, without the location.
    pub message: String,
}

impl ParseError {
    /// An error at `line`:`column` (both 1-based; 0 is raised to 1).
    pub(crate) fn new(line: usize, column: usize, message: impl Into<String>) -> Self {
        ParseError {
            file: None,
            line: line.max(1),
            column: column.max(1),
            message: message.into(),
        }
    }

    /// The same error naming the file `name` (shown instead of `Dockerfile`).
    pub fn with_file(mut self, name: impl Into<String>) -> Self {
        self.file = Some(name.into());
        self
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().unwrap_or("Dockerfile");
        write!(f, "{file}:{}:{}: {}", self.line, self.column, self.message)
    }
}

/// A word that the shell lexer could not process (bad `${...}` syntax, unterminated quote,
/// `${V:?message}` on an unset variable, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {message}")]
pub struct ExpandError {
    /// The word as given to the lexer.
    pub word: String,
    /// What went wrong.
    pub message: String,
}
