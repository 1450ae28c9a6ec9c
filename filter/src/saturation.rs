//! Saturation: which pods are full (their estimated queue or KV cache past a threshold). The
//! scheduler's `saturation` filter prefers pods with room and, when every pod is full, weighs
//! queue against cached prefix; sheddable requests are refused then (429 with `retry-after`)
//! instead of deepening the queues.

use serde::Deserialize;

use scheduler::{ConfigError, LoadEstimate, PodView};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SaturationConfig {
    /// A pod whose estimated waiting queue ([`LoadEstimate`]) reaches this is full.
    pub queue_threshold: u32,
    /// A pod whose KV-cache usage (0..1) reaches this is full.
    pub kv_threshold: f64,
    /// Seconds a shed client is told to wait (`retry-after`).
    pub retry_after_s: u32,
}

impl Default for SaturationConfig {
    fn default() -> Self {
        SaturationConfig {
            queue_threshold: 5,
            kv_threshold: 0.8,
            retry_after_s: 1,
        }
    }
}

impl SaturationConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.kv_threshold > 0.0 && self.kv_threshold <= 1.0) {
            return Err(ConfigError::new(
                "kv_threshold",
                format!("{} must be in (0, 1]", self.kv_threshold),
            ));
        }
        if !(1..=1_000_000).contains(&self.queue_threshold) {
            return Err(ConfigError::new(
                "queue_threshold",
                "must be between 1 and 1000000",
            ));
        }
        if self.retry_after_s > 3600 {
            return Err(ConfigError::new("retry_after_s", "must be at most 3600"));
        }
        Ok(())
    }

    /// Whether `pod` is full. A pod whose metrics are unknown is not (we cannot tell).
    pub fn is_saturated(&self, pod: &PodView<'_>) -> bool {
        if pod.metrics.is_none() {
            return false;
        }
        let load = LoadEstimate::of(pod);
        load.waiting >= self.queue_threshold
            || load.kv_usage.is_some_and(|kv| kv >= self.kv_threshold)
    }

    /// Whether every routable pod is full (false when there is none).
    pub fn all_saturated(&self, pods: &[PodView<'_>]) -> bool {
        let mut routable = pods.iter().filter(|p| p.healthy).peekable();
        routable.peek().is_some() && routable.all(|p| self.is_saturated(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scheduler::PodMetrics;

    fn metrics(waiting: u32, kv: f64) -> PodMetrics {
        let mut m = PodMetrics::idle();
        m.waiting = waiting;
        m.kv_usage = kv;
        m
    }

    #[test]
    fn a_pod_is_full_by_queue_or_by_kv() {
        let c = SaturationConfig::default();
        let (quiet, queued, kv_full) = (metrics(1, 0.1), metrics(5, 0.1), metrics(0, 0.85));
        assert!(!c.is_saturated(&PodView {
            metrics: Some(&quiet),
            ..PodView::new("a")
        }));
        assert!(c.is_saturated(&PodView {
            metrics: Some(&queued),
            ..PodView::new("a")
        }));
        assert!(c.is_saturated(&PodView {
            metrics: Some(&kv_full),
            ..PodView::new("a")
        }));
        let room = metrics(0, 0.1);
        let burst = PodView {
            metrics: Some(&room),
            routed_since_scrape: 40,
            ..PodView::new("a")
        };
        assert!(
            !c.is_saturated(&burst),
            "a burst into a pod that had room runs, it does not queue"
        );
        let past_capacity = PodView {
            batch_capacity: Some(4),
            ..burst
        };
        assert!(
            c.is_saturated(&past_capacity),
            "what we sent since the scrape beyond the batch capacity waits"
        );
        assert!(!c.is_saturated(&PodView::new("unknown")));
    }

    #[test]
    fn all_saturated_needs_every_healthy_pod_full() {
        let c = SaturationConfig::default();
        let (full, quiet) = (metrics(9, 0.9), metrics(0, 0.0));
        let pods = [
            PodView {
                metrics: Some(&full),
                ..PodView::new("a")
            },
            PodView {
                metrics: Some(&quiet),
                ..PodView::new("b")
            },
        ];
        assert!(!c.all_saturated(&pods));
        let pods = [
            PodView {
                metrics: Some(&full),
                ..PodView::new("a")
            },
            PodView {
                healthy: false,
                ..PodView::new("b")
            },
        ];
        assert!(c.all_saturated(&pods), "an unhealthy pod offers no room");
        assert!(!c.all_saturated(&[]));
    }

    #[test]
    fn bad_thresholds_name_the_field() {
        let c = SaturationConfig {
            kv_threshold: 1.5,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().path, "kv_threshold");
        let c = SaturationConfig {
            queue_threshold: 0,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().path, "queue_threshold");
    }
}
