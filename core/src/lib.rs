#![doc = include_str!("../../README.md")]
#![deny(missing_docs)]

pub mod body;
pub mod policy;
pub mod request;
