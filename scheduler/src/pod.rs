//! What the scheduler reads about each pod. The caller (the Envoy filter) builds one
//! [`PodView`] per pool member for every decision, borrowing from its latest metrics snapshot,
//! so nothing here is copied or locked on the hot path.

use std::time::{Duration, Instant};

/// One candidate pod as the caller sees it at decision time.
#[derive(Clone, Copy, Debug)]
pub struct PodView<'a> {
    /// `ip:port`: the pod's stable identity, also the key of its prefix-index entries and of
    /// rendezvous tie-breaking, so it must be the same string on every gateway replica.
    pub address: &'a str,
    /// False when the pool marks the pod unhealthy (failed active health checks, refused
    /// connections). Unhealthy pods are only chosen when every pod is unhealthy.
    pub healthy: bool,
    /// The pod's last scraped metrics; `None` until the first scrape. Scorers that need them
    /// abstain for such a pod and the rest decide.
    pub metrics: Option<&'a PodMetrics>,
    /// Requests this gateway has routed to the pod that have not finished yet.
    pub in_flight: u32,
    /// Requests this gateway routed to the pod since its metrics were scraped: the scrape
    /// cannot show them yet, so the load estimate ([`crate::LoadEstimate`]) adds them (a
    /// burst between two scrapes must not all pick the same "least loaded" pod).
    pub routed_since_scrape: u32,
    /// Requests this gateway routed to the pod that finished since its metrics were scraped:
    /// they left the pod, so the load estimate takes them off.
    pub finished_since_scrape: u32,
    /// How many requests the pod's batch holds, when it has shown it (the running count of a
    /// scrape that also showed a queue). Unknown for a pod that never queued.
    pub batch_capacity: Option<u32>,
    /// The pod's latest scrape failed: its metrics are the last good ones, and what finished
    /// since may have failed fast rather than been served (a dying pod answering errors), so
    /// the load estimate gives it no credit for either.
    pub scrape_failing: bool,
    /// The caller's saturation rule finds the pod full (its queue or KV cache past the
    /// thresholds). The `saturation` filter then prefers pods with room, and when none has
    /// any weighs queue against the prefill a cached prefix saves.
    pub full: bool,
}

impl<'a> PodView<'a> {
    /// A healthy pod with no metrics yet and nothing in flight.
    pub fn new(address: &'a str) -> Self {
        PodView {
            address,
            healthy: true,
            metrics: None,
            in_flight: 0,
            routed_since_scrape: 0,
            finished_since_scrape: 0,
            batch_capacity: None,
            scrape_failing: false,
            full: false,
        }
    }
}

/// A model server's state from its metrics endpoint (vLLM names in brackets).
#[derive(Clone, Debug)]
pub struct PodMetrics {
    /// Requests queued, not yet running (`vllm:num_requests_waiting`), at the scrape; see
    /// [`crate::LoadEstimate`] for the estimate between scrapes.
    pub waiting: u32,
    /// Requests being decoded (`vllm:num_requests_running`).
    pub running: u32,
    /// Fraction of the KV cache in use, 0 to 1 (`vllm:kv_cache_usage_perc`).
    pub kv_usage: f64,
    /// LoRA adapters the pod is serving now (`running_lora_adapters` of
    /// `vllm:lora_requests_info`).
    pub running_adapters: Vec<Box<str>>,
    /// LoRA adapters requested and waiting to be loaded (`waiting_lora_adapters`).
    pub waiting_adapters: Vec<Box<str>>,
    /// How many adapters the pod can hold at once (`max_lora`); `None` when unknown.
    pub max_lora: Option<u32>,
    /// The pod's KV-cache geometry (`vllm:cache_config_info`), when known; sizes the pod's
    /// prefix-index capacity.
    pub cache: Option<CacheGeometry>,
    /// When these metrics were scraped; older than the stale-metrics filter's `max_age_ms` and
    /// they are not trusted.
    pub scraped_at: Instant,
}

impl PodMetrics {
    /// Metrics scraped now, with nothing queued, nothing running and an empty cache.
    pub fn idle() -> Self {
        PodMetrics {
            waiting: 0,
            running: 0,
            kv_usage: 0.0,
            running_adapters: Vec::new(),
            waiting_adapters: Vec::new(),
            max_lora: None,
            cache: None,
            scraped_at: Instant::now(),
        }
    }

    /// How old these metrics are at `now` (zero if `now` is earlier than the scrape).
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.scraped_at)
    }

    /// Whether the pod is serving or loading `adapter`.
    pub fn has_adapter(&self, adapter: &str) -> bool {
        self.running_adapters
            .iter()
            .chain(&self.waiting_adapters)
            .any(|a| &**a == adapter)
    }
}

/// KV-cache geometry from `vllm:cache_config_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheGeometry {
    /// `num_gpu_blocks`.
    pub num_gpu_blocks: u64,
    /// `block_size`, in tokens.
    pub block_size: u64,
}

impl CacheGeometry {
    /// Tokens the pod's KV cache holds.
    pub fn tokens(&self) -> u64 {
        self.num_gpu_blocks.saturating_mul(self.block_size)
    }
}
