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
    }
}

enum Kind {
    /// Frames go through the masker; the masker's refusal ends the body with an error.
    Masked { masker: Box<Masker>, trailers: Option<HeaderMap>, done: bool },
    /// Passed through untouched (an upgraded connection's response).
    Passthrough,
    /// A body the layer made (a refusal).
    Full(Option<Bytes>),
    /// The masker refused the response before a byte of it was sent.
    Refused(Option<MaskError>),
}

impl<B> KubeleashBody<B> {
    pub(crate) fn masked(inner: B, masker: Masker) -> Self {
        KubeleashBody { inner: Some(inner), kind: Kind::Masked { masker: Box::new(masker), trailers: None, done: false } }
    }

    pub(crate) fn passthrough(inner: B) -> Self {
        KubeleashBody { inner: Some(inner), kind: Kind::Passthrough }
    }

    pub(crate) fn full(data: Bytes) -> Self {
        KubeleashBody { inner: None, kind: Kind::Full(Some(data)) }
    }

    pub(crate) fn refused(error: MaskError) -> Self {
        KubeleashBody { inner: None, kind: Kind::Refused(Some(error)) }
    }
}

impl<B> Body for KubeleashBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Proj { mut inner, kind } = self.project();
        match kind {
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Refused(e) => Poll::Ready(e.take().map(|e| Err(e.into()))),
            Kind::Passthrough => match inner.as_mut().as_pin_mut() {
                Some(b) => b.poll_frame(cx).map_err(Into::into),
                None => Poll::Ready(None),
            },
            Kind::Masked { masker, trailers, done } => loop {
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
