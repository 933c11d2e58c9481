use std::fmt;

use serde::Serialize;
use thiserror::Error;

/// Where in the policy text something is: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Location {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
}

impl Location {
    pub(crate) fn of(loc: &serde_saphyr::Location) -> Option<Location> {
        (loc.line() > 0).then(|| Location {
            line: loc.line(),
            column: loc.column(),
        })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem in a policy document.
///
/// The shape (message, help, code, location) is the one the Python and Node bindings report.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize)]
#[error("{}{message}", location.map(|l| format!("line {}, column {}: ", l.line, l.column)).unwrap_or_default())]
pub struct PolicyError {
    message: String,
    help: Option<String>,
    code: &'static str,
    location: Option<Location>,
}

impl PolicyError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        PolicyError {
            message: message.into(),
            help: None,
            code,
            location: None,
        }
    }

    pub(crate) fn at(mut self, loc: &serde_saphyr::Location) -> Self {
        self.location = Location::of(loc);
        self
    }

    pub(crate) fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// What is wrong, in lowercase, with the offending input quoted.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// How to fix it, when there is more to say than the message.
    pub fn help_text(&self) -> Option<&str> {
        self.help.as_deref()
    }

    /// A stable, machine-readable code (`yaml-syntax`, `unknown-verb`, ...).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Line and column of the offending node, when known.
    pub fn location(&self) -> Option<Location> {
        self.location
    }
}

/// Every problem found while compiling a policy; never empty.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize)]
#[serde(transparent)]
pub struct PolicyErrors {
    errors: Vec<PolicyError>,
}

impl PolicyErrors {
    pub(crate) fn new(errors: Vec<PolicyError>) -> Self {
        PolicyErrors { errors }
    }

    /// The individual errors, in document order.
    pub fn errors(&self) -> &[PolicyError] {
        &self.errors
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "policy has {n} error{}", if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            write!(f, "; {e}")?;
        }
        Ok(())
    }
}
