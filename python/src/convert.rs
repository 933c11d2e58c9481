//! Conversions between Python values and the engine's: JSON values to Python objects, and the
//! header and body arguments every entry point accepts.

use std::borrow::Cow;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString};
use serde_json::Value;

use crate::errors::header_error;

/// A JSON value as plain Python objects (dict, list, str, int, float, bool, None).
pub(crate) fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any(),
            (_, Some(u)) => u.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(a) => {
            let l = PyList::empty(py);
            for x in a {
                l.append(to_py(py, x)?)?;
            }
            l.into_any()
        }
        Value::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

/// Anything serde can serialise, as plain Python objects.
pub(crate) fn ser_to_py<'py, T: serde::Serialize>(
    py: Python<'py>,
    v: &T,
) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(v).map_err(|e| PyTypeError::new_err(e.to_string()))?;
    to_py(py, &value)
}

/// The bytes of a `bytes`, `bytearray`, `memoryview`-like or `str` argument; `bytes` is borrowed.
pub(crate) fn bytes_arg<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Cow::Owned(s.to_cow()?.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Cow::Owned(b.to_vec()));
    }
    // memoryview and other buffer objects (not ints: `bytes(42)` is 42 zero bytes), copied once.
    let py = obj.py();
    let view = py
        .import("builtins")
        .and_then(|b| b.getattr("memoryview"))
        .and_then(|mv| mv.call1((obj,)))
        .map_err(|_| match obj.get_type().name() {
            Ok(n) => PyTypeError::new_err(format!(
                "{what} must be bytes, bytearray, memoryview or str, not {n}"
            )),
            Err(e) => e,
        })?;
    let copied = view.call_method0("tobytes")?;
    Ok(Cow::Owned(
        copied
            .cast::<PyBytes>()
            .map(|b| b.as_bytes().to_vec())
            .unwrap_or_default(),
    ))
}

fn text_or_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_cow()?.as_bytes().to_vec());
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    Err(PyTypeError::new_err(format!(
        "header names and values must be str or bytes, not {}",
        obj.get_type().name()?
    )))
}

/// Headers from a mapping (`{"Accept": "application/json"}`) or an iterable of `(name, value)`
/// pairs (which may repeat a name, as `Impersonate-Group` does).
pub(crate) fn headers_arg(
    py: Python<'_>,
    obj: Option<&Bound<'_, PyAny>>,
) -> PyResult<http::HeaderMap> {
    let mut map = http::HeaderMap::new();
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(map);
    };
    let pairs = if obj.hasattr("items")? {
        obj.call_method0("items")?
    } else {
        obj.clone()
    };
    for pair in pairs.try_iter()? {
        let pair = pair?;
        let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract().map_err(|_| {
            PyTypeError::new_err("headers must be a mapping or an iterable of (name, value) pairs")
        })?;
        let (k, v) = (text_or_bytes(&k)?, text_or_bytes(&v)?);
        let name = http::HeaderName::from_bytes(&k).map_err(|_| {
            header_error(
                py,
                format!(
                    "`{}` is not a valid header name",
                    String::from_utf8_lossy(&k)
                ),
            )
        })?;
        let value = http::HeaderValue::from_bytes(&v).map_err(|_| {
            header_error(
                py,
                format!("the value of header `{name}` is not a valid header value"),
            )
        })?;
        map.append(name, value);
    }
    Ok(map)
}

/// `repr()` of an optional string as Python shows it (`'x'` or `None`).
pub(crate) fn repr_str(py: Python<'_>, s: Option<&str>) -> String {
    match s {
        None => "None".into(),
        Some(s) => PyString::new(py, s)
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| format!("{s:?}")),
    }
}
