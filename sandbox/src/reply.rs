//! What a handler answers (`Reply`), and how it becomes an HTTP response with the headers every
//! API server response carries (`Audit-Id`, `Cache-Control`, the priority-and-fairness UIDs)
//! and gzip above the API server's threshold. Its own module so the routes and the HTTP side
//! (`server`) both depend on it, not on each other.

use std::convert::Infallible;
use std::io::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Frame, SizeHint};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::json;
use crate::status::ApiError;

/// Responses larger than this are gzipped for clients that accept it (`defaultGzipThresholdBytes`).
const GZIP_THRESHOLD: usize = 128 * 1024;

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

    pub(crate) fn into_response(self, gzip_ok: bool, audit_id: &str) -> Response<Body> {
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
