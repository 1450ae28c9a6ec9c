//! A pool: everything known about the pods of one upstream cluster — its members and their
//! health as Envoy reports them, each pod's live state, the scraper keeping that fresh, the
//! prefix index of routes learned and, when configured, the pods' own KV-cache events and the
//! model's tokenizer. It belongs to the cluster (its load-balancing policy holds
//! it) and is shared by every filter config routing there, so replacing a listener or filter
//! config loses nothing; `pools` finds it by cluster name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use kv_events::KvEventsIndex;
use pods::{PodRegistry, PodState, Scraper};
use prompt_tokenizer::PromptTokenizer;
use scheduler::plugins::scorers::PreciseBlockIndex;
use scheduler::prefix::PrefixIndex;
use scheduler::Indexes;

use crate::logging::{log, Level};
use crate::pool_config::PoolConfig;

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

/// Whether the module routes to a pod, by what it saw itself (Envoy's health checks and
/// outlier detection come on top, through the member's `Health`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    Serving,
    /// Its `/metrics` went unanswered `unhealthy_after_failures` times in a row.
    Unreachable,
    /// It failed `pod_errors.avoid_after` requests in a row and is paused.
    Erroring,
}

/// One immutable view of a cluster's members.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PoolSnapshot {
    pub members: Vec<Member>,
}

impl PoolSnapshot {
    /// Members Envoy would route to: healthy or degraded (the LB cannot pick unhealthy hosts).
    #[cfg(test)]
    pub fn routable(&self) -> impl Iterator<Item = &Member> {
        self.members
            .iter()
            .filter(|m| m.health != Health::Unhealthy)
    }
}

/// The members as the filter routes to them: Envoy's snapshot, and each member's pod state
/// (same order), resolved once per membership change rather than per request.
#[derive(Default)]
pub struct Members {
    pub snapshot: PoolSnapshot,
    pub pods: Vec<Arc<PodState>>,
}

pub struct Pool {
    cluster: Box<str>,
    config: PoolConfig,
    members: ArcSwap<Members>,
    pods: Arc<PodRegistry>,
    index: Arc<PrefixIndex>,
    /// The pods' KV-cache events, one subscription per member (absent unless configured).
    kv_events: Option<Arc<KvEventsIndex>>,
    /// The model's tokenizer, shared by every worker (absent unless configured).
    tokenizer: Option<Arc<PromptTokenizer>>,
    /// Serialises membership updates (every LB instance of the cluster publishes the same
    /// ones); readers never take it.
    writer: Mutex<()>,
    /// Scrape totals per pod already reported as counter increments. Kept here, not per filter
    /// config, so that two configs reporting the same pool never count a scrape twice.
    reported_scrapes: Mutex<HashMap<Box<str>, (u64, u64)>>,
    /// Each pod's condition as last logged, so each change is logged once.
    logged_conditions: Mutex<HashMap<Box<str>, Condition>>,
    /// Scrapes the members while the pool lives (absent in unit tests).
    scraper: Option<Scraper>,
}

impl Pool {
    /// A pool with no members yet, not scraping.
    pub fn new(cluster: &str, config: PoolConfig) -> Pool {
        Pool {
            cluster: cluster.into(),
            members: ArcSwap::from_pointee(Members::default()),
            pods: Arc::new(PodRegistry::new()),
            index: Arc::new(PrefixIndex::new(config.prefix_index.clone())),
            kv_events: None,
            tokenizer: None,
            writer: Mutex::new(()),
            reported_scrapes: Mutex::new(HashMap::new()),
            logged_conditions: Mutex::new(HashMap::new()),
            scraper: None,
            config,
        }
    }

