//! Filters: health, stale metrics, hot-spot guard.

mod health;
mod hot_spot;
mod stale_metrics;

pub use health::Health;
pub use hot_spot::HotSpotGuard;
pub use stale_metrics::StaleMetrics;

use crate::framework::Candidate;

/// The load a pod carries, in requests: what its metrics report (waiting + running) or what we
/// have in flight there, whichever is larger (metrics lag; our own count does not).
pub(crate) fn load(candidate: &Candidate<'_>) -> f64 {
    let reported = candidate
        .metrics()
        .map_or(0, |m| m.waiting.saturating_add(m.running));
    f64::from(reported.max(candidate.pod.in_flight))
}
