//! The masker's limits set in a policy (`masks.limits`): each bound is the one the masker
//! applies, a response past it is cut (never passed unmasked), and a value outside the allowed
//! range is a policy error that quotes it.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use kubeleash_core::mask::{Framing, MaskError, MaskLimits, Masker};
use kubeleash_core::policy::Policy;

fn policy(limits: &str) -> Result<Policy, String> {
    Policy::from_yaml(&format!(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nmetadata: {{name: limits}}\nspec:\n  rules: []\n  masks:\n    limits: {limits}\n"
    ))
    .map_err(|e| e.to_string())
}

/// Mask `doc` fed in 4 KiB chunks, as a response arrives: a value that spans chunks is held.
fn mask(p: &Policy, doc: &[u8]) -> Result<Vec<u8>, MaskError> {
    let mut m = Masker::with(std::sync::Arc::clone(p.mask_set()), Framing::Json);
    let mut out = Vec::new();
    for chunk in doc.chunks(4096) {
        out.extend(m.feed(chunk)?);
    }
    out.extend(m.finish()?);
    Ok(out)
}

fn nested(depth: usize) -> Vec<u8> {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
}

#[test]
fn depth_set_in_the_policy_is_the_depth_the_masker_allows() {
    let p = policy("{maxDepth: 40}").unwrap();
    assert_eq!(p.mask_set().limits().max_depth, 40);
    assert_eq!(mask(&p, &nested(40)).unwrap(), nested(40));
    assert!(matches!(
        mask(&p, &nested(41)),
        Err(MaskError::TooDeep { .. })
    ));
    // The default is untouched by a policy that does not set it.
    let d = policy("{maxHeldBytes: 65536}").unwrap();
    assert_eq!(
        d.mask_set().limits().max_depth,
        MaskLimits::default().max_depth
    );
    assert!(mask(&d, &nested(41)).is_ok());
}

#[test]
fn held_bytes_set_in_the_policy_cut_a_longer_judged_value() {
    let p = policy("{maxHeldBytes: 65536}").unwrap();
    assert_eq!(p.mask_set().limits().max_held, 65536);
    // A ConfigMap's value is held for the detectors to judge; one past the bound ends the
    // response there.
    let config = |n: usize| {
        format!(
            r#"{{"kind":"ConfigMap","apiVersion":"v1","data":{{"k":"{}"}}}}"#,
            "A".repeat(n)
        )
        .into_bytes()
    };
    assert_eq!(mask(&p, &config(60_000)).unwrap(), config(60_000));
    match mask(&p, &config(70_000)) {
        Err(MaskError::TooLarge { limit, .. }) => assert_eq!(limit, 65536),
        other => panic!(
            "a 70,000-byte value under a 64 KiB bound: {:?}",
            other.map(|o| o.len())
        ),
    }
}

#[test]
fn a_limit_outside_its_range_is_an_error_that_quotes_it() {
    for (limits, quoted) in [
        ("{maxDepth: 4}", "maxDepth is 4, outside 32..=4096"),
        ("{maxDepth: 100000}", "maxDepth is 100000"),
        (
            "{maxHeldBytes: 1}",
            "maxHeldBytes is 1, outside 65536..=1073741824",
        ),
        ("{maxHeldBytes: 99999999999}", "maxHeldBytes is 99999999999"),
    ] {
        let e = policy(limits).expect_err(limits);
        assert!(e.contains(quoted), "{limits}: {e}");
    }
    let e = policy("{maxdepth: 64}").expect_err("a misspelt limit");
    assert!(e.contains("maxdepth"), "{e}");
}
