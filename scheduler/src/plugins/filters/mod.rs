//! Filters: health, stale metrics, saturation, hot-spot guard.

mod health;
mod hot_spot;
mod saturation;
mod stale_metrics;

pub use health::Health;
pub use hot_spot::HotSpotGuard;
pub use saturation::{Saturation, SaturationParameters};
pub use stale_metrics::StaleMetrics;
