//! `Policy`, `Decision` and the policy's own tests.

use std::path::PathBuf;

use kubeleash_core::policy::{self as core, Effect, Identity};
use kubeleash_core::request::{Attributes, Request, classify};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyType};

use crate::convert::{bytes_arg, headers_arg, repr_str, ser_to_py};
use crate::errors::{mask_error, policy_error, request_error};
use crate::masker::Masker;

/// A compiled policy: immutable, safe to share between threads, cheap to copy.
#[pyclass(frozen, module = "kubeleash")]
pub struct Policy {
    pub(crate) inner: core::Policy,
}

/// The response's content type as the caller gave it: `None` (or an empty string, "the
/// response has none") leaves the choice to the framing code, which picks what the API server
/// sends (text for a pod log, JSON else).
pub(crate) fn content_type_for(given: Option<&str>) -> Option<&str> {
    given.filter(|c| !c.is_empty())
}

impl Policy {
    fn classify(
        &self,
        py: Python<'_>,
        method: &str,
        target: &str,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Request> {
        let headers = headers_arg(py, headers)?;
        classify(method, target, &headers).map_err(|e| request_error(py, &e))
    }
}

#[pymethods]
impl Policy {
    /// Compile a policy from YAML (or JSON) text.
    #[classmethod]
    fn from_yaml(_cls: &Bound<'_, PyType>, py: Python<'_>, text: &str) -> PyResult<Policy> {
        match core::Policy::from_yaml(text) {
            Ok(inner) => Ok(Policy { inner }),
            Err(e) => Err(policy_error(py, &e)),
        }
    }

    /// Compile a policy from a YAML file.
    #[classmethod]
    fn from_file(cls: &Bound<'_, PyType>, py: Python<'_>, path: PathBuf) -> PyResult<Policy> {
        let text = std::fs::read_to_string(&path)?;
        Policy::from_yaml(cls, py, &text)
    }

    /// The policy's `metadata.name`.
    #[getter]
    fn name(&self) -> Option<&str> {
        self.inner.name()
    }

    /// Classify a request and decide it.
    #[pyo3(signature = (method, target, *, user=None, groups=Vec::new(), headers=None, body=None))]
    #[allow(
        clippy::too_many_arguments,
        reason = "the Python signature's keyword arguments"
    )]
    fn evaluate(
        &self,
        py: Python<'_>,
        method: &str,
        target: &str,
        user: Option<String>,
        groups: Vec<String>,
        headers: Option<&Bound<'_, PyAny>>,
        body: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Decision> {
        let headers = headers_arg(py, headers)?;
        let body = body
            .filter(|b| !b.is_none())
            .map(|b| bytes_arg(b, "body"))
            .transpose()?;
        let identity = Identity::new(user.unwrap_or_default(), groups);
        let eval = self
            .inner
            .evaluate(&identity, method, target, &headers, body.as_deref());
        Ok(Decision::new(
            eval.decision,
            eval.request.map(|r| r.attributes),
        ))
    }

    /// Mask a whole response body as kubeleash would deliver the response to this request.
    #[pyo3(signature = (method, target, body, *, headers=None, content_type=None, content_encoding=None))]
    #[allow(
        clippy::too_many_arguments,
        reason = "the Python signature's keyword arguments"
    )]
    fn mask<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        target: &str,
        body: &Bound<'py, PyAny>,
        headers: Option<&Bound<'py, PyAny>>,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let request = self.classify(py, method, target, headers)?;
        let body = bytes_arg(body, "body")?;
        let ct = content_type_for(content_type);
        let policy = &self.inner;
        let body: &[u8] = &body;
        // Large bodies: let other Python threads run while Rust masks.
        match py.detach(|| policy.mask(&request, ct, content_encoding, body)) {
            Ok(out) => Ok(PyBytes::new(py, &out)),
            Err(e) => Err(mask_error(py, &e, b"")),
        }
    }

    /// A streaming masker for the response to this request.
    #[pyo3(signature = (method, target, *, headers=None, content_type=None, content_encoding=None))]
    fn masker(
        &self,
        py: Python<'_>,
        method: &str,
        target: &str,
        headers: Option<&Bound<'_, PyAny>>,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
    ) -> PyResult<Masker> {
        let request = self.classify(py, method, target, headers)?;
        let ct = content_type_for(content_type);
        match self.inner.masker(&request, ct, content_encoding) {
            Ok(m) => Ok(Masker::new(m)),
            Err(e) => Err(mask_error(py, &e, b"")),
        }
    }

    /// Run the policy's own `tests:`.
    fn test(&self) -> TestReport {
        let report = self.inner.run_tests();
        TestReport {
            outcomes: report.outcomes,
        }
    }

    fn __repr__(&self) -> String {
        match self.inner.name() {
            Some(n) => format!(
                "<Policy {n:?}: {} rules, {} tests>",
                self.inner.rule_count(),
                self.inner.test_count()
            ),
            None => format!(
                "<Policy: {} rules, {} tests>",
                self.inner.rule_count(),
                self.inner.test_count()
            ),
        }
    }
}

