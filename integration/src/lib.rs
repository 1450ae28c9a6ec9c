//! Support for integration tests against real Envoy: locating the binaries, generating an Envoy
//! config on free ports, starting and stopping it, and stand-in HTTP backends.

pub mod backend;
pub mod client;
pub mod envoy;
pub mod manifests;
pub mod paths;
pub mod pods;

pub use backend::{Backend, SseGate};
pub use envoy::{Envoy, EnvoyConfig};
