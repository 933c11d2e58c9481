//! The HTTP side: accept loop, one hyper HTTP/1.1 connection task per client, body limits,
//! request logging, shutdown. What a handler answers and the headers every response carries
//! are `reply`'s; what handlers reach is `state`'s.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::negotiate;
use crate::reply::{Body, Reply};
use crate::routes;
use crate::state::State;
use crate::status::ApiError;
use kubeleash_core::body::MAX_BODY_BYTES as MAX_BODY;

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let (parts, incoming) = req.into_parts();
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let gzip_ok = negotiate::accepts_gzip(header(header::ACCEPT_ENCODING).as_deref());
    let body = match Limited::new(incoming, MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(_) => Err(ApiError::too_large()),
    };
    let reply = match body {
        Ok(body) => routes::dispatch(&state, &parts, body).await,
        Err(e) => Reply::error(&e),
    };
    if state.log_requests {
        eprintln!(
            "{} {} -> {} (accept: {}; content-type: {}; response: {})",
            parts.method,
            parts.uri,
            reply.status,
            header(header::ACCEPT).unwrap_or_default(),
            header(header::CONTENT_TYPE).unwrap_or_default(),
            reply.content_type,
        );
    }
    let audit_id = state.ids.uid();
    reply.into_response(gzip_ok, &audit_id)
}

/// Serve until `stop` turns true, then end every connection (and with them every watch).
pub async fn serve(listener: TcpListener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(state, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}
