//! MCP over streamable HTTP, on loopback, behind the proxy's door: the `Host` must name the
//! listen address (against DNS rebinding), no browser may call it (`Origin`, `Sec-Fetch-*`),
//! and every request proves who sent it (anyone on the machine can reach a loopback port): the
//! bearer token kubeleash wrote to `--agent-token-file`, which only the agent has, or the
//! agent's own OIDC token, verified as the proxy verifies it, whose identity the call is then
//! decided for. rmcp's `StreamableHttpService` serves what passes, at `/mcp`.

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

use super::engine::Caller;
use super::handler::Server;
use crate::proxy::{Access, AgentToken, Oidc};

/// How an HTTP request proves who sent it.
pub enum Door {
    /// The token kubeleash made and wrote for the agent (the identity is `--user`/`--group`).
    Token(AgentToken),
    /// The agent's OIDC token: its identity is the caller's.
    Oidc(Arc<Oidc>),
}

/// The path the MCP endpoint is served at.
pub const PATH: &str = "/mcp";

/// Connections open at once; more are answered 503 and closed, without waiting for a slot
/// (a client that holds connections open cannot stall the accept loop).
const MAX_CONNECTIONS: usize = 256;

/// How long a client has to send a request's headers, and the longest a kept-alive connection
/// may idle.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

type Body = BoxBody<Bytes, std::convert::Infallible>;

fn refused(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = kubeleash_core::status::Status::failure(code, reason, message).to_json();
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    // A refused client gets no kept-alive connection to hold.
    r.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
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
pub async fn serve(l: Listening, server: Server, door: Door, stop: CancellationToken) {
    let (token, oidc) = match door {
        Door::Token(t) => (Some(t), None),
        Door::Oidc(o) => (None, Some(o)),
    };
    let access = Arc::new(Access::new(l.addr, token));
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
        .header_read_timeout(HEADER_TIMEOUT);
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
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            let _ = stream.try_write(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (access, oidc, mcp, http1, stop) = (
            Arc::clone(&access),
            oidc.clone(),
            mcp.clone(),
            http1.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (access, oidc, mut mcp) = (Arc::clone(&access), oidc.clone(), mcp.clone());
                async move {
                    let (mut parts, body) = req.into_parts();
                    if let Err(r) = access.admit(&mut parts) {
                        access.log_refusal(&r, parts.method.as_str());
                        return Ok::<_, std::convert::Infallible>(refused(
                            r.code, r.reason, &r.message,
                        ));
                    }
                    if let Some(oidc) = &oidc {
                        match oidc.identity(&parts) {
                            Ok(id) => {
                                parts.extensions.insert(Caller(id));
                            }
                            Err(why) => {
                                return Ok(refused(
                                    401,
                                    "Unauthorized",
                                    &format!(
                                        "kubeleash: the request carries no identity kubeleash can verify: {why}"
                                    ),
                                ));
                            }
                        }
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
