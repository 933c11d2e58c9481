//! The MCP server itself (rmcp's `ServerHandler`): tools listed as the policy allows, each call
//! run as the requests it amounts to through the engine.

use std::sync::Arc;

use rmcp::ErrorData as McpError;
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::{NotificationContext, Peer, RequestContext, RoleServer};
use serde_json::Map;

use super::calls::{self, Ctx};
use super::catalogue;
use super::discovery::Discovery;
use super::engine::{Caller, Engine};
use super::held::Progress;
use super::tool_error::ToolError;
use kubeleash_core::policy::Identity;
use kubeleash_tower::Mode;

/// One server for every session (stdio has one; streamable HTTP one per client session).
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    engine: Engine,
    discovery: Discovery,
    /// The clients to tell when a reloaded policy changes the tool list.
    peers: std::sync::Mutex<Vec<Peer<RoleServer>>>,
}

impl Server {
    pub fn new(engine: Engine) -> Server {
        Server {
            shared: Arc::new(Shared {
                engine,
                discovery: Discovery::default(),
                peers: std::sync::Mutex::default(),
            }),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    fn observe(&self) -> bool {
        self.shared.engine.mode() == Mode::Audit
    }

    /// The tools `caller` sees.
    fn listed(&self, caller: &Identity) -> Vec<rmcp::model::Tool> {
        let engine = &self.shared.engine;
        catalogue::listed(&engine.policy().get(), caller, self.observe())
    }

    /// Who a request is from: the fixed identity, or the one its HTTP request proved (the door
    /// verified its OIDC token and left a [`Caller`] in the request's extensions).
    fn caller(&self, extensions: &rmcp::model::Extensions) -> Result<Identity, McpError> {
        if let Some(id) = self.shared.engine.identity() {
            return Ok(id.clone());
        }
        extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.extensions.get::<Caller>())
            .map(|c| c.0.clone())
            .ok_or_else(|| {
                McpError::invalid_request("the request carries no verified identity", None)
            })
    }

    /// Compile the policy at `path` and use it for every call from now on (calls already
    /// sent keep the decision they had); clients are told when the tool list changed.
    pub async fn reload(&self, path: &std::path::Path) -> Result<(), String> {
        let policy = crate::proxy::load_policy(&path.to_path_buf())?;
        // Whether any tool list changed is a question per identity; with OIDC, every client is
        // told to ask again (a list is cheap to send).
        let probe = self.shared.engine.identity().cloned();
        let before = probe.as_ref().map(|id| self.listed(id));
        self.shared.engine.policy().set(policy);
        if probe.as_ref().map(|id| self.listed(id)) != before || probe.is_none() {
            let peers: Vec<Peer<RoleServer>> = {
                let mut p = self.shared.peers.lock().unwrap_or_else(|e| e.into_inner());
                p.retain(|peer| !peer.is_transport_closed());
                p.clone()
            };
            for peer in peers {
                let _ = peer.notify_tool_list_changed().await;
            }
        }
        Ok(())
    }
}

const INSTRUCTIONS: &str = "Kubernetes through kubeleash: every tool call is decided by the \
operator's policy as the Kubernetes API requests it amounts to (allowed, refused with the rule \
and the nearest allowed request, or held for a person's approval), secret values come back \
masked, and everything is recorded. Use `can_i` to ask before you act; a refusal says what you \
may do instead.";

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("kubeleash", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let mut p = self.shared.peers.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|peer| !peer.is_transport_closed());
        p.push(context.peer);
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let caller = self.caller(&context.extensions)?;
        Ok(ListToolsResult::with_all_items(self.listed(&caller)))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.as_ref();
        if catalogue::find(name).is_none() {
            return Err(McpError::invalid_params(
                format!(
                    "there is no tool `{}`; tools/list says which there are",
                    super::args::quoted(name, 64)
                ),
                None,
            ));
        }
        let empty = Map::new();
        let args = request.arguments.as_ref().unwrap_or(&empty);
        let progress = context.meta.get_progress_token().map(|token| Progress {
            peer: context.peer.clone(),
            token,
        });
        let caller = self.caller(&context.extensions)?;
        let ctx = Ctx {
            engine: &self.shared.engine,
            caller,
            discovery: &self.shared.discovery,
            progress: progress.as_ref(),
        };
        let done = tokio::select! {
            done = calls::run(&ctx, name, args) => done,
            _ = context.ct.cancelled() => Err(ToolError::failed(
                "the call was cancelled; a request already sent may still have taken effect",
            )),
        };
        Ok(match done {
            Ok(d) => {
                let mut r = CallToolResult::success(vec![ContentBlock::text(d.text)]);
                r.structured_content = Some(d.structured);
                r
            }
            Err(e) => e.into_result(),
        }
        .into())
    }
}
