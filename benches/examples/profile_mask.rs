//! A loop masking one workload, for profilers:
//! `profile_mask pods|secrets|events|watch|configmap ROUNDS`.

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
        _ => (Framing::Json, pod_list(2_000)),
    };
    let set = Arc::new(MaskSet::builtin()?);
    let mut out = Vec::new();
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
