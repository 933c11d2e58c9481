//! Kubernetes protobuf request bodies, which kubectl's typed `create` commands and client-go
//! send: read with kubeleash's own decoder (`kubeleash_core::body::protobuf_to_json`), which
//! gives the JSON the API server's types write for every built-in kind. The sandbox answers in
//! JSON, which those clients accept. The decoder is checked against the real API server in the
//! real-cluster suites, so the sandbox sharing it loses no check the fake could have made.

use serde_json::Value;

/// The body as a JSON object, or the error message for a 415.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    kubeleash_core::body::protobuf_to_json(body).map_err(|e| e.to_string())
}
