//! `Masker`: per-response streaming state, fed chunks from Python with the GIL released.

use std::sync::Mutex;

use kubeleash_core::mask::Masker as CoreMasker;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::bytes_arg;
use crate::errors::mask_error;

struct State {
    masker: CoreMasker,
    finished: bool,
}

/// Masks one response as it streams: `feed` each chunk, then `finish`. The output does not
/// depend on how the input is split. After a `MaskError` it delivers nothing more.
#[pyclass(frozen, module = "kubeleash")]
pub struct Masker {
    state: Mutex<State>,
}

impl Masker {
    pub(crate) fn new(masker: CoreMasker) -> Self {
        Masker {
            state: Mutex::new(State {
                masker,
                finished: false,
            }),
        }
    }

    fn run<'py>(
        &self,
        py: Python<'py>,
        chunk: &[u8],
        finish: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let result = py.detach(|| {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if s.finished {
                return Err(None);
            }
            let mut out = Vec::with_capacity(chunk.len() + 64);
            let r = if finish {
                s.finished = true;
                s.masker.finish_into(&mut out)
            } else {
                s.masker.feed_into(chunk, &mut out)
            };
            match r {
                Ok(()) => Ok(out),
                Err(e) => Err(Some((e, out))),
            }
        });
        match result {
            Ok(out) => Ok(PyBytes::new(py, &out)),
            Err(Some((e, safe))) => Err(mask_error(py, &e, &safe)),
            Err(None) => Err(PyValueError::new_err(
                "the masker is finished; make a new one for the next response",
            )),
        }
    }
}

#[pymethods]
impl Masker {
    /// Mask a chunk; returns the bytes that are safe to deliver now.
    fn feed<'py>(
        &self,
        py: Python<'py>,
        chunk: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let chunk = bytes_arg(chunk, "chunk")?;
        self.run(py, &chunk, false)
    }

    /// The response is complete; returns the last safe bytes.
    fn finish<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.run(py, b"", true)
    }

    /// Whether anything has been masked so far.
    #[getter]
    fn masked_anything(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .masker
            .masked_anything()
    }

    fn __repr__(&self) -> String {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        format!(
            "<Masker {:?}{}>",
            s.masker.framing(),
            if s.finished { ", finished" } else { "" }
        )
    }
}
