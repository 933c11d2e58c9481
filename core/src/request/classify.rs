use super::{NonCanonical, Request};

/// Classify a request exactly as the API server would, or refuse a non-canonical target.
pub fn classify(
    _method: &str,
    target: &str,
    _headers: &http::HeaderMap,
) -> Result<Request, NonCanonical> {
    Err(NonCanonical::Target(target.to_string()))
}
