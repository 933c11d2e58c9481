//! The operator's credential overwritten in what the API server answers: a server (or whatever
//! stands in for it) that echoes the bearer token, a password or a client key into a response
//! hands it to the agent unless something knows it exactly. The masker's detectors recognise
//! token shapes (`Bearer ...`, JWTs); this knows the very values, from the kubeconfig, and
//! overwrites each occurrence byte for byte with `*` as the body streams: same length, so
//! framing and JSON stay valid, and across chunk boundaries (a value split over two chunks is
//! found). Only a chunk's end that could be the start of a value waits for the next chunk:
//! everything else goes out at once, so a watch event or a followed log line is never held
//! back.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use crate::DynBody;

/// Values shorter than this are not looked for: they would overwrite ordinary text, and no
/// credential is that short.
pub(crate) const MIN_SECRET: usize = 12;

/// The values to overwrite, longest first.
#[derive(Debug, Default)]
pub(crate) struct Secrets(Vec<Vec<u8>>);

impl Secrets {
    pub(crate) fn new(values: impl IntoIterator<Item = String>) -> Secrets {
        let mut v: Vec<Vec<u8>> = values
            .into_iter()
            .map(|s| s.trim().as_bytes().to_vec())
            .filter(|s| s.len() >= MIN_SECRET)
            .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        v.dedup();
        Secrets(v)
    }

