//! The pool registry: the bridge between the load-balancing policy, which sees a cluster's
//! members and their health, and the HTTP filter, which only sees host counts.
//!
//! Each LB instance (one on the main thread, one per worker) publishes the members of its cluster
//! when Envoy tells it membership or health changed. The filter reads the latest snapshot without
//! taking a lock: snapshots are immutable and swapped atomically.
//!
//! Publishing also keeps the pod registry (metrics, in-flight counts; what the scraper scrapes)
//! equal to the union of all pools, and makes every live scheduler forget pods that left.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use arc_swap::ArcSwap;
use pods::PodRegistry;
use scheduler::Scheduler;

/// Health of a member as Envoy reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Unhealthy,
    Degraded,
    Healthy,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// `ip:port`, the stable identity of a pod across membership changes.
    pub address: String,
    pub health: Health,
}

/// One immutable view of a cluster's members.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PoolSnapshot {
    pub members: Vec<Member>,
}

impl PoolSnapshot {
    /// Members Envoy would route to: healthy or degraded (the LB cannot pick unhealthy hosts).
    pub fn routable(&self) -> impl Iterator<Item = &Member> {
        self.members
            .iter()
            .filter(|m| m.health != Health::Unhealthy)
    }
}

type Registry = HashMap<String, Arc<PoolSnapshot>>;

static POOLS: LazyLock<ArcSwap<Registry>> = LazyLock::new(|| ArcSwap::from_pointee(HashMap::new()));

/// Serialises membership updates.
static WRITER: Mutex<()> = Mutex::new(());

static PODS: LazyLock<Arc<PodRegistry>> = LazyLock::new(|| Arc::new(PodRegistry::new()));

/// Schedulers of the live filter configs, told when pods leave. Touched only on config loads
/// and membership changes, never per request.
static SCHEDULERS: Mutex<Vec<Weak<Scheduler>>> = Mutex::new(Vec::new());

/// The registry of every pool's pods.
pub fn pods() -> &'static Arc<PodRegistry> {
    &PODS
}

/// Registers a scheduler to be told when pods leave the pools.
pub fn register_scheduler(scheduler: &Arc<Scheduler>) {
    let mut schedulers = SCHEDULERS.lock().unwrap_or_else(|e| e.into_inner());
    schedulers.retain(|s| s.strong_count() > 0);
    schedulers.push(Arc::downgrade(scheduler));
}

/// Publishes `snapshot` as the current members of `cluster`. Cheap when nothing changed, which is
/// the common case: every LB instance of a cluster publishes the same update.
pub fn publish(cluster: &str, snapshot: PoolSnapshot) {
    if POOLS
        .load()
        .get(cluster)
        .is_some_and(|current| **current == snapshot)
    {
        return;
    }
    // Writers take turns (membership changes are rare), so the registry is synced with the
    // union of the pools as they are after this update, never an older one; readers never wait.
    let _writer = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    let mut next = Registry::clone(&POOLS.load());
    next.insert(cluster.to_owned(), Arc::new(snapshot));
    POOLS.store(Arc::new(next));
    let pools = POOLS.load();
    let removed = PODS.sync(
        pools
            .values()
            .flat_map(|p| p.members.iter().map(|m| m.address.as_str())),
    );
    if !removed.is_empty() {
        let schedulers = SCHEDULERS.lock().unwrap_or_else(|e| e.into_inner());
        for scheduler in schedulers.iter().filter_map(Weak::upgrade) {
            removed
                .iter()
                .for_each(|address| scheduler.forget_pod(address));
        }
    }
}

/// The latest members of `cluster`, if an instance of our LB policy serves it.
pub fn members(cluster: &str) -> Option<Arc<PoolSnapshot>> {
    POOLS.load().get(cluster).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(address: &str, health: Health) -> Member {
        Member {
            address: address.into(),
            health,
        }
    }

    #[test]
    fn publish_then_read_back() {
        publish(
            "pool-a",
            PoolSnapshot {
                members: vec![member("1.1.1.1:1", Health::Healthy)],
            },
        );
        let snap = members("pool-a").unwrap();
        assert_eq!(snap.members[0].address, "1.1.1.1:1");
        assert!(members("no-such-pool").is_none());
    }

    #[test]
    fn a_newer_snapshot_replaces_the_old_one_and_unhealthy_is_not_routable() {
        publish(
            "pool-b",
            PoolSnapshot {
                members: vec![member("1.1.1.1:1", Health::Healthy)],
            },
        );
        publish(
            "pool-b",
            PoolSnapshot {
                members: vec![
                    member("1.1.1.1:1", Health::Unhealthy),
                    member("2.2.2.2:2", Health::Degraded),
                ],
            },
        );
        let snap = members("pool-b").unwrap();
        let routable: Vec<_> = snap.routable().map(|m| m.address.as_str()).collect();
        assert_eq!(routable, ["2.2.2.2:2"]);
    }
}
