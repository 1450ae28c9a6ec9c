//! Everything built once per filter config and shared by all streams on all worker threads:
//! the settings, and the scheduler of each pool this config routes to.
//!
//! A scheduler holds the config's profiles and learns into its pool's prefix index, which the
//! pool owns: a new filter config builds new schedulers over the same indexes, so a reload
//! changes the policy and keeps what was learned.

use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use scheduler::{ConfigError, HeaderNames, Registry, Scheduler};

use crate::config::FilterConfig;
use crate::metrics::MetricIds;
use crate::pool::Pool;

pub struct ModuleConfig {
    pub filter: FilterConfig,
    /// Ids of our metrics in Envoy's stats, once defined (absent in unit tests).
    pub metrics: Option<MetricIds>,
    /// One scheduler per pool, built on the first request to it. A short list: a filter
    /// config routes to a handful of clusters.
    schedulers: ArcSwap<Vec<(Weak<Pool>, Arc<Scheduler>)>>,
}

impl ModuleConfig {
    /// Builds the module state from the filter's JSON config; errors name the offending field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let filter = FilterConfig::from_json(bytes)?;
        // Build once now, so a bad profile fails the config load rather than a request.
        Scheduler::from_config(&filter.scheduler_config, &Registry::builtin())
            .map_err(|e| e.nested_in("scheduler"))?;
        Ok(ModuleConfig {
            filter,
            metrics: None,
            schedulers: ArcSwap::from_pointee(Vec::new()),
        })
    }

    /// The request headers that steer scheduling.
    pub fn headers(&self) -> &HeaderNames {
        &self.filter.scheduler_config.headers
    }

    /// The scheduler for `pool`: this config's profiles over the pool's indexes.
    pub fn scheduler_for(&self, pool: &Arc<Pool>) -> Arc<Scheduler> {
        // A dead entry's address may be reused by a new pool: only a live one matches.
        let same = |(p, _): &&(Weak<Pool>, Arc<Scheduler>)| {
            std::ptr::eq(p.as_ptr(), Arc::as_ptr(pool)) && p.strong_count() > 0
        };
        if let Some((_, scheduler)) = self.schedulers.load().iter().find(same) {
            return Arc::clone(scheduler);
        }
        let scheduler = Arc::new(
            Scheduler::with_indexes(
                &self.filter.scheduler_config,
                &Registry::builtin(),
                &pool.indexes(),
            )
            .expect("the scheduler config was checked when the filter config loaded"),
        );
        self.schedulers.rcu(|current| {
            let mut next: Vec<_> = current
                .iter()
                .filter(|(p, _)| p.strong_count() > 0)
                .cloned()
                .collect();
            if !next.iter().any(|entry| same(&entry)) {
                next.push((Arc::downgrade(pool), Arc::clone(&scheduler)));
            }
            next
        });
        // Another thread may have raced us: use whichever got in.
        self.schedulers
            .load()
            .iter()
            .find(same)
            .map_or(scheduler, |(_, s)| Arc::clone(s))
    }
}