    /// The same, live: scraping its members' metrics and, if configured, following their KV
    /// events with its tokenizer loaded, from now until it is dropped.
    pub fn scraping(cluster: &str, config: PoolConfig) -> Result<Pool, String> {
        let mut pool = Pool::new(cluster, config);
        if let Some(tokenizer) = &pool.config.tokenizer {
            let tokenizer = PromptTokenizer::load(tokenizer).map_err(|e| e.to_string())?;
            if !tokenizer.chunking() {
                log(
                    Level::Warn,
                    &format!("inference-scheduler: pool {cluster}: the tokenizer gives other ids when a prompt is tokenized in pieces, so every prompt is tokenized whole (slower; see the README)"),
                );
            }
            pool.tokenizer = Some(Arc::new(tokenizer));
        }
        if let Some(kv_events) = &pool.config.kv_events {
            let index = KvEventsIndex::new(kv_events.clone())
                .map_err(|e| format!("cannot start the KV-event subscriber: {e}"))?;
            pool.kv_events = Some(Arc::new(index));
        }
        pool.scraper = Some(Scraper::start(
            Arc::clone(&pool.pods),
            &pool.config.pod_metrics,
        )?);
        Ok(pool)
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    pub fn members(&self) -> arc_swap::Guard<Arc<Members>> {
        self.members.load()
    }

    pub fn pods(&self) -> &PodRegistry {
        &self.pods
    }

    pub fn index(&self) -> &Arc<PrefixIndex> {
        &self.index
    }

    /// The indexes a scheduler of this pool reads: its routes and its pods' events.
    pub fn indexes(&self) -> Indexes {
        Indexes {
            prefix: Arc::clone(&self.index),
            precise: self
                .kv_events
                .as_ref()
                .map(|i| Arc::clone(i) as Arc<dyn PreciseBlockIndex>),
        }
    }

    pub fn kv_events(&self) -> Option<&KvEventsIndex> {
        self.kv_events.as_deref()
    }

    pub fn tokenizer(&self) -> Option<&PromptTokenizer> {
        self.tokenizer.as_deref()
    }

    /// Publishes `snapshot` as the current members. Cheap when nothing changed, the common case.
    /// Pods that left are dropped from the pod registry, the prefix index and the KV-event
    /// subscriptions; pods that joined are subscribed.
    pub fn publish(&self, snapshot: PoolSnapshot) {
        if self.members.load().snapshot == snapshot {
            return;
        }
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.pods
            .sync(snapshot.members.iter().map(|m| m.address.as_str()));
        let pods = snapshot
            .members
            .iter()
            .map(|m| self.pods.get(&m.address).expect("synced just now"))
            .collect();
        self.members.store(Arc::new(Members { snapshot, pods }));
        // After the registry changed, so a route recorded for a pod while it was leaving is
        // caught too: the index keeps exactly the members.
        let pods = &self.pods;
        self.index.retain(|address| pods.get(address).is_some());
        if let Some(kv_events) = &self.kv_events {
            self.follow_events(kv_events);
        }
    }

    /// Subscribes every member not yet followed and drops the subscriptions of pods gone.
    fn follow_events(&self, kv_events: &KvEventsIndex) {
        kv_events.retain(|address| self.pods.get(address).is_some());
        for member in &self.members.load().snapshot.members {
            if kv_events.is_subscribed(&member.address) {
                continue;
            }
            match kv_events.config().endpoints_of(&member.address) {
                Some(endpoints) => kv_events.subscribe(&member.address, endpoints),
                None => log(
                    Level::Warn,
                    &format!(
                        "inference-scheduler: pool {}: no KV-event endpoint for pod {} (kv_events ports out of range); it is scored approximately",
                        self.cluster, member.address
                    ),
                ),
            }
        }
    }

    /// Metrics older than this count as stale.
    pub fn stale_after(&self) -> Duration {
        Duration::from_millis(self.config.pod_metrics.stale_after_ms)
    }

    /// Whether the module routes to `pod` at `now`, by its scrapes and its answers. An answer
    /// we cannot read from `/metrics` does not count against it: the pod is up.
    pub fn condition(&self, pod: &PodState, now: Instant) -> Condition {
        let limit = self.config.pod_metrics.unhealthy_after_failures;
        if limit > 0 && pod.unreachable_in_a_row() >= limit {
            Condition::Unreachable
        } else if pod.answers().avoided(now) {
            Condition::Erroring
        } else {
            Condition::Serving
        }
    }

    /// Records how a request routed to `pod` ended: `ok` false for a 5xx, or when Envoy had to
    /// retry it on another pod (a reset, refusal or timeout before the first byte).
    pub fn record_answer(&self, pod: &PodState, ok: bool) {
        pod.answers()
            .record(ok, &self.config.pod_errors, Instant::now());
    }

    /// Logs each pod whose condition changed since the last call: once, at warn when it
    /// stops serving, at info when it is back. Runs on Envoy's main thread.
    pub fn log_condition_changes(&self, now: Instant) {
        let mut logged = self
            .logged_conditions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let members = self.pods.all();
        logged.retain(|address, _| members.contains_key(address));
        for (address, pod) in members.iter() {
            let condition = self.condition(pod, now);
            let before = logged
                .insert(address.clone(), condition)
                .unwrap_or(Condition::Serving);
            if before == condition {
                continue;
            }
            let cluster = &self.cluster;
            match condition {
                Condition::Unreachable => log(
                    Level::Warn,
                    &format!("inference-scheduler: pod {address} of {cluster}: unreachable (its /metrics went unanswered {} times in a row); avoided until it answers", pod.unreachable_in_a_row()),
                ),
                Condition::Erroring => log(
                    Level::Warn,
                    &format!("inference-scheduler: pod {address} of {cluster}: erroring ({} failed requests in a row); avoided for {} ms", self.config.pod_errors.avoid_after, self.config.pod_errors.avoid_for_ms),
                ),
                Condition::Serving => log(
                    Level::Info,
                    &format!("inference-scheduler: pod {address} of {cluster}: back, serving again"),
                ),
            }
        }
    }

    /// Scrapes of `pod` (succeeded, failed) since the last call for it, so counters grow by
    /// exactly what happened whoever reports. Also forgets pods that are gone.
    pub fn unreported_scrapes(&self, address: &str, pod: &PodState) -> (u64, u64) {
        let mut reported = self
            .reported_scrapes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if reported.len() > self.pods.len() {
            reported.retain(|a, _| self.pods.get(a).is_some());
        }
        let (ok, failed) = pod.scrape_counts();
        let before = reported
            .insert(address.into(), (ok, failed))
            .unwrap_or((0, 0));
        (ok.saturating_sub(before.0), failed.saturating_sub(before.1))
    }
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
    fn a_newer_snapshot_replaces_the_old_one_and_unhealthy_is_not_routable() {
        let pool = Pool::new("pool-b", PoolConfig::default());
        pool.publish(PoolSnapshot {
            members: vec![member("1.1.1.1:1", Health::Healthy)],
        });
        assert!(pool.pods().get("1.1.1.1:1").is_some());
        pool.publish(PoolSnapshot {
            members: vec![
                member("1.1.1.1:1", Health::Unhealthy),
                member("2.2.2.2:2", Health::Degraded),
            ],
        });
        let snap = pool.members();
        let routable: Vec<_> = snap
            .snapshot
            .routable()
            .map(|m| m.address.as_str())
            .collect();
        assert_eq!(routable, ["2.2.2.2:2"]);
    }

    #[test]
    fn scrapes_are_reported_once() {
        let pool = Pool::new("pool-c", PoolConfig::default());
        pool.publish(PoolSnapshot {
            members: vec![member("1.1.1.1:1", Health::Healthy)],
        });
        let pod = pool.pods().get("1.1.1.1:1").unwrap();
        pod.record_failed_scrape(true);
        assert_eq!(pool.unreported_scrapes("1.1.1.1:1", &pod), (0, 1));
        assert_eq!(pool.unreported_scrapes("1.1.1.1:1", &pod), (0, 0));
    }
}
