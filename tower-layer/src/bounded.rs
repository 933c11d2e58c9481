//! Request bodies read whole, bounded in size per request and, over every request in flight,
//! in memory: the one way the layer and the proxy in front of it buffer a body.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::BoxError;

/// How many bytes of request bodies may be in memory at once, shared by every request that
/// reads one (clones share it). One semaphore permit stands for one byte.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use kubeleash_tower::BodyBudget;
///
/// let budget = BodyBudget::new(1024);
/// let (bytes, share) = budget
///     .read(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")), 3 * 1024 * 1024)
///     .await
///     .map_err(|e| e.to_string())?;
/// assert_eq!(&bytes[..], b"{}");
/// drop(share); // the two bytes go back to the budget
/// # Ok::<(), String>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct BodyBudget {
    bytes: usize,
    permits: Arc<Semaphore>,
}

/// A body's share of a [`BodyBudget`], given back when dropped.
#[derive(Debug, Default)]
pub struct BudgetShare(Option<OwnedSemaphorePermit>);

/// Why [`BodyBudget::read`] stopped; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BoundedReadError {
    /// The body is larger than the limit per request.
    #[error("request body refused: larger than {max} bytes (the API server accepts at most 3 MiB)")]
    TooLarge {
        /// The limit, in bytes.
        max: usize,
    },
    /// Bodies in memory already fill the budget.
    #[error(
        "request body refused: {} MiB of request bodies are already in memory, the limit; retry shortly",
        .budget / (1024 * 1024)
    )]
    OverBudget {
        /// The budget, in bytes.
        budget: usize,
    },
    /// The body could not be read.
    #[error("request body refused: {0}")]
    Body(BoxError),
}

impl BodyBudget {
    /// A budget of `bytes` (at most tokio's `Semaphore::MAX_PERMITS`).
    pub fn new(bytes: usize) -> Self {
        let bytes = bytes.min(Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes,
            permits: Arc::new(Semaphore::new(bytes)),
        }
    }

    /// The budget, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Read `body` whole, at most `max` bytes, each chunk's bytes taken from the budget as it
    /// arrives and held by the returned share. Trailers are dropped: they are no part of the
    /// body, and nothing forwards them.
    pub async fn read<B>(
        &self,
        body: B,
        max: usize,
    ) -> Result<(Bytes, BudgetShare), BoundedReadError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let mut body = std::pin::pin!(body);
        let mut buf = BytesMut::new();
        let mut share = BudgetShare::default();
        while let Some(frame) = body.frame().await {
            let Ok(chunk) = frame
                .map_err(|e| BoundedReadError::Body(e.into()))?
                .into_data()
            else {
                continue;
            };
            if buf.len() + chunk.len() > max {
                return Err(BoundedReadError::TooLarge { max });
            }
            let taken = u32::try_from(chunk.len())
                .ok()
                .and_then(|n| Arc::clone(&self.permits).try_acquire_many_owned(n).ok())
                .ok_or(BoundedReadError::OverBudget { budget: self.bytes })?;
            match share.0.as_mut() {
                Some(held) => held.merge(taken),
                None => share.0 = Some(taken),
            }
            buf.extend_from_slice(&chunk);
        }
        Ok((buf.freeze(), share))
    }
}
