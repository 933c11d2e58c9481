//! A tool call whose request the policy holds for a person: in blocking mode the call waits,
//! and a client that asked for progress hears which approval it waits on (its id, what a
//! person answers with `kubeleash approvals approve ID`) and, every few seconds, that it still
//! waits; in non-blocking mode the layer answers at once and the call says the approval is
//! pending ([`super::tool_error::ToolError::Pending`]).

use std::time::{Duration, Instant};

use kubeleash_core::policy::Identity;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::{Peer, RoleServer};
use tokio::sync::oneshot;

use super::engine::{Call, Engine, Reply};
use super::tool_error::ToolError;

/// How often a waiting call says it still waits.
const EVERY: Duration = Duration::from_secs(5);

/// Where a call's progress goes: the client's token for it.
pub struct Progress {
    pub peer: Peer<RoleServer>,
    pub token: ProgressToken,
}

impl Progress {
    async fn say(&self, progress: f64, total: f64, message: String) {
        let mut p = ProgressNotificationParam::new(self.token.clone(), progress);
        p.total = Some(total);
        p.message = Some(message);
        // A client that went away cannot be told; the call goes on (or is cancelled by rmcp).
        let _ = self.peer.notify_progress(p).await;
    }
}

/// Send `call`, telling `progress` while a person is asked.
pub async fn send(
    engine: &Engine,
    caller: &Identity,
    call: &Call,
    progress: Option<&Progress>,
) -> Result<Reply, ToolError> {
    let Some(progress) = progress.filter(|_| engine.blocking() && engine.has_approver()) else {
        return engine
            .send(caller, call, None)
            .await
            .map_err(ToolError::Failed);
    };
    let (tx, mut rx) = oneshot::channel();
    let sent = engine.send(caller, call, Some(tx));
    tokio::pin!(sent);
    let mut heard = false;
    let start = Instant::now();
    let total = engine.approval_timeout().as_secs_f64();
    let mut held: Option<String> = None;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    loop {
        tokio::select! {
            reply = &mut sent => return reply.map_err(ToolError::Failed),
            id = &mut rx, if !heard => {
                heard = true;
                if let Ok(id) = id {
                    progress
                        .say(
                            start.elapsed().as_secs_f64(),
                            total,
                            format!(
                                "held for a person's approval: kubeleash approval {id} (an operator answers with `kubeleash approvals approve {id}` or `deny {id}`); waiting up to {} s",
                                engine.approval_timeout().as_secs()
                            ),
                        )
                        .await;
                    held = Some(id);
                }
            }
            _ = tick.tick(), if held.is_some() => {
                let id = held.as_deref().unwrap_or_default();
                progress
                    .say(
                        start.elapsed().as_secs_f64(),
                        total,
                        format!("still waiting for a person to answer kubeleash approval {id}"),
                    )
                    .await;
            }
        }
    }
}
