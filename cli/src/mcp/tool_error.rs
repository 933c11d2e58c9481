//! A tool call that did not do what it was asked, as the agent reads it: a tool result with
//! `isError: true`, its text saying what happened and what to do, its structured content the
//! Kubernetes `Status` (with kubeleash's causes: the rule, the reason, the nearest allowed
//! request) or the pending approval.

use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Value, json};

use super::engine::Reply;

/// Why a call failed.
#[derive(Debug)]
pub enum ToolError {
    /// The arguments are wrong; nothing was sent.
    Invalid(String),
    /// Refused, by kubeleash's policy or by the API server.
    Refused { text: String, status: Value },
    /// Held for a person's approval, and answered at once (non-blocking approvals).
    Pending {
        id: String,
        retry_after: u64,
        status: Value,
        /// What the agent must keep the same when it calls again.
        note: Option<String>,
    },
    /// Could not be done (the API server unreachable, an answer that is not JSON).
    Failed(String),
}

impl ToolError {
    pub fn invalid(text: impl Into<String>) -> ToolError {
        ToolError::Invalid(text.into())
    }

    pub fn failed(text: impl Into<String>) -> ToolError {
        ToolError::Failed(text.into())
    }

    /// The error an unsuccessful answer amounts to; `doing` says what the call was for.
    pub fn from_reply(reply: &Reply, doing: &str) -> ToolError {
        let status: Value = serde_json::from_slice(&reply.body).unwrap_or_else(|_| {
            json!({
                "kind": "Status",
                "status": "Failure",
                "code": reply.status.as_u16(),
                "message": String::from_utf8_lossy(&reply.body.slice(..reply.body.len().min(2048))),
            })
        });
        let message = status
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let causes: Vec<&Value> = status
            .pointer("/details/causes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        fn field(c: &Value) -> &str {
            c.get("field").and_then(Value::as_str).unwrap_or("")
        }
        let cause = |name: &str| {
            causes
                .iter()
                .find(|c| field(c) == name)
                .and_then(|c| c.get("message"))
                .and_then(Value::as_str)
        };
        if !reply.reached
            && let Some(id) = reply
                .headers
                .get("x-kubeleash-approval-id")
                .and_then(|v| v.to_str().ok())
            && causes
                .iter()
                .any(|c| c.get("reason").and_then(Value::as_str) == Some("ApprovalPending"))
        {
            let retry_after = status
                .pointer("/details/retryAfterSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(10);
            return ToolError::Pending {
                id: id.to_string(),
                retry_after,
                status,
                note: None,
            };
        }
        // The layer's own answer, or the API server's: told by whether the request went past
        // the layer, never by what the answer says (an upstream can write "kubeleash").
        let by_kubeleash = !reply.reached;
        let text = if by_kubeleash {
            let said = message.strip_prefix("kubeleash: ").unwrap_or(&message);
            let mut t = format!("kubeleash refused this: {said}");
            if let Some(rule) = cause("kubeleash.rule")
                && rule != "none"
                && !message.contains(&format!("\"{rule}\""))
            {
                t.push_str(&format!(" (rule \"{rule}\")"));
            }
            t
        } else {
            let reason = status.get("reason").and_then(Value::as_str).unwrap_or("");
            format!(
                "the API server answered {} {reason} to {doing}: {message}",
                reply.status.as_u16()
            )
        };
        ToolError::Refused { text, status }
    }

    /// The tool result the agent gets.
    pub fn into_result(self) -> CallToolResult {
        let (text, structured) = match self {
            ToolError::Invalid(t) => (format!("invalid arguments: {t}"), None),
            ToolError::Failed(t) => (t, None),
            ToolError::Refused { text, status } => (text, Some(json!({"status": status}))),
            ToolError::Pending {
                id,
                retry_after,
                status,
                note,
            } => (
                format!(
                    "not done yet: held for a person's approval (kubeleash approval {id}). \
                     Call the tool again with the same arguments in {retry_after} seconds or \
                     later: once a person approves, that call does it; if they refuse, it says \
                     why.{}",
                    note.map(|n| format!(" Note: {n}.")).unwrap_or_default()
                ),
                Some(json!({
                    "approval": {"id": id, "state": "pending", "retryAfterSeconds": retry_after},
                    "status": status,
                })),
            ),
        };
        let mut r = CallToolResult::error(vec![ContentBlock::text(text)]);
        r.structured_content = structured;
        r
    }
}
