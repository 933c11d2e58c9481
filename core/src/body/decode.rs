use super::{BodyError, BodyLimits, DecodedBody};
use crate::request::Request;

/// Decode a request body as the API server would; `Ok(None)` for an empty body.
pub fn decode(
    _request: &Request,
    _body: &[u8],
    _limits: &BodyLimits,
) -> Result<Option<DecodedBody>, BodyError> {
    Err(BodyError::Undecodable)
}
