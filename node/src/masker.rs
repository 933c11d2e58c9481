//! `Masker`: per-response streaming state, fed chunk by chunk.

use std::sync::{Arc, Mutex, MutexGuard};

use kubeleash_core::mask::{self, MaskError};
use napi::bindgen_prelude::{AsyncTask, Buffer, Either, Env, Task};
use napi_derive::napi;

use crate::convert::bytes_arg;
use crate::errors;

/// A streaming masker for one response. `feed` returns the bytes that are safe to send now;
/// the output does not depend on how the input is split. After an error it emits nothing more.
#[napi]
pub struct Masker {
    // Behind a mutex so `feedAsync` can move the work to the thread pool.
    inner: Arc<Mutex<mask::Masker>>,
}

impl Masker {
    pub(crate) fn new(m: mask::Masker) -> Self {
        Masker {
            inner: Arc::new(Mutex::new(m)),
        }
    }
}

fn lock(m: &Mutex<mask::Masker>) -> MutexGuard<'_, mask::Masker> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Feeds one chunk on the libuv thread pool.
pub struct FeedTask {
    masker: Arc<Mutex<mask::Masker>>,
    chunk: Buffer,
    failed: Option<(MaskError, Vec<u8>)>,
}

impl Task for FeedTask {
    type Output = Vec<u8>;
    type JsValue = Buffer;

    fn compute(&mut self) -> napi::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.chunk.len() + 64);
        match lock(&self.masker).feed_into(&self.chunk, &mut out) {
            Ok(()) => Ok(out),
            Err(e) => {
                let message = e.to_string();
                self.failed = Some((e, out));
                Err(napi::Error::from_reason(message))
            }
        }
    }

    fn resolve(&mut self, _env: Env, output: Vec<u8>) -> napi::Result<Buffer> {
        Ok(output.into())
    }

    fn reject(&mut self, env: Env, err: napi::Error) -> napi::Result<Buffer> {
        match self.failed.take() {
            Some((e, out)) => Err(errors::mask_error(&env, &e, out)),
            None => Err(err),
        }
    }
}

#[napi]
impl Masker {
    /// Mask a chunk; returns the bytes that are safe to send now. Throws a `MaskError` whose
    /// `safe` holds the safe bytes this chunk still produced.
    #[napi]
    pub fn feed(&self, env: &Env, chunk: Either<String, Buffer>) -> napi::Result<Buffer> {
        let bytes = bytes_arg(&chunk);
        let mut out = Vec::with_capacity(bytes.len() + 64);
        match lock(&self.inner).feed_into(bytes, &mut out) {
            Ok(()) => Ok(out.into()),
            Err(e) => Err(errors::mask_error(env, &e, out)),
        }
    }

    /// `feed` on the libuv thread pool, for large chunks. Await each call before the next.
    #[napi(ts_return_type = "Promise<Buffer>")]
    pub fn feed_async(&self, chunk: Buffer) -> AsyncTask<FeedTask> {
        AsyncTask::new(FeedTask {
            masker: Arc::clone(&self.inner),
            chunk,
            failed: None,
        })
    }

    /// The response is complete: returns the last safe bytes. Throws a `MaskError` when the
    /// body ended in the middle of a value (or was refused earlier).
    #[napi]
    pub fn finish(&self, env: &Env) -> napi::Result<Buffer> {
        let mut out = Vec::new();
        match lock(&self.inner).finish_into(&mut out) {
            Ok(()) => Ok(out.into()),
            Err(e) => Err(errors::mask_error(env, &e, out)),
        }
    }

    /// Whether anything has been masked so far.
    #[napi(getter)]
    pub fn masked_anything(&self) -> bool {
        lock(&self.inner).masked_anything()
    }
}
