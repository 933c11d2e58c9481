#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod access_review;
pub mod body;
mod civil_date;
pub mod diff;
pub mod display;
pub mod kubectl;
pub mod mask;
pub mod policy;
pub mod record;
pub mod request;
pub mod status;
