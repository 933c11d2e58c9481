//! A counting global allocator and a streaming SecretList, shared by the memory test
//! (`core/tests/mask_memory.rs`) and the 1 GiB measurement (`benches/examples/mask_memory.rs`).
//! Whoever includes this file installs the allocator for its whole binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kubeleash_core::mask::{Framing, MaskSet, Masker};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
#[allow(
    unsafe_code,
    reason = "a global allocator is the only way to measure heap use in-process"
)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn item(i: usize) -> String {
    format!(
        r#"{{"metadata":{{"name":"s-{i}","namespace":"dev","labels":{{"app":"x"}},"annotations":{{"kubectl.kubernetes.io/last-applied-configuration":"{{\"kind\":\"Secret\",\"apiVersion\":\"v1\",\"stringData\":{{\"p\":\"pw-{i}\"}}}}"}}}},"data":{{"password":"cGFzc3dvcmQtMTIzNDU2Nzg5MA==","token":"dG9rZW4tYWJjZGVmZ2hpams="}},"type":"Opaque"}}"#
    )
}

/// Stream a SecretList of about `bytes` through a masker in 16 KiB chunks, generating it on the
/// fly and dropping each output chunk; return the peak heap above the starting point.
pub fn peak_for(bytes: usize) -> usize {
    let set = Arc::new(MaskSet::builtin().expect("built-in masks compile"));
    let mut m = Masker::with(set, Framing::Json);
    let mut out = Vec::with_capacity(64 * 1024);
    let mut pending =
        String::from(r#"{"kind":"SecretList","apiVersion":"v1","metadata":{},"items":["#);
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let (mut fed, mut i) = (0, 0);
    while fed < bytes {
        if i > 0 {
            pending.push(',');
        }
        pending.push_str(&item(i));
        i += 1;
        if pending.len() >= 16 * 1024 {
            out.clear();
            m.feed_into(pending.as_bytes(), &mut out).expect("masks");
            assert!(
                !out.windows(8).any(|w| w == b"cGFzc3dv"),
                "a secret value leaked"
            );
            fed += pending.len();
            pending.clear();
        }
    }
    pending.push_str("]}");
    out.clear();
    m.feed_into(pending.as_bytes(), &mut out).expect("masks");
    m.finish_into(&mut out).expect("finishes");
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}
