//! The KV cache of one pod, as vLLM's automatic prefix caching manages it: a fixed pool of
//! blocks; a block that is full gets a hash chained from its predecessor's, so equal hashes mean
//! equal prefixes; blocks nobody uses stay cached until the least recently freed is evicted.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash, Hasher};

use lru::LruCache;

pub type BlockId = u32;
pub type BlockHash = u64;

/// Hash of a full block: its tokens, the hash of the block before it (0 for the first) and the
/// LoRA adapter (adapters change the KV values, so their blocks never match the base model's).
pub fn block_hash(parent: BlockHash, tokens: &[u32], adapter: Option<usize>) -> BlockHash {
    let mut hasher = BuildHasherDefault::<DefaultHasher>::default().build_hasher();
    parent.hash(&mut hasher);
    tokens.hash(&mut hasher);
    adapter.hash(&mut hasher);
    hasher.finish()
}

/// Appends the chained hashes of the full blocks of `tokens` that `hashes` does not hold yet.
pub fn extend_block_hashes(
    hashes: &mut Vec<BlockHash>,
    tokens: &[u32],
    block_size: usize,
    adapter: Option<usize>,
) {
    for block in tokens.chunks_exact(block_size).skip(hashes.len()) {
        let parent = hashes.last().copied().unwrap_or(0);
        hashes.push(block_hash(parent, block, adapter));
    }
}

#[derive(Clone, Copy, Default)]
struct Block {
    ref_count: u32,
    hash: Option<BlockHash>,
}

/// A change to the set of cached prefixes that a new block does not announce itself: what the
/// pod's KV-event stream reports besides stored blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheChange {
    /// The block with this hash was evicted to make room.
    Removed(BlockHash),
    /// Every cached prefix was forgotten (reset).
    Cleared,
}

pub struct KvCache {
    blocks: Vec<Block>,
    /// Evictions and clears since the engine last took them; `None` when nobody listens, so a
    /// pod without a KV-event stream records nothing.
    changes: Option<Vec<CacheChange>>,
    /// Full blocks by content hash, whether in use or free.
    cached: HashMap<BlockHash, BlockId>,
    /// Blocks nobody references, least recently freed first: allocation evicts from the front.
    free: LruCache<BlockId, ()>,
}

impl KvCache {
    #[cfg(test)]
    pub fn new(num_blocks: usize) -> Self {
        Self::with_change_log(num_blocks, false)
    }

    /// A cache that records evictions and clears for `take_changes` when `record` is set.
    pub fn with_change_log(num_blocks: usize, record: bool) -> Self {
        let mut free = LruCache::unbounded();
        for id in 0..num_blocks as BlockId {
            free.put(id, ());
        }
        Self {
            blocks: vec![Block::default(); num_blocks],
            cached: HashMap::new(),
            free,
            changes: record.then(Vec::new),
        }
    }

    /// Moves the changes recorded since the last call to the end of `out`.
    pub fn take_changes(&mut self, out: &mut Vec<CacheChange>) {
        if let Some(changes) = &mut self.changes {
            out.append(changes);
        }
    }

    /// Blocks referenced by at least one sequence.
    pub fn used_blocks(&self) -> usize {
        self.blocks.len() - self.free.len()
    }

    /// Fraction of blocks in use, as vLLM's `kv_cache_usage_perc` reports it (0..=1).
    pub fn usage(&self) -> f64 {
        self.used_blocks() as f64 / self.blocks.len().max(1) as f64
    }

    /// How many leading blocks of a sequence with these block hashes are cached.
    pub fn cached_prefix_len(&self, hashes: &[BlockHash]) -> usize {
        hashes
            .iter()
            .take_while(|hash| self.cached.contains_key(hash))
            .count()
    }

    /// Whether `new_blocks` fresh blocks can be allocated after taking the cached blocks of
    /// `hits` (which leave the free pool if nobody else holds them).
    pub fn can_allocate(&self, hits: &[BlockHash], new_blocks: usize) -> bool {
        let hits_in_free_pool = hits
            .iter()
            .filter(|hash| self.blocks[self.cached[*hash] as usize].ref_count == 0)
            .count();
        self.free.len() - hits_in_free_pool >= new_blocks
    }

