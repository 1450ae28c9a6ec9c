//! The Envoy side of the inference scheduler: one shared library that is both the HTTP filter
//! `inference-scheduler` (reads the body, decides) and the pool cluster's load-balancing policy
//! `inference-scheduler` (sees members and health, applies the decision, re-picks on retry).
//!
//! `abi` holds every raw-pointer operation; everything else is safe Rust over `envoy`'s traits.

// Unit tests build without the bindings (which link against Envoy's callbacks), so what only
// the bindings call looks unused there; the real build still reports dead code.
#![cfg_attr(test, allow(dead_code))]

// Unit tests run without Envoy (whose callbacks the bindings link against), over fakes of
// `envoy`'s traits; the bindings are exercised by the integration tests inside real Envoy.
#[cfg(not(test))]
mod abi;
mod config;
mod decide;
mod envoy;
mod error_body;
mod guarded_stream;
mod http_filter;
mod lb_policy;
mod logging;
mod metrics;
mod module_config;
mod panic_guard;
mod pool;
mod pool_config;
mod pools;
mod prompt_tokens;
mod saturation;
mod ticker;

#[cfg(test)]
mod tests;
