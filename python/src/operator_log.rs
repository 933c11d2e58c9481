//! What only the operator may read: details of failures the agent must not see (an approver's
//! exception, which may quote a chat webhook URL; an upstream connection error, which names the
//! operator's server and may carry what the credential machinery printed). They go to the
//! Python `logging` logger named `kubeleash`; the agent gets a fixed message that names a
//! correlation id, so the operator can find the details.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The logger the details go to.
pub(crate) const LOGGER: &str = "kubeleash";

/// A short id that ties what the agent was told to the operator's log line. Unique within the
/// process (a counter) and unlikely to repeat across processes (a per-process random prefix);
/// it is not a secret and grants nothing.
pub(crate) fn correlation_id() -> String {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(|| {
        // std's RandomState is seeded from the OS's random source.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(u64::from(std::process::id()));
        (h.finish() >> 32) as u32
    });
    format!("{prefix:08x}-{:06x}", NEXT.fetch_add(1, Ordering::Relaxed))
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
