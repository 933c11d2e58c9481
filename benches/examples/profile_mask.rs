//! A loop masking one workload, for profilers and instruction counts (`benches/instructions/`):
//! `profile_mask pods|secrets|events|watch|configmap|file:PATH ROUNDS [kubeleash|masks-off|ignored-any|serde-json]`.
//! The third argument picks what runs on the same bytes: the masker (default), the masker with
//! every built-in mask and detector turned off, serde_json's validation alone (`IgnoredAny`, the
//! issue 15 floor), or serde_json parse, mask, serialize.

use std::hint::black_box;
use std::sync::Arc;

use kubeleash_benches::{event_list, pod_list, pod_watch, secret_list};
use kubeleash_core::mask::{Framing, MaskSet, Masker};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let which = std::env::args().nth(1).unwrap_or_else(|| "pods".into());
    let rounds: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let (framing, input) = match which.as_str() {
        "secrets" => (Framing::Json, secret_list(10_000)),
        "events" => (Framing::Json, event_list(5_000)),
        "watch" => (Framing::WatchEvents, pod_watch(2_000)),
        "configmap" => (Framing::Json, configmap(1024 * 1024)),
        // Any JSON document, such as the bindings' benches' lists.
        f if f.starts_with("file:") => (Framing::Json, std::fs::read(&f["file:".len()..])?),
        _ => (Framing::Json, pod_list(2_000)),
    };
    let what = std::env::args()
        .nth(3)
        .unwrap_or_else(|| "kubeleash".into());
    let set = if what == "masks-off" {
        kubeleash_benches::masks_off()?
    } else {
        Arc::new(MaskSet::builtin()?)
    };
    let mut out = Vec::new();
    if what != "kubeleash" && what != "masks-off" {
        for _ in 0..rounds {
            match what.as_str() {
                "ignored-any" => {
                    // A watch stream is one JSON document per line.
                    for doc in input.split(|b| *b == b'\n').filter(|d| !d.is_empty()) {
                        black_box(serde_json::from_slice::<serde::de::IgnoredAny>(doc)?);
                    }
                }
                "serde-json" => {
                    black_box(kubeleash_benches::serde_json_mask(&input));
                }
                other => return Err(format!("unknown baseline `{other}`").into()),
            }
        }
        return Ok(());
    }
    for _ in 0..rounds {
        out.clear();
        let mut m = Masker::with(Arc::clone(&set), framing);
        for c in input.chunks(64 * 1024) {
            m.feed_into(c, &mut out)?;
        }
        m.finish_into(&mut out)?;
        black_box(&out);
    }
    Ok(())
}

/// A ConfigMap of about `bytes` of ordinary entries (the layer bench's shape, larger).
fn configmap(bytes: usize) -> Vec<u8> {
    let mut data = String::new();
    let mut i = 0;
    while data.len() < bytes {
        data.push_str(&format!(
            r#""key-{i}":"value number {i} of an ordinary configuration map entry","#
        ));
        i += 1;
    }
    data.pop();
    format!(
        r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"app","namespace":"dev"}},"data":{{{data}}}}}"#
    )
    .into_bytes()
}
