//! The Node binding of kubeleash (napi-rs): the npm package `kubeleash`.
//!
//! Thin by design: every decision, every mask and every record is made by `kubeleash-core` and
//! `kubeleash-tower`; this crate only converts values between JavaScript and Rust, runs large
//! masking jobs off the main thread, and runs the loopback listener that `connect` hands to
//! `@kubernetes/client-node`. The JavaScript around it (`index.js`) adds the `Transform` stream
//! and builds the client's `KubeConfig`.
// napi's macros expand to `unsafe` FFI glue (module registration, value conversion); the
// binding's own code has none. House style allows `unsafe` in the bindings only.
#![allow(
    unsafe_code,
    reason = "napi-derive expands #[napi] items into unsafe FFI glue"
)]
// Under `cfg(test)` napi-derive leaves out the module registration, so every exported item
// looks unused (`cargo clippy --all-targets` checks that configuration too).
#![cfg_attr(
    test,
    allow(dead_code, reason = "napi registers exports only outside cfg(test)")
)]

mod connect;
mod convert;
mod errors;
mod masker;
mod policy;
mod widen;
