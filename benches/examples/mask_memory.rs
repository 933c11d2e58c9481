//! Peak heap masking a 1 MiB and a 1 GiB SecretList, streamed in 16 KiB chunks and generated on
//! the fly (for BENCHMARKS.md): `cargo run --release -p kubeleash-benches --example mask_memory`.

#![allow(clippy::expect_used, reason = "a measurement program")]

#[path = "../../core/tests/support/counting_alloc.rs"]
mod counting_alloc;

fn main() {
    for (label, bytes) in [("1 MiB", 1usize << 20), ("1 GiB", 1 << 30)] {
        let t = std::time::Instant::now();
        let peak = counting_alloc::peak_for(bytes);
        println!(
            "{label:>6}: peak heap {:.1} KiB, {:.2} s",
            peak as f64 / 1024.0,
            t.elapsed().as_secs_f64()
        );
    }
}
