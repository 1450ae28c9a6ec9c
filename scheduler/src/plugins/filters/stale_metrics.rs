use std::time::Duration;

use serde::Deserialize;

use crate::framework::{Candidate, Candidates, Cycle, Filter};

/// `stale-metrics`: drops pods whose metrics are older than `max_age_ms`, as long as some pod
/// is fresh (or not scraped yet: new pods are welcome). When every pod is stale, none is
/// dropped; their metrics are set aside instead, so the scorers that need metrics abstain and
/// the rest (prefix, in-flight) decide.
pub struct StaleMetrics {
    max_age: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaleMetricsParameters {
    /// Age in milliseconds past which a pod's metrics are stale (default 1000).
    #[serde(default = "default_max_age_ms")]
    pub max_age_ms: u64,
}

fn default_max_age_ms() -> u64 {
    1000
}

impl StaleMetrics {
    pub fn new(max_age: Duration) -> Self {
        StaleMetrics { max_age }
    }

    pub fn from_parameters(p: StaleMetricsParameters) -> Result<Self, String> {
        if p.max_age_ms == 0 {
            return Err("max_age_ms must be at least 1".into());
        }
        Ok(Self::new(Duration::from_millis(p.max_age_ms)))
    }
}

impl Filter for StaleMetrics {
    fn name(&self) -> &'static str {
        "stale-metrics"
    }

    fn filter(&self, cycle: &mut Cycle<'_>, candidates: &mut Candidates<'_>) {
        let stale =
            |c: &Candidate<'_>| c.metrics().is_some_and(|m| m.age(cycle.now) > self.max_age);
        if candidates.iter().all(stale) {
            for c in candidates.iter_mut() {
                c.pod.metrics = None;
            }
        } else {
            candidates.retain(|c| !stale(c));
        }
    }
}
