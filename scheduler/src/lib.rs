//! The scheduler core: pure Rust, no Envoy types.
//!
//! Everything here is unit-tested and benchmarked without Envoy; the `filter` crate adapts it to
//! Envoy's dynamic-module ABI.

pub mod rendezvous;
pub mod request;

pub use request::{ApiKind, InferenceRequest, RequestError};