    /// These and `value` too.
    pub(crate) fn with(&self, value: &str) -> Secrets {
        Secrets::new(
            self.0
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .chain([value.to_string()]),
        )
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many bytes at the end of `buf` could be the start of a value (a proper prefix of
    /// one): those must wait for the next chunk.
    fn pending_tail(&self, buf: &[u8]) -> usize {
        let mut keep = 0;
        for s in &self.0 {
            let Some(&first) = s.first() else { continue };
            // Where a prefix of `s` could start: within its length from the end, at its first
            // byte.
            let window = buf.len().saturating_sub(s.len() - 1);
            let tail = &buf[window..];
            for at in memchr::memchr_iter(first, tail) {
                let rest = &tail[at..];
                if rest.len() > keep && s.starts_with(rest) {
                    keep = rest.len();
                    break;
                }
            }
        }
        keep
    }

    /// Whether any value occurs in `buf`.
    fn found_in(&self, buf: &[u8]) -> bool {
        self.0
            .iter()
            .any(|s| memchr::memmem::find(buf, s).is_some())
    }

    /// Overwrite every occurrence in `buf`.
    fn overwrite(&self, buf: &mut [u8]) {
        for s in &self.0 {
            let mut from = 0;
            while let Some(at) = memchr::memmem::find(&buf[from..], s) {
                let start = from + at;
                buf[start..start + s.len()].fill(b'*');
                from = start + s.len();
            }
        }
    }
}

/// `inner` with every secret overwritten.
pub(crate) struct Overwritten {
    inner: Box<DynBody>,
    secrets: Arc<Secrets>,
    /// Bytes read but not yet given out: the tail that may be the start of a secret.
    held: BytesMut,
    /// The inner body ended (its trailers, if any, wait in `trailers`).
    ended: bool,
    trailers: Option<Frame<Bytes>>,
}

impl Overwritten {
    pub(crate) fn new(inner: Box<DynBody>, secrets: Arc<Secrets>) -> Overwritten {
        Overwritten {
            inner,
            secrets,
            held: BytesMut::new(),
            ended: false,
            trailers: None,
        }
    }
}

impl Body for Overwritten {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if this.ended {
                if !this.held.is_empty() {
                    let rest = this.held.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
                return Poll::Ready(this.trailers.take().map(Ok));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.ended = true,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    // The common case, nothing waiting and no secret in the chunk: it goes out
                    // as it came, without a copy (all but a tail that could begin one).
                    Ok(data) if this.held.is_empty() && !this.secrets.found_in(&data) => {
                        let keep = this.secrets.pending_tail(&data);
                        this.held.extend_from_slice(&data[data.len() - keep..]);
                        if data.len() > keep {
                            let out = data.slice(..data.len() - keep);
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Ok(data) => {
                        this.held.extend_from_slice(&data);
                        this.secrets.overwrite(&mut this.held);
                        // What cannot be the start of a secret goes out now.
                        let keep = this.secrets.pending_tail(&this.held);
                        if this.held.len() > keep {
                            let out = this.held.split_to(this.held.len() - keep).freeze();
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(trailers) => {
                        this.trailers = Some(trailers);
                        this.ended = true;
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.held.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // The same length in the end; only when it arrives differs.
        let mut h = self.inner.size_hint();
        let held = self.held.len() as u64;
        h.set_lower(h.lower().saturating_add(held));
        if let Some(u) = h.upper() {
            h.set_upper(u.saturating_add(held));
        }
        h
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use proptest::prelude::*;

    fn chunked(parts: Vec<Vec<u8>>) -> Box<DynBody> {
        let frames: Vec<Result<Frame<Bytes>, crate::BoxError>> = parts
            .into_iter()
            .map(|p| Ok(Frame::data(Bytes::from(p))))
            .collect();
        Box::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    fn run(secrets: &Arc<Secrets>, parts: Vec<Vec<u8>>) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            Overwritten::new(chunked(parts), Arc::clone(secrets))
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec()
        })
    }

    proptest! {
        /// Wherever the secret falls, however the body is cut: it never comes out, and every
        /// other byte comes out as it went in.
        #[test]
        fn the_secret_never_comes_out_and_nothing_else_changes(
            before in "[a-z \"{}:]{0,40}",
            after in "[a-z \"{}:]{0,40}",
            cuts in prop::collection::vec(0usize..200, 0..6),
            twice in any::<bool>(),
            near in 0usize..22,
        ) {
            let secret = "opaqueOperatorTok3n9x7";
            let secrets = Arc::new(Secrets::new([secret.to_string()]));
            // A near miss first (the secret's start, cut short), which must come out as it was.
            let miss = &secret[..near];
            let body = if twice {
                format!("{before}{miss}!{secret}{secret}{after}")
            } else {
                format!("{before}{miss}!{secret}{after}")
            };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (body.len() + 1)).collect();
            cuts.sort_unstable();
            let mut parts = Vec::new();
            let mut last = 0;
            for c in cuts {
                parts.push(body.as_bytes()[last..c].to_vec());
                last = c;
            }
            parts.push(body.as_bytes()[last..].to_vec());
            let out = String::from_utf8(run(&secrets, parts)).unwrap();
            prop_assert!(!out.contains(secret), "{}", out);
            prop_assert_eq!(out.len(), body.len());
            let stars = "*".repeat(secret.len());
            prop_assert_eq!(out, body.replace(secret, &stars));
        }
    }

    /// A chunk that ends where no secret could begin goes out whole, at once: a watch event is
    /// not held back until the next one.
    #[test]
    fn nothing_waits_that_cannot_start_a_secret() {
        let secrets = Secrets::new(["opaqueOperatorTok3n9x7".to_string()]);
        assert_eq!(secrets.pending_tail(b"{\"type\":\"ADDED\"}\n"), 0);
        assert_eq!(secrets.pending_tail(b"token: opaqueOp"), "opaqueOp".len());
        assert_eq!(secrets.pending_tail(b"o"), 1);
        assert_eq!(secrets.pending_tail(b"opaqueOperatorTok3n9x7"), 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, rx) =
                tokio::sync::mpsc::unbounded_channel::<Result<Frame<Bytes>, crate::BoxError>>();
            let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|f| (f, rx))
            });
            let mut body = Overwritten::new(
                Box::new(http_body_util::StreamBody::new(Box::pin(frames))),
                Arc::new(secrets),
            );
            tx.send(Ok(Frame::data(Bytes::from_static(b"{\"a\":1}\n"))))
                .unwrap();
            // The stream stays open: the event must come out now, not with the next one.
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(
                frame.into_data().unwrap(),
                Bytes::from_static(b"{\"a\":1}\n")
            );
        });
    }

    #[test]
    fn short_values_are_not_looked_for() {
        let s = Secrets::new(["abc".to_string(), "  ".to_string()]);
        assert!(s.is_empty());
    }
}
