//! Support code for integration tests against real Envoy.
