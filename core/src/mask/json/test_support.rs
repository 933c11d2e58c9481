//! What the masker's fast paths' tests share: masking in chunks, with the silent skip on or
//! off, and the check that a whole document and the same bytes one at a time (which no fast
//! path can take) come out the same.

use std::sync::Arc;

use super::super::rules::MaskSet;
use super::{JsonMasker, Origin};

/// `input` masked in chunks of `chunk` bytes, with the silent skip on or off: the output, and
/// whether it ended well.
pub(super) fn mask_chunks(
    set: &Arc<MaskSet>,
    input: &[u8],
    chunk: usize,
    skip_off: bool,
) -> (Vec<u8>, bool) {
    let mut m = JsonMasker::new(Arc::clone(set), false, Arc::new(Origin::default()));
    m.skip_off = skip_off;
    let mut out = Vec::new();
    let ok = input
        .chunks(chunk)
        .try_for_each(|c| m.feed(c, &mut out))
        .and_then(|()| m.finish(&mut out))
        .is_ok();
    (out, ok)
}

/// Each document masked whole and byte by byte gives the same output and the same ending.
pub(super) fn assert_whole_is_bytewise(set: &Arc<MaskSet>, docs: &[&[u8]]) {
    for doc in docs {
        let whole = mask_chunks(set, doc, doc.len(), false);
        let bytewise = mask_chunks(set, doc, 1, false);
        assert_eq!(
            whole,
            bytewise,
            "{}\n{}\n{}",
            String::from_utf8_lossy(doc),
            String::from_utf8_lossy(&whole.0),
            String::from_utf8_lossy(&bytewise.0)
        );
    }
}
