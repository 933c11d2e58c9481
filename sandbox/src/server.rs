//! The HTTP side: accept loop, one hyper HTTP/1.1 connection task per client, body limits,
//! headers every API server response carries, gzip above 128 KiB, request logging, shutdown.

use std::convert::Infallible;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::ids::Ids;
use crate::negotiate;
use crate::routes;
use crate::status::ApiError;
use crate::store::Store;
use crate::{Options, json, seed};

use kubeleash_core::body::MAX_BODY_BYTES as MAX_BODY;
/// Responses larger than this are gzipped for clients that accept it (`defaultGzipThresholdBytes`).
const GZIP_THRESHOLD: usize = 128 * 1024;

/// Everything a request handler can reach.
#[derive(Debug)]
pub struct State {
    pub store: Store,
    /// The resources CustomResourceDefinitions add.
    pub crds: crate::crd::Registry,
    pub ids: Ids,
    pub log_requests: bool,
    pub bookmark_interval: Duration,
    /// Becomes true when the sandbox shuts down; watches and log streams end on it.
    pub stop: watch::Receiver<bool>,
}

impl State {
    pub fn new(options: &Options, stop: watch::Receiver<bool>) -> Self {
        let ids = Ids::new(crate::time::now_nanos() as u64);
        let store = Store::new();
        seed::load(options.seed, &store, &ids);
        State {
            store,
            crds: crate::crd::Registry::default(),
            ids,
            log_requests: options.log_requests,
            bookmark_interval: options.bookmark_interval,
            stop,
        }
    }
}

/// A response body: all at once, or streamed from a channel (watches, followed logs).
#[derive(Debug)]
pub enum Body {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

/// What a handler answers, before the common headers and compression are applied.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Body,
    pub headers: Vec<(HeaderName, String)>,
}

impl Reply {
    pub fn bytes(status: u16, content_type: impl Into<String>, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type: content_type.into(),
            body: Body::Full(Some(Bytes::from(body))),
            headers: Vec::new(),
        }
    }

    /// A JSON object in the API server's key order.
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply::bytes(status, "application/json", json::ordered(value))
    }

    pub fn text(status: u16, text: &str) -> Reply {
        Reply::bytes(
            status,
            "text/plain; charset=utf-8",
            text.as_bytes().to_vec(),
        )
    }

    pub fn stream(content_type: impl Into<String>, rx: mpsc::Receiver<Bytes>) -> Reply {
        Reply {
            status: 200,
            content_type: content_type.into(),
            body: Body::Stream(rx),
            headers: Vec::new(),
        }
    }

    pub fn error(e: &ApiError) -> Reply {
        Reply::bytes(e.code, "application/json", json::to_vec(&e.to_status()))
    }

    /// Attach `Warning: 299 - "..."` headers, as the API server reports dropped unknown fields.
    pub fn with_warnings(mut self, warnings: &[String]) -> Reply {
        for w in warnings {
            self.headers.push((
                HeaderName::from_static("warning"),
                format!("299 - {}", serde_json::Value::String(w.clone())),
            ));
        }
        self
    }

    fn into_response(self, gzip_ok: bool, audit_id: &str) -> Response<Body> {
        let mut body = self.body;
        let mut gzipped = false;
        if let Body::Full(Some(b)) = &body
            && gzip_ok
            && b.len() > GZIP_THRESHOLD
        {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            if enc.write_all(b).is_ok()
                && let Ok(out) = enc.finish()
            {
                body = Body::Full(Some(Bytes::from(out)));
                gzipped = true;
            }
        }
        let mut resp = Response::new(body);
        *resp.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = resp.headers_mut();
        let mut put = |name: HeaderName, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.append(name, v);
            }
        };
        put(HeaderName::from_static("audit-id"), audit_id);
        put(header::CACHE_CONTROL, "no-cache, private");
        put(header::CONTENT_TYPE, &self.content_type);
        if gzipped {
            put(header::CONTENT_ENCODING, "gzip");
            put(header::VARY, "Accept-Encoding");
        }
        put(
            HeaderName::from_static("x-kubernetes-pf-flowschema-uid"),
            "7f3c1a7e-52d4-4a8e-9f0e-1c2b3d4e5f60",
        );
        put(
            HeaderName::from_static("x-kubernetes-pf-prioritylevel-uid"),
            "0c9d8e7f-6a5b-4c3d-8e2f-1a0b9c8d7e6f",
        );
        for (name, value) in self.headers {
            put(name, &value);
        }
        resp
    }
}

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

/// Resolves once the sandbox is shutting down (at once if it already is).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, inside: holding it across an await would
    // make the caller's future not `Send`.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
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
