//! Decision latency and compile time against policy size.
//!
//! Questions: how long does one decision take (classify + decide) for a realistic agent policy
//! of 10, 100, 1,000 and 10,000 rules, and how much slower is 10,000 rules than 10 (the
//! baseline, measured in the same run)? Goals: p50 under 1 µs at 100 rules; 10,000/10 ≤ 2.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group};
use kubeleash_benches::{Req, policy_yaml, request_mix};
use kubeleash_core::policy::Policy;
use kubeleash_core::request::classify;

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

fn compile(rules: usize) -> Policy {
    match Policy::from_yaml(&policy_yaml(rules)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench policy of {rules} rules does not compile: {e}");
            std::process::exit(1);
        }
    }
}

fn evaluate(policy: &Policy, r: &Req) -> bool {
    policy
        .evaluate(
            &r.identity,
            r.method,
            &r.target,
            &r.headers,
            r.body.as_deref(),
        )
        .decision
        .allowed()
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide");
    for &n in &SIZES {
        let policy = compile(n);
        let mix = request_mix(n);
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::new("evaluate", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % mix.len();
                black_box(evaluate(&policy, &mix[i]))
            })
        });
    }
    let mix = request_mix(10);
    let mut i = 0usize;
    g.bench_function("classify-only", |b| {
        b.iter(|| {
            i = (i + 1) % mix.len();
            let r = &mix[i];
            black_box(classify(r.method, &r.target, &r.headers).is_ok())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    for &n in &SIZES {
        let text = policy_yaml(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, t| {
            b.iter(|| black_box(Policy::from_yaml(t).is_ok()))
        });
    }
    g.finish();
}

/// Per-request latency percentiles, from batches of repeated decisions of one request.
fn percentiles(policy: &Policy, mix: &[Req], budget: Duration) -> (f64, f64) {
    const BATCH: u32 = 32;
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget {
        for r in mix {
            let t = Instant::now();
            for _ in 0..BATCH {
                black_box(evaluate(policy, r));
            }
            samples.push(t.elapsed().as_nanos() as f64 / f64::from(BATCH));
        }
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

/// The figures the issue asks for, measured together so the machine's noise hits all of them.
fn summary() {
    let quick = std::env::args().any(|a| a == "--test");
    let budget = if quick {
        Duration::from_millis(20)
    } else {
        Duration::from_secs(2)
    };
    println!("\nsummary (per request, classify + decide, same run):");
    println!(
        "{:>8} {:>10} {:>10} {:>12} {:>10}",
        "rules", "p50 ns", "p99 ns", "compile ms", "vs 10"
    );
    let mut base = None;
    for &n in &SIZES {
        let text = policy_yaml(n);
        let t = Instant::now();
        let policy = compile(n);
        let compile_ms = t.elapsed().as_secs_f64() * 1e3;
        let (p50, p99) = percentiles(&policy, &request_mix(n), budget);
        let b = *base.get_or_insert(p50);
        println!(
            "{:>8} {:>10.0} {:>10.0} {:>12.2} {:>9.2}x   ({} rules compiled from {} bytes)",
            n,
            p50,
            p99,
            compile_ms,
            p50 / b,
            policy.rule_count(),
            text.len()
        );
    }
}

/// Where the time goes at 100 rules: each request of the mix on its own.
fn breakdown() {
    let quick = std::env::args().any(|a| a == "--test");
    let budget = if quick {
        Duration::from_millis(5)
    } else {
        Duration::from_millis(300)
    };
    let policy = compile(100);
    println!("\nper request at 100 rules (p50 ns):");
    for r in request_mix(100) {
        let (p50, _) = percentiles(&policy, std::slice::from_ref(&r), budget);
        let d = policy
            .evaluate(
                &r.identity,
                r.method,
                &r.target,
                &r.headers,
                r.body.as_deref(),
            )
            .decision;
        println!(
            "{:>8.0}  {:<7} {:<6} {}",
            p50,
            d.effect.as_str(),
            r.method,
            r.target
        );
    }
}

criterion_group!(group, benches);

fn main() {
    group();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    summary();
    breakdown();
}
