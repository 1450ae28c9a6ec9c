//! One `PodState` per pod address. The hot path looks pods up and reads their state without
//! taking a lock: the set of pods is an immutable map swapped atomically on membership changes,
//! each pod's metrics an immutable snapshot swapped by the scraper, and counts are atomics.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use scheduler::{PodMetrics, PodView};

use crate::answers::Answers;

/// What we know about one pod.
#[derive(Debug)]
pub struct PodState {
    address: Box<str>,
    metrics: ArcSwapOption<PodMetrics>,
    /// Requests we routed there that have not finished (pick to end of stream).
    in_flight: AtomicU32,
    /// Requests we routed there since its last successful scrape: between scrapes its queue
    /// grows by at least this much, which the scrape cannot show yet.
    routed_since_scrape: AtomicU32,
    /// Requests of ours there that finished since its last successful scrape: they left the
    /// pod, which the scrape cannot show yet either.
    finished_since_scrape: AtomicU32,
    /// The batch size the pod was last seen full at (running while others waited), raised by
    /// any larger batch seen since; 0 while unknown.
    batch_capacity: AtomicU32,
    /// Scrapes that failed in a row (0 after a success).
    failed_scrapes: AtomicU32,
    /// Of those, the ones where the pod did not answer at all (refused, reset, timed out): a
    /// sign the pod itself is down, unlike an answer we could not read.
    unreachable_scrapes: AtomicU32,
    scrapes_ok: AtomicU64,
    scrapes_failed: AtomicU64,
    /// The pod's answers to the requests we routed.
    answers: Answers,
}

impl PodState {
    fn new(address: &str) -> Self {
        PodState {
            address: address.into(),
            metrics: ArcSwapOption::empty(),
            in_flight: AtomicU32::new(0),
            routed_since_scrape: AtomicU32::new(0),
            finished_since_scrape: AtomicU32::new(0),
            batch_capacity: AtomicU32::new(0),
            failed_scrapes: AtomicU32::new(0),
            unreachable_scrapes: AtomicU32::new(0),
            scrapes_ok: AtomicU64::new(0),
            scrapes_failed: AtomicU64::new(0),
            answers: Answers::default(),
        }
    }

