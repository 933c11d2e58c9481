use thiserror::Error;

/// Why a request target was refused instead of classified.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NonCanonical {
    /// Placeholder until the classifier lands.
    #[error("request target `{0}` is not canonical")]
    Target(String),
}

impl NonCanonical {
    /// A stable, machine-readable code for this refusal.
    pub fn code(&self) -> &'static str {
        "non-canonical-target"
    }
}