/// A decision: the effect, the rule that made it, the reason, and the request's attributes.
#[pyclass(frozen, module = "kubeleash")]
pub struct Decision {
    decision: core::Decision,
    request: Option<Attributes>,
}

impl Decision {
    pub(crate) fn new(decision: core::Decision, request: Option<Attributes>) -> Self {
        Decision { decision, request }
    }
}

#[pymethods]
impl Decision {
    /// `"allow"`, `"deny"` or `"approve"`.
    #[getter]
    fn effect(&self) -> &'static str {
        self.decision.effect.as_str()
    }

    /// The deciding rule's name; None for the default deny and for refusals.
    #[getter]
    fn rule(&self) -> Option<&str> {
        self.decision.rule.as_deref()
    }

    /// Why, in words.
    #[getter]
    fn reason(&self) -> &str {
        &self.decision.reason
    }

    /// The request's authorization attributes as a dict (camelCase keys, as the API server's
    /// RequestInfo); None when the request target was refused.
    #[getter]
    fn request<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.request.as_ref().map(|a| ser_to_py(py, a)).transpose()
    }

    /// Whether the request may go ahead without a person's approval.
    #[getter]
    fn allowed(&self) -> bool {
        self.decision.effect == Effect::Allow
    }

    /// The decision as a dict, in the shape `kubeleash eval` prints.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("effect", self.effect())?;
        d.set_item("rule", self.rule())?;
        d.set_item("reason", self.reason())?;
        d.set_item("request", self.request(py)?)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Decision(effect={:?}, rule={:?}, reason={:?})",
            self.effect(),
            self.rule(),
            self.reason()
        )
    }
}

/// The outcome of one of a policy's own tests.
#[pyclass(frozen, module = "kubeleash")]
pub struct TestOutcome {
    inner: core::TestOutcome,
}

#[pymethods]
impl TestOutcome {
    /// The test's name.
    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }

    /// The request line it sent.
    #[getter]
    fn request(&self) -> &str {
        &self.inner.request
    }

    /// The effect it expected.
    #[getter]
    fn expect(&self) -> &'static str {
        self.inner.expect.as_str()
    }

    /// The rule it expected, if it named one.
    #[getter]
    fn expect_rule(&self) -> Option<&str> {
        self.inner.expect_rule.as_deref()
    }

    /// What the policy decided.
    #[getter]
    fn decision(&self) -> Decision {
        Decision::new(self.inner.decision.clone(), None)
    }

    /// Whether the decision matched the expectation.
    #[getter]
    fn passed(&self) -> bool {
        self.inner.passed
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "TestOutcome(name={}, passed={}, expect={}, got={})",
            repr_str(py, Some(&self.inner.name)),
            if self.inner.passed { "True" } else { "False" },
            repr_str(py, Some(self.expect())),
            repr_str(py, Some(self.inner.decision.effect.as_str()))
        )
    }
}

/// Every outcome of a policy's own tests.
#[pyclass(frozen, module = "kubeleash")]
pub struct TestReport {
    outcomes: Vec<core::TestOutcome>,
}

#[pymethods]
impl TestReport {
    /// Whether every test passed.
    #[getter]
    fn passed(&self) -> bool {
        self.outcomes.iter().all(|o| o.passed)
    }

    /// Every outcome, in the order the tests are written.
    #[getter]
    fn outcomes(&self, py: Python<'_>) -> PyResult<Vec<Py<TestOutcome>>> {
        self.outcomes
            .iter()
            .map(|o| Py::new(py, TestOutcome { inner: o.clone() }))
            .collect()
    }

    /// The outcomes that failed.
    #[getter]
    fn failures(&self, py: Python<'_>) -> PyResult<Vec<Py<TestOutcome>>> {
        self.outcomes
            .iter()
            .filter(|o| !o.passed)
            .map(|o| Py::new(py, TestOutcome { inner: o.clone() }))
            .collect()
    }

    fn __len__(&self) -> usize {
        self.outcomes.len()
    }

    fn __repr__(&self) -> String {
        let failed = self.outcomes.iter().filter(|o| !o.passed).count();
        format!(
            "<TestReport: {} passed, {failed} failed>",
            self.outcomes.len() - failed
        )
    }
}
