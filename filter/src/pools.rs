//! The one process-wide map: cluster name → its live [`Pool`]. Pools are owned by their
//! cluster's load-balancing policy instances; the map holds them weakly, so a pool goes away
//! (its scraper stops) when the last instance of the last cluster config using it does.
//!
//! A cluster config replaced by a new one (a CDS update, or the same cluster in a new
//! bootstrap) finds the pool of the old one and takes it over intact, learned routes and all,
//! as long as the pool settings did not change. If they did, the new config gets a fresh pool
//! and the map points at it; the old one lives on until the old config drains.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use arc_swap::ArcSwap;

use crate::pool::Pool;
use crate::pool_config::PoolConfig;

type PoolMap = HashMap<Box<str>, Weak<Pool>>;

static POOLS: LazyLock<ArcSwap<PoolMap>> = LazyLock::new(|| ArcSwap::from_pointee(HashMap::new()));

/// Serialises changes to the map (rare: cluster configs come and go).
static WRITER: Mutex<()> = Mutex::new(());

/// The live pool of `cluster`, if one of our LB policy's instances serves it. Lock-free.
pub fn find(cluster: &str) -> Option<Arc<Pool>> {
    POOLS.load().get(cluster)?.upgrade()
}

/// Every live pool, for reporting.
pub fn all() -> Vec<Arc<Pool>> {
    POOLS.load().values().filter_map(Weak::upgrade).collect()
}

/// The pool of `cluster` with these settings: the live one if its settings are the same,
/// otherwise a new one made by `create` (which starts its scraper), now found under `cluster`.
pub fn acquire(
    cluster: &str,
    config: &PoolConfig,
    create: impl FnOnce(&str, PoolConfig) -> Result<Pool, String>,
) -> Result<Arc<Pool>, String> {
    let _writer = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pool) = find(cluster).filter(|p| p.config() == config) {
        return Ok(pool);
    }
    let pool = Arc::new(create(cluster, config.clone())?);
    let mut next: PoolMap = POOLS
        .load()
        .iter()
        .filter(|(_, p)| p.strong_count() > 0)
        .map(|(k, p)| (k.clone(), Weak::clone(p)))
        .collect();
    next.insert(cluster.into(), Arc::downgrade(&pool));
    POOLS.store(Arc::new(next));
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_pool(cluster: &str, config: PoolConfig) -> Result<Pool, String> {
        Ok(Pool::new(cluster, config))
    }

    #[test]
    fn a_pool_is_shared_while_used_and_gone_after() {
        let first = acquire("pools-a", &PoolConfig::default(), new_pool).unwrap();
        let second = acquire("pools-a", &PoolConfig::default(), new_pool).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert!(Arc::ptr_eq(&find("pools-a").unwrap(), &first));
        drop((first, second));
        assert!(find("pools-a").is_none());
        assert!(find("no-such-cluster").is_none());
    }

    #[test]
    fn changed_settings_make_a_new_pool_that_the_map_finds() {
        let old = acquire("pools-b", &PoolConfig::default(), new_pool).unwrap();
        let mut config = PoolConfig::default();
        config.pod_metrics.interval_ms = 20;
        let new = acquire("pools-b", &config, new_pool).unwrap();
        assert!(!Arc::ptr_eq(&old, &new));
        assert!(Arc::ptr_eq(&find("pools-b").unwrap(), &new));
        drop(new);
        // The old pool still lives (its config drains) but is no longer found.
        assert!(find("pools-b").is_none());
        assert_eq!(old.config(), &PoolConfig::default());
    }
}
