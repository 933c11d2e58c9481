//! The response body the layer hands back: masked as it streams, passed through (upgrades), or
//! a refusal's `Status`.

use kubeleash_core::record::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use kubeleash_core::mask::{MaskSet, Masker};
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
    /// The layer's flag that a record failed (later requests are refused).
    failed: Arc<AtomicBool>,
    /// Error texts are masked before they are recorded.
    masks: Arc<MaskSet>,
    record: Option<Box<kubeleash_core::record::RecordBody>>,
    status: u16,
    started: std::time::Instant,
    stream: Stream,
    bytes: u64,
    cap: Option<usize>,
    captured: Vec<u8>,
    error: Option<String>,
}

impl Completion {
    pub(crate) fn new(
        recorder: std::sync::Arc<dyn crate::Recorder>,
        failed: Arc<AtomicBool>,
        masks: Arc<MaskSet>,
        record: Box<kubeleash_core::record::RecordBody>,
        status: u16,
        started: std::time::Instant,
        stream: Stream,
    ) -> Self {
        let cap = recorder.body_cap();
        Completion {
            recorder,
            failed,
            masks,
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
            stream: self.stream,
            body: self
                .cap
                .map(|_| String::from_utf8_lossy(&self.captured).into_owned()),
            error: self
                .error
                .take()
                .map(|e| crate::scrub::scrub(&self.masks, &e)),
        });
        // Too late to refuse this one: refuse every later request until recording works.
        if self.recorder.record(*rec).is_err() {
            self.failed.store(true, Ordering::Release);
        }
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

/// The upstream body failed; its text is for the record only.
#[derive(Debug)]
struct UpstreamError(BoxError);

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl std::error::Error for UpstreamError {}

fn upstream(e: impl Into<BoxError>) -> BoxError {
    Box::new(UpstreamError(e.into()))
}

/// What the client is told when the upstream body fails.
#[derive(Debug, thiserror::Error)]
#[error("kubeleash: the API server's response was cut off; the operator's record has the details")]
pub(crate) struct UpstreamCut;

/// A stream's view of the policy: the generation it started under, and whether the last byte
/// it sent ended an event or a line (a safe place to stop). After a reload the stream ends at
/// once at a boundary, else with the next chunk: through its first line end if it has one.
pub(crate) struct Reload {
    generation: Arc<AtomicU64>,
    seen: u64,
    at_boundary: bool,
    ended: bool,
}

impl Reload {
    pub(crate) fn new(generation: Arc<AtomicU64>, seen: u64) -> Reload {
        Reload {
            generation,
            seen,
            at_boundary: true,
            ended: false,
        }
    }

    fn changed(&self) -> bool {
        self.generation.load(Ordering::Acquire) != self.seen
    }
}

enum Kind {
    /// Frames go through the masker; the masker's refusal ends the body with an error.
    Masked {
        masker: Box<Masker>,
        done: bool,
        /// Bytes of masked output left to send (a pod log's `limitBytes`, applied after
        /// masking); the body ends when none are left.
        left: Option<u64>,
        /// For streams (watches, followed logs): end at a boundary when the policy changes.
        reload: Option<Reload>,
    },
    /// Passed through untouched (an upgraded connection's response).
    Passthrough,
    /// A body the layer made (a refusal).
    Full(Option<Bytes>),
}

impl<B> KubeleashBody<B> {
    pub(crate) fn masked(inner: B, masker: Masker, reload: Option<Reload>) -> Self {
        KubeleashBody {
            inner: Some(inner),
            kind: Kind::Masked {
                masker: Box::new(masker),
                done: false,
                left: None,
                reload,
            },
            completion: None,
        }
    }

    /// Send at most `limit` bytes of the masked output, then end.
    pub(crate) fn limited(mut self, limit: Option<u64>) -> Self {
        if let Kind::Masked { left, .. } = &mut self.kind {
            *left = limit;
        }
        self
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
        let mut r = poll(inner, kind, cx);
        // An upstream failure is told to the client in general terms only (its text can carry
        // the operator's connection details); the record keeps it, masked.
        let mut detail = None;
        if let Poll::Ready(Some(Err(e))) = &mut r
            && e.is::<UpstreamError>()
        {
            detail = Some(e.to_string());
            *e = Box::new(UpstreamCut);
        }
        if let Some(c) = completion.as_mut() {
            match &r {
                Poll::Ready(Some(Ok(f))) => {
                    if let Some(d) = f.data_ref() {
                        c.data(d);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    c.error = Some(detail.take().unwrap_or_else(|| e.to_string()));
                    c.finish();
                }
                Poll::Ready(None) => {
                    if let Kind::Masked {
                        reload: Some(r), ..
                    } = kind
                        && r.ended
                    {
                        c.error = Some(
                            "the stream was ended at a policy reload (the client reconnects under the new policy)"
                                .into(),
                        );
                    }
                    c.finish();
                }
                Poll::Pending => {}
            }
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(d) => d.is_none(),
            Kind::Passthrough => self.inner.as_ref().is_none_or(Body::is_end_stream),
            Kind::Masked { done, .. } => *done,
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
        Kind::Passthrough => match inner.as_mut().as_pin_mut() {
            Some(b) => b.poll_frame(cx).map_err(upstream),
            None => Poll::Ready(None),
        },
        Kind::Masked {
            masker,
            done,
            left,
            reload,
        } => loop {
            if *done {
                return Poll::Ready(None);
            }
            if let Some(r) = reload.as_mut()
                && r.changed()
                && r.at_boundary
            {
                r.ended = true;
                *done = true;
                continue;
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
                        // Trailers are dropped: the masker never reads them, and an upstream
                        // could put there what the body's masks would have covered.
                        if frame.is_trailers() {
                            *done = true;
                            if let Err(e) = masker.finish_into(&mut out) {
                                return Poll::Ready(Some(Err(e.into())));
                            }
                        }
                    }
                },
                Some(Err(e)) => {
                    *done = true;
                    return Poll::Ready(Some(Err(upstream(e))));
                }
                None => {
                    *done = true;
                    if let Err(e) = masker.finish_into(&mut out) {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                }
            }
            if let Some(r) = reload.as_mut()
                && !out.is_empty()
            {
                if r.changed() {
                    // Send up to the end of the event or line under way, then stop; a chunk
                    // with no line end (a pod that never prints one) is the last either way,
                    // so the stream cannot be held open past the reload.
                    if let Some(i) = out.iter().position(|b| *b == b'\n') {
                        out.truncate(i + 1);
                    }
                    r.ended = true;
                    *done = true;
                }
                r.at_boundary = out.last() == Some(&b'\n');
            }
            if let Some(n) = left.as_mut() {
                let room = usize::try_from(*n).unwrap_or(usize::MAX);
                if out.len() >= room {
                    // The limit is reached: cut the masked output, and stop reading upstream.
                    out.truncate(room);
                    *done = true;
                    inner.set(None);
                }
                *n -= out.len() as u64;
            }
            // An empty data frame is not the end: keep reading.
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        },
    }
}
