//! The prefix index shared by every worker thread: for each pod, the block hashes we routed to
//! it, bounded per pod.
//!
//! Concurrency: the pod map is an immutable snapshot swapped on membership change (readers take
//! no lock); each pod's set has its own read-write lock, held for one request's lookups or one
//! route's inserts and never across anything else. Threads deciding for different pods never
//! meet; readers of the same pod share its lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::{ArcSwap, Guard};
use serde::Deserialize;

use super::blocks::BlockHasher;
use super::lru::BlockLru;
use crate::config::ConfigError;
use crate::pod::PodView;

/// The `prefix_index` section of the scheduler config.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefixConfig {
    /// Block size in characters (bytes of the UTF-8 prompt text).
    pub block_size: usize,
    /// Blocks hashed per request at most; the rest of a long prompt is not indexed.
    pub max_blocks: usize,
    /// Blocks remembered per pod when the pod's KV-cache size is unknown.
    pub capacity_per_pod: usize,
    /// Upper bound on a pod's capacity derived from its KV-cache size, so a misreporting pod
    /// cannot make the index grow without bound.
    pub max_capacity_per_pod: usize,
    /// Characters per token, to turn a pod's KV-cache size in tokens into blocks.
    pub chars_per_token: f64,
}

impl Default for PrefixConfig {
    fn default() -> Self {
        PrefixConfig {
            block_size: 64,
            max_blocks: 256,
            capacity_per_pod: 31_250,
            max_capacity_per_pod: 1_000_000,
            chars_per_token: 4.0,
        }
    }
}

impl PrefixConfig {
    /// Checks the values; errors name the field relative to this section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let within = |name: &str, value: usize, max: usize| {
            if (1..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::new(
                    name,
                    format!("must be between 1 and {max}"),
                ))
            }
        };
        // A block larger than a big prompt never matches; more blocks than this per request
        // cost hashing time without changing any decision.
        within("block_size", self.block_size, 1 << 20)?;
        within("max_blocks", self.max_blocks, 1 << 16)?;
        // Slots are numbered with 32 bits.
        within(
            "capacity_per_pod",
            self.capacity_per_pod,
            u32::MAX as usize - 1,
        )?;
        within(
            "max_capacity_per_pod",
            self.max_capacity_per_pod,
            u32::MAX as usize - 1,
        )?;
        if !(self.chars_per_token.is_finite() && self.chars_per_token > 0.0) {
            return Err(ConfigError::new("chars_per_token", "must be a number > 0"));
        }
        Ok(())
    }

    pub fn hasher(&self) -> BlockHasher {
        BlockHasher {
            block_size: self.block_size,
            max_blocks: self.max_blocks,
        }
    }

    /// Blocks the index should keep for `pod` according to its KV-cache size, when known: its
    /// cache in tokens converted to blocks, at most `max_capacity_per_pod`.
    pub fn derived_capacity(&self, pod: &PodView<'_>) -> Option<usize> {
        let cache = pod.metrics?.cache?;
        (cache.tokens() > 0).then(|| {
            let chars = cache.tokens() as f64 * self.chars_per_token;
            let blocks = (chars / self.block_size as f64).ceil();
            (blocks.min(self.max_capacity_per_pod as f64) as usize).max(1)
        })
    }
}

type PodSets = HashMap<Box<str>, Arc<RwLock<BlockLru>>, foldhash::fast::RandomState>;

/// Block hash → pods that probably hold it.
pub struct PrefixIndex {
    config: PrefixConfig,
    pods: ArcSwap<PodSets>,
    /// Serialises membership changes (copy-on-write of the pod map); never taken by lookups.
    membership: Mutex<()>,
}

/// The pod map as of one moment, for one request's lookups.
pub struct IndexSnapshot(Guard<Arc<PodSets>>);

