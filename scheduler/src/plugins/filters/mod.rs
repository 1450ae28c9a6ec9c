//! Filters: health, stale metrics, hot-spot guard.

mod health;
mod hot_spot;
mod stale_metrics;

pub use health::Health;
pub use hot_spot::HotSpotGuard;
pub use stale_metrics::StaleMetrics;
