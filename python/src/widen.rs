//! Widened approvals from Python: the axes a held request offers, as a dict, and the arguments
//! of `Answer.widen(...)` as a [`Widening`].
//!
//! The shape of a widening (types, ranges, a field given both a range and a glob) is checked
//! here, so a mistake raises in the approver, where it was made, and the request is denied like
//! any approver failure. Whether the widening fits the request (an axis not offered, a name glob
//! that does not match the name, an unknown field path) is the layer's call: it then approves
//! exactly, leaves no grant and records why.

use kubeleash_tower::{Axes, FieldRange, Widening};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// The axes as a dict: `{"never": str | None, "names": bool, "fields": [str],
/// "uses_and_time": bool}`.
pub(crate) fn axes_to_py<'py>(py: Python<'py>, a: &Axes) -> PyResult<Bound<'py, PyAny>> {
    let d = PyDict::new(py);
    d.set_item("never", a.never.as_deref())?;
    d.set_item("names", a.names)?;
    d.set_item("fields", a.fields.clone())?;
    d.set_item("uses_and_time", a.uses_and_time)?;
    Ok(d.into_any())
}

/// `Answer.widen`'s arguments as a widening; a `ValueError` or `TypeError` that says what was
/// wrong and quotes it when they are not one.
pub(crate) fn widening(
    names: Option<String>,
    fields: Option<&Bound<'_, PyAny>>,
    uses: Option<i64>,
    seconds: Option<i64>,
) -> PyResult<Widening> {
    if let Some(n) = names.as_deref().filter(|n| n.is_empty()) {
        return Err(PyValueError::new_err(format!(
            "names must be a non-empty glob such as \"web-*\", not {n:?}"
        )));
    }
    let w = Widening {
        names,
        fields: fields.map(field_ranges).transpose()?.unwrap_or_default(),
        uses: uses.map(|u| positive("uses", u)).transpose()?,
        seconds: seconds.map(|s| positive("seconds", s)).transpose()?,
    };
    if w.is_exact() {
        return Err(PyValueError::new_err(
            "Answer.widen needs at least one of names, fields, uses or seconds; to approve only this request, return Answer.approve(...)",
        ));
    }
    Ok(w)
}

fn positive<T: TryFrom<i64>>(what: &str, n: i64) -> PyResult<T> {
    T::try_from(n).ok().filter(|_| n > 0).ok_or_else(|| {
        PyValueError::new_err(format!("{what} must be a positive whole number, not {n}"))
    })
}

fn field_ranges(list: &Bound<'_, PyAny>) -> PyResult<Vec<FieldRange>> {
    if list.is_instance_of::<PyString>() || list.is_instance_of::<PyDict>() {
        return Err(PyTypeError::new_err(
            "fields must be a list of ranges, e.g. [{\"path\": \"spec.replicas\", \"min\": 1, \"max\": 5}]",
        ));
    }
    list.try_iter()
        .map_err(|_| PyTypeError::new_err("fields must be a list of ranges"))?
        .map(|item| field_range(&item?))
        .collect()
}

/// `{"path", "min", "max"}`, `{"path", "matches"}`, or the prompt's `"PATH=MIN..MAX"` /
/// `"PATH=GLOB"`.
fn field_range(item: &Bound<'_, PyAny>) -> PyResult<FieldRange> {
    if let Ok(s) = item.extract::<String>() {
        return s.parse().map_err(|e| PyValueError::new_err(format!("{e}")));
    }
    let Ok(d) = item.cast::<PyDict>() else {
        return Err(PyTypeError::new_err(format!(
            "a field range is a dict {{\"path\", \"min\", \"max\"}} or {{\"path\", \"matches\"}}, or a string \"PATH=MIN..MAX\", not {}",
            item.repr().map(|r| r.to_string()).unwrap_or_default()
        )));
    };
    let path = required(d, "path")?;
    let range = FieldRange {
        min: optional(d, "min", &path, |v| v.extract::<f64>())?,
        max: optional(d, "max", &path, |v| v.extract::<f64>())?,
        matches: optional(d, "matches", &path, |v| v.extract::<String>())?,
        path,
    };
    check(&range)?;
    Ok(range)
}

fn required(d: &Bound<'_, PyDict>, key: &str) -> PyResult<String> {
    match d.get_item(key)? {
        Some(v) => v.extract::<String>().map_err(|_| {
            PyTypeError::new_err(format!("a field range's {key:?} must be a string, not {v}"))
        }),
        None => Err(PyValueError::new_err(format!(
            "a field range needs a \"path\" (such as \"spec.replicas\"); got {}",
            d.repr().map(|r| r.to_string()).unwrap_or_default()
        ))),
    }
}

fn optional<T>(
    d: &Bound<'_, PyDict>,
    key: &str,
    path: &str,
    extract: impl Fn(&Bound<'_, PyAny>) -> PyResult<T>,
) -> PyResult<Option<T>> {
    match d.get_item(key)? {
        Some(v) if !v.is_none() => extract(&v).map(Some).map_err(|_| {
            PyTypeError::new_err(format!(
                "field {path:?}: {key:?} has the wrong type ({v}): min and max are numbers, matches a glob string"
            ))
        }),
        _ => Ok(None),
    }
}

/// Either a finite `min <= max`, or a glob: the layer reads nothing else.
fn check(r: &FieldRange) -> PyResult<()> {
    match (r.min, r.max, &r.matches) {
        (Some(min), Some(max), None) if min.is_finite() && max.is_finite() && min <= max => Ok(()),
        (None, None, Some(_)) => Ok(()),
        _ => Err(PyValueError::new_err(format!(
            "field {:?} needs either \"min\" and \"max\" (finite numbers, min <= max) or \"matches\" (a glob), not both",
            r.path
        ))),
    }
}
