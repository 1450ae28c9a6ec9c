//! Envoy side of the inference scheduler.
