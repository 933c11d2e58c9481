//! A masker's memory does not grow with the response: masking a 64 MiB list peaks at the same
//! heap as masking a 1 MiB one. Measured with a counting allocator (this test binary only).
#![allow(clippy::expect_used, reason = "test")]

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::peak_for;

#[test]
fn memory_does_not_grow_with_the_response() {
    let small = peak_for(1 << 20);
    let large = peak_for(64 << 20);
    // Allocator rounding and buffer growth steps leave a little slack; growth with size would
    // show up as tens of megabytes.
    assert!(
        large <= small + 64 * 1024,
        "peak heap grew with the response: 1 MiB peaked at {small} bytes, 64 MiB at {large}"
    );
    assert!(small < 1 << 20, "1 MiB peaked at {small} bytes");
}
