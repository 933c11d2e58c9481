use thiserror::Error;

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Placeholder until the decoder lands.
    #[error("the request body could not be decoded")]
    Undecodable,
}
