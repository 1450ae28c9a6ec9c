//! The scheduler core: pure Rust, no Envoy types.
