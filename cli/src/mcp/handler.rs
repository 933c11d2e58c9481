//! The MCP server itself (rmcp's `ServerHandler`): tools listed as the policy allows, each call
//! run as the requests it amounts to through the engine.

use std::sync::Arc;

use rmcp::ErrorData as McpError;
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RoleServer};
use serde_json::Map;

use super::calls::{self, Ctx};
use super::catalogue;
use super::discovery::Discovery;
use super::engine::Engine;
use super::held::Progress;
use super::tool_error::ToolError;
use kubeleash_tower::Mode;

/// One server for every session (stdio has one; streamable HTTP one per client session).
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    engine: Engine,
    discovery: Discovery,
}

impl Server {
    pub fn new(engine: Engine) -> Server {
        Server {
            shared: Arc::new(Shared {
                engine,
                discovery: Discovery::default(),
            }),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    fn observe(&self) -> bool {
        self.shared.engine.mode() == Mode::Audit
    }
}

const INSTRUCTIONS: &str = "Kubernetes through kubeleash: every tool call is decided by the \
operator's policy as the Kubernetes API requests it amounts to (allowed, refused with the rule \
and the nearest allowed request, or held for a person's approval), secret values come back \
masked, and everything is recorded. Use `can_i` to ask before you act; a refusal says what you \
may do instead.";

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("kubeleash", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let engine = &self.shared.engine;
        Ok(ListToolsResult::with_all_items(catalogue::listed(
            &engine.policy().get(),
            engine.identity(),
            self.observe(),
        )))
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
        let ctx = Ctx {
            engine: &self.shared.engine,
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