impl IndexSnapshot {
    /// How many of `blocks`' leading blocks `address` holds, in a row from the first.
    ///
    /// A binary search, a handful of probes instead of one per block: what a pod holds of one
    /// chain is always a leading run. A block's hash covers every block before it, so whoever
    /// recorded block `j` recorded blocks `0..j` in the same call, touching them after `j`;
    /// they are therefore at least as recent as `j` and the LRU evicts `j` first.
    pub fn matched_blocks(&self, address: &str, blocks: &[u64]) -> usize {
        let Some(set) = self.0.get(address) else {
            return 0;
        };
        let set = set.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Most pods hold none of a given prompt: one probe settles that.
        match blocks.first() {
            Some(&first) if set.contains(first) => {
                1 + blocks[1..].partition_point(|&hash| set.contains(hash))
            }
            _ => 0,
        }
    }
}

impl PrefixIndex {
    pub fn new(config: PrefixConfig) -> Self {
        PrefixIndex {
            config,
            pods: ArcSwap::default(),
            membership: Mutex::new(()),
        }
    }

    pub fn config(&self) -> &PrefixConfig {
        &self.config
    }

    pub fn snapshot(&self) -> IndexSnapshot {
        IndexSnapshot(self.pods.load())
    }

    /// Records that a request with `blocks` was routed to `pod`: the pod now holds them.
    /// Blocks are touched last to first, so a prompt's leading blocks, the ones other requests
    /// share, are the last to be evicted (as vLLM frees a sequence's tail blocks first).
    pub fn record(&self, pod: &PodView<'_>, blocks: &[u64]) {
        if blocks.is_empty() {
            return;
        }
        let derived = self.config.derived_capacity(pod);
        let set = self.pod_set(pod.address, derived.unwrap_or(self.config.capacity_per_pod));
        let mut set = set.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A pod whose metrics are momentarily missing keeps the capacity it had: resizing
        // back and forth would rebuild its set under the lock.
        if let Some(capacity) = derived {
            set.set_capacity(capacity);
        }
        set.touch_all(blocks.iter().rev().copied());
    }

    /// Drops everything recorded for `address` (the pod left the pool).
    pub fn forget(&self, address: &str) {
        let _guard = self
            .membership
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.pods.load().contains_key(address) {
            let mut pods = PodSets::clone(&self.pods.load());
            pods.remove(address);
            self.pods.store(Arc::new(pods));
        }
    }

    /// Keeps only the pods `keep` accepts: the caller's periodic reconciliation with pool
    /// membership, which also catches a route recorded for a pod while it was being forgotten.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        let _guard = self
            .membership
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.pods.load();
        if current.keys().all(|address| keep(address)) {
            return;
        }
        let mut pods = PodSets::clone(&current);
        pods.retain(|address, _| keep(address));
        self.pods.store(Arc::new(pods));
    }

    /// Bytes the index uses now (all pods' sets and the pod map).
    pub fn bytes(&self) -> usize {
        let pods = self.pods.load();
        let map = pods.capacity() * std::mem::size_of::<(Box<str>, Arc<RwLock<BlockLru>>)>();
        pods.iter()
            .map(|(address, set)| {
                address.len() + std::mem::size_of::<RwLock<BlockLru>>() + read(set).bytes()
                    - std::mem::size_of::<BlockLru>()
            })
            .sum::<usize>()
            + map
            + std::mem::size_of::<Self>()
    }

    /// Block entries held, summed over pods.
    pub fn blocks(&self) -> usize {
        self.pods.load().values().map(|set| read(set).len()).sum()
    }

    /// Pods with entries.
    pub fn pods(&self) -> usize {
        self.pods.load().len()
    }

    fn pod_set(&self, address: &str, capacity: usize) -> Arc<RwLock<BlockLru>> {
        if let Some(set) = self.pods.load().get(address) {
            return Arc::clone(set);
        }
        let _guard = self
            .membership
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.pods.load();
        if let Some(set) = current.get(address) {
            return Arc::clone(set);
        }
        let set = Arc::new(RwLock::new(BlockLru::new(capacity)));
        let mut pods = PodSets::clone(&current);
        pods.insert(address.into(), Arc::clone(&set));
        self.pods.store(Arc::new(pods));
        set
    }
}

