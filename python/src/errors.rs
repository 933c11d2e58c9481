//! The exception hierarchy. Each error carries the fields Python code needs (`errors`, `code`,
//! `safe`), set as attributes on the exception instance.

use kubeleash_core::mask::MaskError as CoreMaskError;
use kubeleash_core::policy::PolicyErrors;
use kubeleash_core::request::NonCanonical;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

pyo3::create_exception!(
    kubeleash,
    PolicyError,
    PyValueError,
    "A policy did not compile. `errors` lists every problem, each a dict with `message`, `help`, `code` and `location` (`{\"line\", \"column\"}`, 1-based, or None)."
);
pyo3::create_exception!(
    kubeleash,
    MaskError,
    PyValueError,
    "The masker refused a response. `code` says why (`content-type`, `malformed`, `too-deep`, ...); `safe` holds the bytes this call could still deliver, and nothing after them may be."
);
pyo3::create_exception!(
    kubeleash,
    RequestError,
    PyValueError,
    "A request target or header was refused before classification; `code` says why."
);
pyo3::create_exception!(
    kubeleash,
    ConnectError,
    PyException,
    "`kubeleash.kubernetes.connect` could not set up the guarded client: an unreadable or unsupported kubeconfig, or an unusable credential."
);

/// One compile error as a dict: the shape the Node binding reports as well.
fn error_dict<'py>(
    py: Python<'py>,
    e: &kubeleash_core::policy::PolicyError,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("message", e.message())?;
    d.set_item("help", e.help_text())?;
    d.set_item("code", e.code())?;
    match e.location() {
        Some(l) => {
            let loc = PyDict::new(py);
            loc.set_item("line", l.line)?;
            loc.set_item("column", l.column)?;
            d.set_item("location", loc)?;
        }
        None => d.set_item("location", py.None())?,
    }
    Ok(d)
}

/// `PolicyError` with one line per error in its message and every error in `errors`.
pub(crate) fn policy_error(py: Python<'_>, errs: &PolicyErrors) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let n = errs.errors().len();
        let mut msg = format!("policy has {n} error{}", if n == 1 { "" } else { "s" });
        for e in errs.errors() {
            msg.push_str("\n  ");
            msg.push_str(&e.to_string());
            if let Some(h) = e.help_text() {
                msg.push_str(" (help: ");
                msg.push_str(h);
                msg.push(')');
            }
        }
        let err = PolicyError::new_err(msg);
        let list = PyList::empty(py);
        for e in errs.errors() {
            list.append(error_dict(py, e)?)?;
        }
        err.value(py).setattr("errors", list)?;
        Ok(err)
    };
    build().unwrap_or_else(|e| e)
}

/// `MaskError` with its `code` and the bytes that were safe to deliver before it.
pub(crate) fn mask_error(py: Python<'_>, e: &CoreMaskError, safe: &[u8]) -> PyErr {
    let err = MaskError::new_err(e.to_string());
    let set = || -> PyResult<()> {
        let v = err.value(py);
        v.setattr("code", e.code())?;
        v.setattr("safe", PyBytes::new(py, safe))?;
        Ok(())
    };
    set().err().unwrap_or(err)
}

/// `RequestError` for a refused request target.
pub(crate) fn request_error(py: Python<'_>, e: &NonCanonical) -> PyErr {
    let err = RequestError::new_err(e.to_string());
    match err.value(py).setattr("code", e.code()) {
        Ok(()) => err,
        Err(e) => e,
    }
}

/// `RequestError` for a header that cannot be sent.
pub(crate) fn header_error(py: Python<'_>, message: String) -> PyErr {
    let err = RequestError::new_err(message);
    match err.value(py).setattr("code", "header") {
        Ok(()) => err,
        Err(e) => e,
    }
}
