//! Our bindings to Envoy 1.40's dynamic-module ABI: the only place with `extern "C"` and
//! `unsafe`. Above it, the rest of the crate sees the safe traits of `crate::envoy`.
//!
//! - `types`: C types and enum values;
//! - `callbacks`: the Envoy functions we call;
//! - `http` / `lb`: the hooks Envoy calls (HTTP filter, load-balancing policy), each of which
//!   catches panics so none crosses into Envoy.

mod callbacks;
mod http;
mod lb;
mod log;
mod metrics;
mod program;
mod types;

pub use log::log;