fn read(set: &RwLock<BlockLru>) -> std::sync::RwLockReadGuard<'_, BlockLru> {
    set.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::{CacheGeometry, PodMetrics};

    fn index(capacity: usize) -> PrefixIndex {
        PrefixIndex::new(PrefixConfig {
            capacity_per_pod: capacity,
            ..PrefixConfig::default()
        })
    }

    #[test]
    fn matched_blocks_is_the_leading_run() {
        let index = index(100);
        let pod = PodView::new("10.0.0.1:8000");
        index.record(&pod, &[1, 2, 3]);
        let snap = index.snapshot();
        assert_eq!(snap.matched_blocks(pod.address, &[1, 2, 3, 4]), 3);
        assert_eq!(snap.matched_blocks(pod.address, &[1, 2, 9, 9, 9]), 2);
        assert_eq!(snap.matched_blocks(pod.address, &[9, 9, 9]), 0);
        assert_eq!(snap.matched_blocks(pod.address, &[]), 0);
        assert_eq!(snap.matched_blocks("10.0.0.2:8000", &[1, 2, 3]), 0);
    }

    #[test]
    fn held_blocks_of_a_chain_stay_a_leading_run_under_eviction() {
        // Many prompts sharing prefixes of varied length, through a small LRU: for every
        // prompt seen so far, the blocks held must be exactly a leading run (what the binary
        // search assumes), and the search must count them all.
        let config = PrefixConfig {
            block_size: 4,
            capacity_per_pod: 50,
            ..PrefixConfig::default()
        };
        let hasher = config.hasher();
        let index = PrefixIndex::new(config);
        let pod = PodView::new("p");
        let prompts: Vec<String> = (0..200)
            .map(|i| {
                format!(
                    "{}{}",
                    "shared--".repeat(i % 7),
                    "x".repeat(4 * (i % 5) + i)
                )
            })
            .collect();
        let mut evicted_some = false;
        for (n, text) in prompts.iter().enumerate() {
            index.record(&pod, &hasher.hash_text("m", text).hashes);
            let snap = index.snapshot();
            for earlier in &prompts[..=n] {
                let blocks = hasher.hash_text("m", earlier).hashes;
                let held = match snap.0.get("p") {
                    None => 0,
                    Some(set) => {
                        let set = read(set);
                        let run = blocks.iter().take_while(|&&h| set.contains(h)).count();
                        let held = blocks.iter().filter(|&&h| set.contains(h)).count();
                        assert_eq!(
                            run, held,
                            "held blocks of {earlier:?} are not a leading run"
                        );
                        held
                    }
                };
                evicted_some |= held < blocks.len();
                assert_eq!(snap.matched_blocks("p", &blocks), held);
            }
        }
        assert!(evicted_some, "the test must exercise eviction");
    }

    #[test]
    fn per_pod_capacity_evicts_tails_first() {
        let index = index(4);
        let pod = PodView::new("p");
        index.record(&pod, &[1, 2, 3]);
        index.record(&pod, &[10, 11, 12]);
        // Capacity 4: of the first request only its first block (touched last) survives.
        let snap = index.snapshot();
        assert_eq!(snap.matched_blocks("p", &[10, 11, 12]), 3);
        assert_eq!(snap.matched_blocks("p", &[1, 2, 3]), 1);
        assert_eq!(index.blocks(), 4);
    }

    #[test]
    fn capacity_follows_the_pods_kv_cache_when_known() {
        let config = PrefixConfig::default();
        let mut metrics = PodMetrics::idle();
        metrics.cache = Some(CacheGeometry {
            num_gpu_blocks: 1000,
            block_size: 16,
        });
        let pod = PodView {
            metrics: Some(&metrics),
            ..PodView::new("p")
        };
        // 16,000 tokens × 4 chars / 64 chars per block.
        assert_eq!(config.derived_capacity(&pod), Some(1000));
        assert_eq!(config.derived_capacity(&PodView::new("p")), None);

        let index = PrefixIndex::new(PrefixConfig {
            block_size: 4,
            chars_per_token: 1.0,
            ..config
        });
        metrics.cache = Some(CacheGeometry {
            num_gpu_blocks: 2,
            block_size: 4,
        }); // 2 blocks
        let pod = PodView {
            metrics: Some(&metrics),
            ..PodView::new("p")
        };
        index.record(&pod, &[1, 2, 3, 4, 5]);
        assert_eq!(index.blocks(), 2);
        // Metrics gone for a moment: the pod keeps its derived capacity.
        index.record(&PodView::new("p"), &[6, 7, 8, 9]);
        assert_eq!(index.blocks(), 2);
        // A pod never sized by metrics gets the default.
        index.record(&PodView::new("q"), &[1, 2, 3, 4, 5]);
        assert_eq!(index.blocks(), 2 + 5);
    }

    #[test]
    fn forgetting_a_pod_drops_its_entries_and_memory() {
        let index = index(1000);
        let (a, b) = (PodView::new("a"), PodView::new("b"));
        index.record(&a, &(0..500).collect::<Vec<_>>());
        index.record(&b, &(0..500).collect::<Vec<_>>());
        let before = index.bytes();
        index.forget("a");
        assert_eq!(index.snapshot().matched_blocks("a", &[0]), 0);
        assert_eq!(index.snapshot().matched_blocks("b", &[0]), 1);
        assert_eq!(index.pods(), 1);
        assert!(index.bytes() < before);
        index.forget("unknown"); // no-op
    }

    #[test]
    fn retain_keeps_only_current_members() {
        let index = index(1000);
        for address in ["a", "b", "c"] {
            index.record(&PodView::new(address), &[1, 2]);
        }
        index.retain(|address| address != "b");
        assert_eq!(index.pods(), 2);
        assert_eq!(index.snapshot().matched_blocks("b", &[1, 2]), 0);
        assert_eq!(index.snapshot().matched_blocks("c", &[1, 2]), 2);
    }

    #[test]
    fn derived_capacity_is_capped() {
        let config = PrefixConfig {
            max_capacity_per_pod: 5000,
            ..PrefixConfig::default()
        };
        let mut metrics = PodMetrics::idle();
        metrics.cache = Some(CacheGeometry {
            num_gpu_blocks: u64::MAX,
            block_size: 16,
        });
        let pod = PodView {
            metrics: Some(&metrics),
            ..PodView::new("p")
        };
        assert_eq!(config.derived_capacity(&pod), Some(5000));
    }

    #[test]
    fn memory_is_bounded_by_capacity() {
        let index = index(1000);
        let pod = PodView::new("p");
        for round in 0..100u64 {
            let blocks: Vec<u64> = (0..256).map(|i| round * 1000 + i).collect();
            index.record(&pod, &blocks);
        }
        assert_eq!(index.blocks(), 1000);
        assert!(index.bytes() < 1000 * 40, "{} bytes", index.bytes());
    }

    #[test]
    fn concurrent_routes_and_lookups_stay_consistent() {
        // Large enough that nothing is evicted: every insert must be found afterwards.
        let index = Arc::new(index(100_000));
        let pods: Vec<String> = (0..8).map(|i| format!("10.0.0.{i}:8000")).collect();
        std::thread::scope(|scope| {
            for t in 0..8u64 {
                let index = &index;
                let pods = &pods;
                scope.spawn(move || {
                    for i in 0..2000u64 {
                        let pod = PodView::new(&pods[((t + i) % 8) as usize]);
                        let blocks: Vec<u64> = (0..32).map(|b| (t << 40) | (i << 8) | b).collect();
                        index.record(&pod, &blocks);
                        let snap = index.snapshot();
                        // What this thread just recorded is there in full, whatever the
                        // other threads did to the same pod meanwhile.
                        assert_eq!(snap.matched_blocks(pod.address, &blocks), 32);
                    }
                });
            }
        });
        assert_eq!(index.pods(), 8);
        assert_eq!(index.blocks(), 8 * 2000 * 32, "an insert was lost");
    }
}
