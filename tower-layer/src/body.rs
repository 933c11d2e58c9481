//! The response body the layer hands back: masked as it streams, passed through (upgrades), or
//! a refusal's `Status`.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use kubeleash_core::mask::{MaskError, Masker};
use pin_project_lite::pin_project;

/// The error type of [`KubeleashBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// A response body as the layer delivers it.
    #[project = Proj]
    pub struct KubeleashBody<B> {
        #[pin]
        inner: Option<B>,
        kind: Kind,
        completion: Option<Completion>,
    }
}

/// The record of a forwarded request, finished when its response body ends (or is dropped:
/// a client that closes a watch still leaves a record).
pub(crate) struct Completion {
    recorder: std::sync::Arc<dyn crate::Recorder>,
    record: Option<kubeleash_core::record::RecordBody>,
    status: u16,
    started: std::time::Instant,
    stream: &'static str,
    bytes: u64,
    cap: Option<usize>,
    captured: Vec<u8>,
    error: Option<String>,
}

impl Completion {
    pub(crate) fn new(
        recorder: std::sync::Arc<dyn crate::Recorder>,
        record: kubeleash_core::record::RecordBody,
        status: u16,
        started: std::time::Instant,
        stream: &'static str,
    ) -> Self {
        let cap = recorder.body_cap();
        Completion {
            recorder,
            record: Some(record),
            status,
            started,
            stream,
            bytes: 0,
            cap,
            captured: Vec::new(),
            error: None,
        }
    }

    fn data(&mut self, b: &[u8]) {
        self.bytes += b.len() as u64;
        if let Some(cap) = self.cap {
            let room = cap.saturating_sub(self.captured.len());
            self.captured.extend_from_slice(&b[..room.min(b.len())]);
        }
    }

    fn finish(&mut self) {
        let Some(mut rec) = self.record.take() else {
            return;
        };
        rec.response = Some(kubeleash_core::record::RecordedResponse {
            status: self.status,
            bytes: self.bytes,
            duration_ms: self.started.elapsed().as_millis() as u64,
            stream: self.stream.into(),
            body: self
                .cap
                .map(|_| String::from_utf8_lossy(&self.captured).into_owned()),
            error: self.error.take(),
        });
        // A full queue waits (never drops); a failed writer has nothing left to lose.
        let _ = self.recorder.record(rec);
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if self.record.is_some() && self.error.is_none() {
            self.error = Some(
                "the stream was cut before its end (the client went away or the proxy shut down)"
                    .into(),
            );
        }
        self.finish();
    }
}

enum Kind {
    /// Frames go through the masker; the masker's refusal ends the body with an error.
    Masked {
        masker: Box<Masker>,
        trailers: Option<HeaderMap>,
        done: bool,
    },
    /// Passed through untouched (an upgraded connection's response).
    Passthrough,
    /// A body the layer made (a refusal).
    Full(Option<Bytes>),
    /// The masker refused the response before a byte of it was sent.
    Refused(Option<MaskError>),
}

impl<B> KubeleashBody<B> {
    pub(crate) fn masked(inner: B, masker: Masker) -> Self {
        KubeleashBody {
            inner: Some(inner),
            kind: Kind::Masked {
                masker: Box::new(masker),
                trailers: None,
                done: false,
            },
            completion: None,
        }
    }

    pub(crate) fn passthrough(inner: B) -> Self {
        KubeleashBody {
            inner: Some(inner),
            kind: Kind::Passthrough,
            completion: None,
        }
    }

    pub(crate) fn full(data: Bytes) -> Self {
        KubeleashBody {
            inner: None,
            kind: Kind::Full(Some(data)),
            completion: None,
        }
    }

    pub(crate) fn refused(error: MaskError) -> Self {
        KubeleashBody {
            inner: None,
            kind: Kind::Refused(Some(error)),
            completion: None,
        }
    }

    pub(crate) fn completing(mut self, completion: Option<Completion>) -> Self {
        self.completion = completion;
        self
    }
}

impl<B> Body for KubeleashBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Proj {
            inner,
            kind,
            completion,
        } = self.project();
        let r = poll(inner, kind, cx);
        if let Some(c) = completion.as_mut() {
            match &r {
                Poll::Ready(Some(Ok(f))) => {
                    if let Some(d) = f.data_ref() {
                        c.data(d);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    c.error = Some(e.to_string());
                    c.finish();
                }
                Poll::Ready(None) => c.finish(),
                Poll::Pending => {}
            }
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(d) => d.is_none(),
            Kind::Refused(e) => e.is_none(),
            Kind::Passthrough => self.inner.as_ref().is_none_or(Body::is_end_stream),
            Kind::Masked { done, trailers, .. } => *done && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Kind::Passthrough => self.inner.as_ref().map(Body::size_hint).unwrap_or_default(),
            _ => SizeHint::default(),
        }
    }
}

fn poll<B>(
    mut inner: Pin<&mut Option<B>>,
    kind: &mut Kind,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match kind {
        Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        Kind::Refused(e) => Poll::Ready(e.take().map(|e| Err(e.into()))),
        Kind::Passthrough => match inner.as_mut().as_pin_mut() {
            Some(b) => b.poll_frame(cx).map_err(Into::into),
            None => Poll::Ready(None),
        },
        Kind::Masked {
            masker,
            trailers,
            done,
        } => loop {
            if *done {
                return Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let Some(b) = inner.as_mut().as_pin_mut() else {
                *done = true;
                continue;
            };
            let mut out = Vec::new();
            match ready!(b.poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if let Err(e) = masker.feed_into(&data, &mut out) {
                            *done = true;
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            *trailers = Some(t);
                            *done = true;
                            if let Err(e) = masker.finish_into(&mut out) {
                                *trailers = None;
                                return Poll::Ready(Some(Err(e.into())));
                            }
                        }
                    }
                },
                Some(Err(e)) => {
                    *done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => {
                    *done = true;
                    if let Err(e) = masker.finish_into(&mut out) {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                }
            }
            // An empty data frame is not the end: keep reading.
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        },
    }
}
