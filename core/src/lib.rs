#![doc = include_str!("../../README.md")]
#![deny(missing_docs)]

pub mod body;
pub mod display;
pub mod kubectl;
pub mod mask;
pub mod policy;
pub mod record;
pub mod request;
