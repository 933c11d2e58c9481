//! A loop over the request mix for profilers (`perf record`, `valgrind --tool=callgrind`):
//! `profile_decide RULES ROUNDS`; prints how many requests one round decides.

use std::hint::black_box;

use kubeleash_benches::{policy_yaml, request_mix};
use kubeleash_core::policy::Policy;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rules = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let rounds: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let policy = Policy::from_yaml(&policy_yaml(rules))?;
    let mix = request_mix(rules);
    // The pod create with a body is measured on its own; this loop is about the bodiless path.
    let mix: Vec<_> = mix.into_iter().filter(|r| r.body.is_none()).collect();
    println!("{} requests per round", mix.len());
    for _ in 0..rounds {
        for r in &mix {
            black_box(policy.evaluate(&r.identity, r.method, &r.target, &r.headers, None));
        }
    }
    Ok(())
}