    /// Takes a reference on the cached blocks `hits` and appends them to `table`.
    pub fn acquire_cached(&mut self, hits: &[BlockHash], table: &mut Vec<BlockId>) {
        for hash in hits {
            let id = self.cached[hash];
            self.take(id);
            table.push(id);
        }
    }

    /// Appends `count` fresh blocks to `table`, evicting the least recently freed cached blocks.
    /// Returns false (allocating nothing) if the pool is too small.
    pub fn allocate(&mut self, count: usize, table: &mut Vec<BlockId>) -> bool {
        if self.free.len() < count {
            return false;
        }
        for _ in 0..count {
            let (id, ()) = self.free.pop_lru().expect("free pool holds count blocks");
            let block = &mut self.blocks[id as usize];
            if let Some(hash) = block.hash.take() {
                if self.cached.get(&hash) == Some(&id) {
                    self.cached.remove(&hash);
                    if let Some(changes) = &mut self.changes {
                        changes.push(CacheChange::Removed(hash));
                    }
                }
            }
            block.ref_count = 1;
            table.push(id);
        }
        true
    }

    /// Records that block `id` is full and holds the prefix with this hash. True if the prefix
    /// was not cached before (another block may already hold the same prefix: then the cache
    /// keeps the first, and nothing new is stored).
    pub fn register(&mut self, id: BlockId, hash: BlockHash) -> bool {
        let block = &mut self.blocks[id as usize];
        if block.hash.is_some() {
            return false;
        }
        block.hash = Some(hash);
        match self.cached.entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(id);
                true
            }
        }
    }

    /// Drops a sequence's references. Its last blocks become the first to be evicted, since a
    /// later request is more likely to share the beginning of a prompt than its end.
    pub fn release(&mut self, table: &[BlockId]) {
        for &id in table.iter().rev() {
            let block = &mut self.blocks[id as usize];
            block.ref_count -= 1;
            if block.ref_count == 0 {
                self.free.put(id, ());
            }
        }
    }

    /// Forgets every cached prefix. Only blocks nobody references can be forgotten; callers
    /// release all sequences first for a full reset.
    pub fn clear_cached(&mut self) {
        self.cached
            .retain(|_, id| self.blocks[*id as usize].ref_count > 0);
        for (id, ()) in self.free.iter() {
            self.blocks[*id as usize].hash = None;
        }
        if let Some(changes) = &mut self.changes {
            changes.push(CacheChange::Cleared);
        }
    }

    fn take(&mut self, id: BlockId) {
        let block = &mut self.blocks[id as usize];
        if block.ref_count == 0 {
            self.free.pop(&id);
        }
        block.ref_count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(tokens: &[u32]) -> Vec<BlockHash> {
        let mut out = Vec::new();
        extend_block_hashes(&mut out, tokens, 4, None);
        out
    }

    /// Allocates and fills a sequence, as the engine does after its prefill.
    fn store(cache: &mut KvCache, tokens: &[u32]) -> Vec<BlockId> {
        let hashes = hashes(tokens);
        let hits = cache.cached_prefix_len(&hashes);
        let mut table = Vec::new();
        cache.acquire_cached(&hashes[..hits], &mut table);
        assert!(cache.allocate(tokens.len().div_ceil(4) - hits, &mut table));
        for (id, hash) in table.iter().zip(&hashes) {
            cache.register(*id, *hash);
        }
        table
    }

    #[test]
    fn hashes_chain_so_only_equal_prefixes_match() {
        let a = hashes(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let b = hashes(&[9, 9, 9, 9, 5, 6, 7, 8]);
        assert_eq!(a.len(), 2);
        assert_ne!(
            a[1], b[1],
            "same second block after a different first block"
        );
        assert_eq!(
            hashes(&[1, 2, 3, 4, 5, 6, 7]).len(),
            1,
            "partial blocks are not hashed"
        );
        let mut lora = Vec::new();
        extend_block_hashes(&mut lora, &[1, 2, 3, 4], 4, Some(0));
        assert_ne!(
            lora[0], a[0],
            "an adapter's blocks differ from the base model's"
        );
    }

    #[test]
    fn a_released_prefix_stays_cached_and_is_reused() {
        let mut cache = KvCache::new(8);
        let tokens: Vec<u32> = (0..12).collect();
        let table = store(&mut cache, &tokens);
        assert_eq!(cache.used_blocks(), 3);
        cache.release(&table);
        assert_eq!(cache.used_blocks(), 0);
        assert_eq!(cache.cached_prefix_len(&hashes(&tokens)), 3);
        let again = store(&mut cache, &tokens);
        assert_eq!(again, table, "the same blocks serve the same prefix");
    }

    #[test]
    fn eviction_takes_the_least_recently_freed_block_first() {
        let mut cache = KvCache::new(4);
        let old: Vec<u32> = (0..4).collect();
        let newer: Vec<u32> = (100..104).collect();
        let table = store(&mut cache, &old);
        cache.release(&table);
        let table = store(&mut cache, &newer);
        cache.release(&table);
        // Two fresh blocks are still free; a third allocation must evict, and `old` goes first.
        let mut scratch = Vec::new();
        assert!(cache.allocate(3, &mut scratch));
        assert_eq!(cache.cached_prefix_len(&hashes(&old)), 0);
        assert_eq!(cache.cached_prefix_len(&hashes(&newer)), 1);
        // Touching a cached block protects it: reuse `newer`, free everything, evict one.
        cache.release(&scratch);
        let table = store(&mut cache, &newer);
        cache.release(&table);
        assert!(cache.allocate(3, &mut scratch));
        assert_eq!(
            cache.cached_prefix_len(&hashes(&newer)),
            1,
            "most recently used survives"
        );
    }

    #[test]
    fn a_sequence_tail_is_evicted_before_its_head() {
        let mut cache = KvCache::new(2);
        let tokens: Vec<u32> = (0..8).collect();
        let table = store(&mut cache, &tokens);
        cache.release(&table);
        let mut scratch = Vec::new();
        assert!(cache.allocate(1, &mut scratch));
        assert_eq!(
            cache.cached_prefix_len(&hashes(&tokens)),
            1,
            "the head block survives"
        );
    }

    #[test]
    fn allocation_fails_whole_when_the_pool_is_short() {
        let mut cache = KvCache::new(3);
        let mut table = Vec::new();
        assert!(!cache.allocate(4, &mut table));
        assert!(table.is_empty());
        assert!(cache.allocate(3, &mut table));
        assert!((cache.usage() - 1.0).abs() < 1e-9);
        assert!(!cache.can_allocate(&[], 1));
    }

    #[test]
    fn evictions_and_clears_are_recorded_only_when_asked() {
        let tokens: Vec<u32> = (0..8).collect();
        let mut silent = KvCache::new(2);
        let table = store(&mut silent, &tokens);
        silent.release(&table);
        let mut scratch = Vec::new();
        assert!(silent.allocate(2, &mut scratch));
        let mut changes = Vec::new();
        silent.take_changes(&mut changes);
        assert!(changes.is_empty());

        let mut cache = KvCache::with_change_log(2, true);
        let table = store(&mut cache, &tokens);
        assert!(
            !cache.register(table[0], hashes(&tokens)[0]),
            "already registered"
        );
        cache.release(&table);
        let mut scratch = Vec::new();
        assert!(cache.allocate(1, &mut scratch));
        cache.release(&scratch);
        cache.clear_cached();
        cache.take_changes(&mut changes);
        let h = hashes(&tokens);
        assert_eq!(changes, [CacheChange::Removed(h[1]), CacheChange::Cleared]);
        cache.take_changes(&mut changes);
        assert_eq!(changes.len(), 2, "taken changes are gone");
    }

    #[test]
    fn clear_forgets_free_prefixes_only() {
        let mut cache = KvCache::new(8);
        let kept: Vec<u32> = (0..4).collect();
        let dropped: Vec<u32> = (10..14).collect();
        let _in_use = store(&mut cache, &kept);
        let table = store(&mut cache, &dropped);
        cache.release(&table);
        cache.clear_cached();
        assert_eq!(cache.cached_prefix_len(&hashes(&kept)), 1);
        assert_eq!(cache.cached_prefix_len(&hashes(&dropped)), 0);
    }
}
