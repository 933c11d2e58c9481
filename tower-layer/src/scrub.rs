//! Error texts made fit for a record: a credential plugin's command line, its environment or a
//! token in an upstream error must not be written in clear.

use std::sync::Arc;

use kubeleash_core::mask::{Framing, MaskSet, Masker};

/// `text` with every secret the detectors find masked; if it cannot be masked, a note instead.
pub(crate) fn scrub(masks: &Arc<MaskSet>, text: &str) -> String {
    let mut m = Masker::with(Arc::clone(masks), Framing::Text);
    let mut out = Vec::with_capacity(text.len());
    // Lines are what the text detectors judge: end the last one.
    let mut input = text.replace(['\r', '\n'], " ");
    input.push('\n');
    match m
        .feed_into(input.as_bytes(), &mut out)
        .and_then(|()| m.finish_into(&mut out))
    {
        Ok(()) => String::from_utf8_lossy(&out).trim_end().to_string(),
        Err(_) => "[the error text could not be masked, so it is not recorded]".into(),
    }
}
