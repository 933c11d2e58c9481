//! What only the operator may read: details of failures the agent must not see (an approver's
//! exception, which may quote a chat webhook URL; an upstream connection error, which names the
//! operator's server and may carry what the credential machinery printed). They go to the
//! Python `logging` logger named `kubeleash`; the agent gets a fixed message that names a
//! correlation id, so the operator can find the details.

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The logger the details go to.
pub(crate) const LOGGER: &str = "kubeleash";

/// A short id that ties what the agent was told to the operator's log line: 64 random bits in
/// hex, as every front door makes them (`kubeleash-connect`). It is not a secret and grants
/// nothing.
pub(crate) fn correlation_id() -> String {
    kubeleash_connect::correlation_id()
}

/// Log `message` at ERROR on the `kubeleash` logger, with `error`'s traceback when given. A
/// failure to log (logging misconfigured, interpreter shutting down) is dropped: it must not
/// turn into something the agent sees.
pub(crate) fn report(py: Python<'_>, message: &str, error: Option<&PyErr>) {
    let logged = (|| -> PyResult<()> {
        let logger = py.import("logging")?.call_method1("getLogger", (LOGGER,))?;
        let kwargs = PyDict::new(py);
        if let Some(e) = error {
            kwargs.set_item("exc_info", e.value(py))?;
        }
        logger.call_method("error", ("%s", message), Some(&kwargs))?;
        Ok(())
    })();
    drop(logged);
}
