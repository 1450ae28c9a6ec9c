//! The scheduler core: pure Rust, no Envoy types.
//!
//! A [`Scheduler`] is built from JSON config ([`Scheduler::from_json`]) into named profiles of
//! plugins (filters, weighted scorers, a picker; see [`framework`]), and decides per request
//! ([`Scheduler::schedule`]) over the [`PodView`]s the caller gives it, learning from each route
//! in a shared [`prefix::PrefixIndex`]. Everything here is unit-tested and benchmarked without
//! Envoy; the `filter` crate adapts it to Envoy's dynamic-module ABI.

pub mod answer;
pub mod config;
pub mod context;
pub mod framework;
pub mod load;
pub mod plugins;
pub mod pod;
pub mod prefix;
pub mod registry;
pub mod rendezvous;
pub mod request;
mod scheduler;

pub use config::{parse_object, ConfigError, HeaderNames, SchedulerConfig};
pub use context::{Criticality, RequestContext, UnknownCriticality};
pub use load::LoadEstimate;
pub use pod::{CacheGeometry, PodMetrics, PodView};
pub use registry::{Indexes, Registry};
pub use request::{ApiKind, InferenceRequest, RequestError};
pub use scheduler::{Basis, Decision, ScheduleError, Scheduler, ScoreDetail};
