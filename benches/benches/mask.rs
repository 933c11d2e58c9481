//! Masking throughput, as ratios against baselines measured in the same run: (a) serde_json
//! parse, mask and reserialize of the same bytes (what a gateway built the obvious way does),
//! (b) the same with sonic-rs (SIMD) parsing and serializing, (c) serde_json's validation alone
//! (`IgnoredAny`), (d) a plain copy of the bytes.
//!
//! Goals (issue 15): for a Secret list at least 4x sonic-rs and 1.1 GB/s on one core; with
//! every built-in mask and detector off ("masks off"), at least the speed of validation.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use kubeleash_benches::{
    event_list, mask_value, masks_off, pod_list, pod_watch, secret_list, serde_json_mask,
};

/// sonic-rs parse + the baselines' mask + sonic-rs serialize.
fn sonic_rs_mask(input: &[u8]) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = sonic_rs::from_slice(input).ok()?;
    mask_value(&mut v);
    sonic_rs::to_vec(&v).ok()
}

/// serde_json's validation alone: the floor for a masker with nothing to mask.
fn validate(input: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(input).is_ok()
}
use kubeleash_core::mask::{Framing, MaskSet, Masker};

/// Mask `input` fed in 64 KiB chunks, as a network stream arrives.
fn mask(set: &Arc<MaskSet>, framing: Framing, input: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut m = Masker::with(Arc::clone(set), framing);
    input.chunks(64 * 1024).all(|c| m.feed_into(c, out).is_ok()) && m.finish_into(out).is_ok()
}

fn copy(input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    for c in input.chunks(64 * 1024) {
        out.extend_from_slice(c);
    }
}

struct Workload {
    name: &'static str,
    framing: Framing,
    bytes: Vec<u8>,
}

fn workloads(quick: bool) -> Vec<Workload> {
    let scale = if quick { 20 } else { 1 };
    vec![
        Workload {
            name: "secret-list-10000",
            framing: Framing::Json,
            bytes: secret_list(10_000 / scale),
        },
        Workload {
            name: "pod-list-2000",
            framing: Framing::Json,
            bytes: pod_list(2_000 / scale),
        },
        Workload {
            name: "pod-watch-2000",
            framing: Framing::WatchEvents,
            bytes: pod_watch(2_000 / scale),
        },
        Workload {
            name: "event-list-5000",
            framing: Framing::Json,
            bytes: event_list(5_000 / scale),
        },
    ]
}

fn set() -> Arc<MaskSet> {
    match MaskSet::builtin() {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("built-in masks do not compile: {e}");
            std::process::exit(1);
        }
    }
}

/// Every built-in mask and detector off (issue 15: at least as fast as validation).
fn set_off() -> Arc<MaskSet> {
    match masks_off() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("the masks-off policy does not compile: {e}");
            std::process::exit(1);
        }
    }
}

fn benches(c: &mut Criterion) {
    let set = set();
    let off = set_off();
    let mut out = Vec::new();
    for w in workloads(false) {
        let mut g = c.benchmark_group(w.name);
        g.throughput(Throughput::Bytes(w.bytes.len() as u64));
        g.sample_size(10);
        g.bench_function("kubeleash", |b| {
            b.iter(|| black_box(mask(&set, w.framing, &w.bytes, &mut out)))
        });
        g.bench_function("kubeleash_masks_off", |b| {
            b.iter(|| black_box(mask(&off, w.framing, &w.bytes, &mut out)))
        });
        if w.framing == Framing::Json {
            g.bench_function("serde_json", |b| {
                b.iter(|| black_box(serde_json_mask(&w.bytes)))
            });
            g.bench_function("sonic_rs", |b| {
                b.iter(|| black_box(sonic_rs_mask(&w.bytes)))
            });
            g.bench_function("ignored_any", |b| b.iter(|| black_box(validate(&w.bytes))));
        }
        g.bench_function("copy", |b| b.iter(|| copy(black_box(&w.bytes), &mut out)));
        g.finish();
    }
}

/// Median seconds of `f` over repeated runs within `budget`.
fn median(budget: Duration, mut f: impl FnMut()) -> f64 {
    let mut t = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || t.len() < 3 {
        let s = Instant::now();
        f();
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn summary() {
    let quick = std::env::args().any(|a| a == "--test");
    let budget = if quick {
        Duration::from_millis(10)
    } else {
        Duration::from_secs(2)
    };
    let set = set();
    let off = set_off();
    let mut out = Vec::new();
    println!("\nsummary (same run, one core, 64 KiB chunks; ratios: kubeleash's speed over each):");
    println!(
        "{:<20} {:>7} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>8} {:>8} {:>8} {:>8}",
        "workload",
        "MiB",
        "kubeleash",
        "masks off",
        "serde_json",
        "sonic_rs",
        "ignoredany",
        "copy",
        "vs serde",
        "vs sonic",
        "vs valid",
        "off/valid"
    );
    for w in workloads(quick) {
        let gbs = |secs: f64| w.bytes.len() as f64 / secs / 1e9;
        let k = median(budget, || {
            black_box(mask(&set, w.framing, &w.bytes, &mut out));
        });
        let o = median(budget, || {
            black_box(mask(&off, w.framing, &w.bytes, &mut out));
        });
        let json = w.framing == Framing::Json;
        let time = |f: &dyn Fn()| json.then(|| median(budget, f));
        let s = time(&|| {
            black_box(serde_json_mask(&w.bytes));
        });
        let r = time(&|| {
            black_box(sonic_rs_mask(&w.bytes));
        });
        let v = time(&|| {
            black_box(validate(&w.bytes));
        });
        let c = median(budget, || copy(black_box(&w.bytes), &mut out));
        let speed = |t: Option<f64>| t.map_or("-".to_string(), |t| format!("{:.2} GB/s", gbs(t)));
        let ratio = |t: Option<f64>| t.map_or("-".to_string(), |t| format!("{:.2}x", t / k));
        let off_ratio = v.map_or("-".to_string(), |v| format!("{:.2}x", v / o));
        println!(
            "{:<20} {:>7.1} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>8} {:>8} {:>8} {:>8}",
            w.name,
            w.bytes.len() as f64 / (1024.0 * 1024.0),
            speed(Some(k)),
            speed(Some(o)),
            speed(s),
            speed(r),
            speed(v),
            speed(Some(c)),
            ratio(s),
            ratio(r),
            ratio(v),
            off_ratio,
        );
    }
}

criterion_group!(group, benches);

fn main() {
    group();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
