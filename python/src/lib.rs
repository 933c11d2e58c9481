//! The Python binding of kubeleash: the native module `kubeleash._native`, re-exported by the
//! Python package `kubeleash`. Thin by design: every decision, every mask and every byte of the
//! guarded client's data path is the Rust engine's; Python only calls in.
// PyO3's macros expand to `unsafe` FFI glue; the house style allows unsafe code in bindings only.
#![allow(
    unsafe_code,
    reason = "PyO3's #[pymodule], #[pyclass] and #[pymethods] expand to FFI glue"
)]

mod connect;
mod convert;
mod errors;
mod framing;
mod masker;
mod operator_log;
mod policy;
mod widen;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("PolicyError", py.get_type::<errors::PolicyError>())?;
    m.add("MaskError", py.get_type::<errors::MaskError>())?;
    m.add("RequestError", py.get_type::<errors::RequestError>())?;
    m.add("ConnectError", py.get_type::<errors::ConnectError>())?;
    m.add_class::<policy::Policy>()?;
    m.add_class::<policy::Decision>()?;
    m.add_class::<policy::TestReport>()?;
    m.add_class::<policy::TestOutcome>()?;
    m.add_class::<masker::Masker>()?;
    m.add_class::<connect::Answer>()?;
    m.add_class::<connect::ApprovalRequest>()?;
    m.add_class::<connect::Transport>()?;
    m.add_class::<connect::ResponseBody>()?;
    m.add_function(wrap_pyfunction!(connect::verify_record, m)?)?;
    Ok(())
}