    /// The pod's answers to the requests we routed: failure streaks and pauses.
    pub fn answers(&self) -> &Answers {
        &self.answers
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The latest scraped metrics, if any scrape ever succeeded. Cheap and lock-free; hold the
    /// guard only for the decision.
    pub fn metrics(&self) -> Guard<Option<Arc<PodMetrics>>> {
        self.metrics.load()
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn routed_since_scrape(&self) -> u32 {
        self.routed_since_scrape.load(Ordering::Relaxed)
    }

    pub fn finished_since_scrape(&self) -> u32 {
        self.finished_since_scrape.load(Ordering::Relaxed)
    }

    /// How many requests the pod's batch holds, once it has shown it (see the field).
    pub fn batch_capacity(&self) -> Option<u32> {
        Some(self.batch_capacity.load(Ordering::Relaxed)).filter(|&c| c > 0)
    }

    /// The scheduler's view of this pod, with `metrics` loaded by the caller (held for the
    /// decision) and `healthy` as the pool judges it; `full` is left to the caller's rule.
    pub fn view<'a>(&'a self, healthy: bool, metrics: Option<&'a PodMetrics>) -> PodView<'a> {
        PodView {
            address: self.address(),
            healthy,
            metrics,
            in_flight: self.in_flight(),
            routed_since_scrape: self.routed_since_scrape(),
            finished_since_scrape: self.finished_since_scrape(),
            batch_capacity: self.batch_capacity(),
            scrape_failing: self.failed_scrapes_in_a_row() > 0,
            full: false,
        }
    }

    pub fn failed_scrapes_in_a_row(&self) -> u32 {
        self.failed_scrapes.load(Ordering::Relaxed)
    }

    /// Scrapes in a row the pod did not answer at all.
    pub fn unreachable_in_a_row(&self) -> u32 {
        self.unreachable_scrapes.load(Ordering::Relaxed)
    }

    /// (successful, failed) scrapes since the pod joined.
    pub fn scrape_counts(&self) -> (u64, u64) {
        (
            self.scrapes_ok.load(Ordering::Relaxed),
            self.scrapes_failed.load(Ordering::Relaxed),
        )
    }

    /// A request was routed here: counted until the returned guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.routed_since_scrape.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// A scrape succeeded: its metrics replace the previous ones.
    pub fn publish_metrics(&self, metrics: PodMetrics) {
        // A queue means the batch is full at its current size; without one, a known capacity
        // can only have grown.
        let capacity = if metrics.waiting > 0 {
            Some(metrics.running)
        } else {
            self.batch_capacity().map(|c| c.max(metrics.running))
        };
        if let Some(c) = capacity {
            self.batch_capacity.store(c, Ordering::Relaxed);
        }
        self.metrics.store(Some(Arc::new(metrics)));
        self.routed_since_scrape.store(0, Ordering::Relaxed);
        self.finished_since_scrape.store(0, Ordering::Relaxed);
        self.failed_scrapes.store(0, Ordering::Relaxed);
        self.unreachable_scrapes.store(0, Ordering::Relaxed);
        self.scrapes_ok.fetch_add(1, Ordering::Relaxed);
    }

    /// A scrape failed: the last metrics stay (and age); the failure is counted. `unreachable`
    /// when the pod gave no answer at all.
    pub fn record_failed_scrape(&self, unreachable: bool) {
        self.failed_scrapes.fetch_add(1, Ordering::Relaxed);
        if unreachable {
            self.unreachable_scrapes.fetch_add(1, Ordering::Relaxed);
        } else {
            self.unreachable_scrapes.store(0, Ordering::Relaxed);
        }
        self.scrapes_failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// One request counted in a pod's in-flight total; dropping it ends the count. Held by the
/// stream's filter, so every way a stream ends (completion, client disconnect, upstream reset,
/// local reply) ends the count exactly once.
#[derive(Debug)]
pub struct InFlight(Arc<PodState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.finished_since_scrape.fetch_add(1, Ordering::Relaxed);
    }
}

type PodMap = HashMap<Box<str>, Arc<PodState>>;

/// All pods we know, by address.
#[derive(Default)]
pub struct PodRegistry {
    pods: ArcSwap<PodMap>,
}

impl PodRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of the pod at `address`, if it is a member.
    pub fn get(&self, address: &str) -> Option<Arc<PodState>> {
        self.pods.load().get(address).cloned()
    }

    /// Every member, for the scraper.
    pub fn all(&self) -> Arc<PodMap> {
        self.pods.load_full()
    }

    pub fn len(&self) -> usize {
        self.pods.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the members exactly `addresses`: new pods start with no metrics, existing ones
    /// keep their state (counts and metrics survive a membership update), removed ones go.
    /// Returns the removed addresses, so their other state (the prefix index) can go too.
    pub fn sync<'a>(&self, addresses: impl IntoIterator<Item = &'a str>) -> Vec<Box<str>> {
        // A pod may be in several pools: count it once.
        let wanted: HashSet<&str> = addresses.into_iter().collect();
        let current = self.pods.load();
        let unchanged =
            wanted.len() == current.len() && wanted.iter().all(|a| current.contains_key(*a));
        if unchanged {
            return Vec::new();
        }
        let mut removed = Vec::new();
        self.pods.rcu(|current| {
            let next: PodMap = wanted
                .iter()
                .map(|a| {
                    let state = current
                        .get(*a)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(PodState::new(a)));
                    (Box::from(*a), state)
                })
                .collect();
            removed = current
                .keys()
                .filter(|k| !next.contains_key(*k))
                .cloned()
                .collect();
            next
        });
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_adds_keeps_and_removes() {
        let r = PodRegistry::new();
        assert!(r.sync(["a:1", "b:1"]).is_empty());
        let a = r.get("a:1").unwrap();
        let _req = a.begin_request();
        let removed = r.sync(["a:1", "c:1"]);
        assert_eq!(removed, vec![Box::from("b:1")]);
        assert!(r.get("b:1").is_none());
        assert_eq!(
            r.get("a:1").unwrap().in_flight(),
            1,
            "state survives membership updates"
        );
        assert!(r.get("c:1").unwrap().metrics().is_none());
        assert!(
            r.sync(["c:1", "a:1"]).is_empty(),
            "same set in another order changes nothing"
        );
        // Duplicates (a pod in two pools) must not hide a removal.
        assert_eq!(r.sync(["a:1", "a:1"]), vec![Box::from("c:1")]);
    }

    #[test]
    fn in_flight_counts_until_the_guard_drops() {
        let r = PodRegistry::new();
        r.sync(["a:1"]);
        let pod = r.get("a:1").unwrap();
        let first = pod.begin_request();
        let second = pod.begin_request();
        assert_eq!((pod.in_flight(), pod.routed_since_scrape()), (2, 2));
        drop(first);
        assert_eq!((pod.in_flight(), pod.finished_since_scrape()), (1, 1));
        pod.publish_metrics(PodMetrics::idle());
        assert_eq!(
            (pod.routed_since_scrape(), pod.finished_since_scrape()),
            (0, 0),
            "a scrape resets what it now sees"
        );
        drop(second);
        assert_eq!(pod.in_flight(), 0);
    }

    #[test]
    fn batch_capacity_is_learnt_from_scrapes_that_show_a_queue() {
        let r = PodRegistry::new();
        r.sync(["a:1"]);
        let pod = r.get("a:1").unwrap();
        let scrape = |waiting, running| PodMetrics {
            waiting,
            running,
            ..PodMetrics::idle()
        };
        pod.publish_metrics(scrape(0, 40));
        assert_eq!(
            pod.batch_capacity(),
            None,
            "no queue yet: a batch of 40 had room"
        );
        pod.publish_metrics(scrape(3, 64));
        assert_eq!(pod.batch_capacity(), Some(64));
        pod.publish_metrics(scrape(0, 10));
        assert_eq!(
            pod.batch_capacity(),
            Some(64),
            "a smaller batch proves nothing"
        );
        pod.publish_metrics(scrape(0, 80));
        assert_eq!(pod.batch_capacity(), Some(80), "it held more than thought");
        pod.publish_metrics(scrape(2, 50));
        assert_eq!(
            pod.batch_capacity(),
            Some(50),
            "full at 50 now (KV memory, say)"
        );
        assert_eq!(pod.view(true, None).batch_capacity, Some(50));
    }

    #[test]
    fn failed_scrapes_keep_the_last_metrics() {
        let r = PodRegistry::new();
        r.sync(["a:1"]);
        let pod = r.get("a:1").unwrap();
        let mut m = PodMetrics::idle();
        m.waiting = 4;
        pod.publish_metrics(m);
        pod.record_failed_scrape(true);
        pod.record_failed_scrape(false);
        assert_eq!(pod.failed_scrapes_in_a_row(), 2);
        assert_eq!(pod.unreachable_in_a_row(), 0, "it answered the second time");
        pod.record_failed_scrape(true);
        assert_eq!(pod.unreachable_in_a_row(), 1);
        assert_eq!(pod.metrics().as_ref().unwrap().waiting, 4);
        assert_eq!(pod.scrape_counts(), (1, 3));
        pod.publish_metrics(PodMetrics::idle());
        assert_eq!(pod.failed_scrapes_in_a_row(), 0);
    }

    #[test]
    fn concurrent_requests_never_leak_a_count() {
        let r = Arc::new(PodRegistry::new());
        r.sync(["a:1"]);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let r = Arc::clone(&r);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let pod = r.get("a:1").unwrap();
                        let _g = pod.begin_request();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(r.get("a:1").unwrap().in_flight(), 0);
    }
}
