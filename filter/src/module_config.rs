//! Everything built once per filter config and shared by all streams on all worker threads:
//! the settings, the scheduler (with its prefix index), and the scraper thread.

use std::sync::Arc;

use pods::{PodRegistry, Scraper};
use scheduler::Scheduler;

use crate::config::{field_error, FilterConfig};
use crate::metrics::MetricIds;
use crate::pool;

pub struct ModuleConfig {
    pub filter: FilterConfig,
    pub scheduler: Arc<Scheduler>,
    /// Pod state shared by every config and the load-balancing policy.
    pub pods: Arc<PodRegistry>,
    /// Ids of our metrics in Envoy's stats, once defined (absent in unit tests).
    pub metrics: Option<MetricIds>,
    /// Started by `start_scraper`; stopped (and joined) when the config is dropped.
    scraper: Option<Scraper>,
}

impl ModuleConfig {
    /// Builds the module state from the filter's JSON config; errors name the offending field.
    /// Starts no thread (see `start_scraper`).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let filter = FilterConfig::from_json(bytes)?;
        let scheduler = Scheduler::from_value(&filter.scheduler).map_err(|e| {
            let path = if e.path.is_empty() || e.path == "." {
                "scheduler".to_owned()
            } else {
                format!("scheduler.{}", e.path)
            };
            field_error(&path, &e.message)
        })?;
        let scheduler = Arc::new(scheduler);
        pool::register_scheduler(&scheduler);
        Ok(ModuleConfig {
            filter,
            scheduler,
            pods: Arc::clone(pool::pods()),
            metrics: None,
            scraper: None,
        })
    }

    /// Metrics older than this count as stale.
    pub fn stale_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.filter.pod_metrics.stale_after_ms)
    }

    /// Whether `pod` left enough scrapes in a row unanswered (refused, reset, timed out) to
    /// avoid it. An answer we cannot read does not count: the pod is up.
    pub fn scrapes_failing(&self, pod: &pods::PodState) -> bool {
        let limit = self.filter.pod_metrics.unhealthy_after_failures;
        limit > 0 && pod.unreachable_in_a_row() >= limit
    }

    /// Starts scraping the pool's pods; called once when Envoy loads this config.
    pub fn start_scraper(&mut self) -> Result<(), String> {
        let scraper = Scraper::start(Arc::clone(&self.pods), &self.filter.pod_metrics)
            .map_err(|e| field_error("pod_metrics", &e))?;
        self.scraper = Some(scraper);
        Ok(())
    }
}
