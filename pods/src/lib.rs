//! Live pod state: what the scheduler knows about each model-server pod between decisions.
//!
//! - `registry`: one `PodState` per pod address, read on the hot path without locks; in-flight
//!   counts kept by the module itself.
//! - `answers`: failure streaks of a pod's answers, which pause it for a while.
//! - `scraper`: a thread that scrapes every pod's `/metrics` concurrently and publishes
//!   immutable snapshots into the registry.
//! - `metric_names` / `exposition`: which Prometheus series mean what (vLLM, SGLang or custom),
//!   and turning a scrape into `scheduler::PodMetrics`.
//! - `http1`: the scraper's persistent HTTP/1.1 connection to one pod.

pub mod answers;
pub mod config;
pub mod exposition;
pub mod http1;
pub mod metric_names;
pub mod registry;
pub mod scraper;

pub use answers::{AnswerConfig, Answers};
pub use config::ScrapeConfig;
pub use metric_names::MetricNames;
pub use registry::{InFlight, PodRegistry, PodState};
pub use scraper::{ScrapeStats, Scraper};
