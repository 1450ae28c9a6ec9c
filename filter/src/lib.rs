//! The Envoy side of the inference scheduler: one shared library that is both the HTTP filter
//! `inference-scheduler` (reads the body, decides) and the pool cluster's load-balancing policy
//! `inference-scheduler` (sees members and health, applies the decision, re-picks on retry).
//!
//! `abi` holds every raw-pointer operation; everything else is safe Rust over `envoy`'s traits.

// Unit tests run without Envoy (whose callbacks the bindings link against), over fakes of
// `envoy`'s traits; the bindings are exercised by the integration tests inside real Envoy.
#[cfg(not(test))]
mod abi;
pub mod config;
mod decide;
pub mod envoy;
mod error_body;
mod guarded_stream;
pub mod http_filter;
pub mod lb_policy;
mod logging;
pub mod metrics;
pub mod module_config;
mod panic_guard;
pub mod pool;
pub mod pool_config;
pub mod pools;
pub mod saturation;
mod ticker;

#[cfg(test)]
mod tests;
