//! MCP over streamable HTTP, on loopback, behind the proxy's door: the `Host` must name the
//! listen address (against DNS rebinding), no browser may call it (`Origin`, `Sec-Fetch-*`),
//! and every request carries the bearer token kubeleash wrote to `--agent-token-file` (anyone
//! on the machine can reach a loopback port; only the agent has the file). rmcp's
//! `StreamableHttpService` serves what passes, at `/mcp`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::handler::Server;
use crate::proxy::{Access, AgentToken};

/// The path the MCP endpoint is served at.
pub const PATH: &str = "/mcp";

/// Connections open at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;

type Body = BoxBody<Bytes, std::convert::Infallible>;

fn refused(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = kubeleash_core::status::Status::failure(code, reason, message).to_json();
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// A bound listener, ready to serve.
pub struct Listening {
    listener: TcpListener,
    pub addr: SocketAddr,
}

/// Bind `listen` (loopback only).
pub async fn bind(listen: SocketAddr) -> Result<Listening, String> {
    if !listen.ip().is_loopback() {
        return Err(format!(
            "--listen `{listen}` is not a loopback address; kubeleash mcp listens on loopback only"
        ));
    }
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        format!(
            "cannot listen on {listen}: {}",
            e.to_string().to_lowercase()
        )
    })?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    Ok(Listening { listener, addr })
}

/// Serve MCP at `http://ADDR/mcp` until `stop` is cancelled.
pub async fn serve(l: Listening, server: Server, token: AgentToken, stop: CancellationToken) {
    let access = Arc::new(Access::new(l.addr, Some(token)));
    let mut config = StreamableHttpServerConfig::default();
    config.cancellation_token = stop.child_token();
    config.allowed_hosts = vec![l.addr.to_string(), format!("localhost:{}", l.addr.port())];
    let mcp = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    loop {
        let (stream, _) = tokio::select! {
            r = l.listener.accept() => match r {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let (access, mcp, http1, stop) = (
            Arc::clone(&access),
            mcp.clone(),
            http1.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (access, mut mcp) = (Arc::clone(&access), mcp.clone());
                async move {
                    let (mut parts, body) = req.into_parts();
                    if let Err(r) = access.admit(&mut parts) {
                        access.log_refusal(&r, parts.method.as_str());
                        return Ok::<_, std::convert::Infallible>(refused(
                            r.code, r.reason, &r.message,
                        ));
                    }
                    if parts.uri.path() != PATH {
                        return Ok(refused(
                            404,
                            "NotFound",
                            &format!("kubeleash mcp serves MCP at {PATH} only"),
                        ));
                    }
                    match mcp.call(Request::from_parts(parts, body)).await {
                        Ok(r) => Ok(r),
                        Err(never) => match never {},
                    }
                }
            });
            let conn = http1.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}
