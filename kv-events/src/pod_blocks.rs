//! One pod's cached blocks as its events describe them.
//!
//! Two tables: the engine's block hash → our key (removals name only the engine's hash), and
//! our key → how many engine blocks hold it (what lookups read). Keys are
//! `scheduler::prefix::token_blocks` keys: a stored block's key chains from its parent's key,
//! found through the parent's engine hash. A block whose parent we never saw (we joined after it
//! was stored, or it was dropped) gets no key: it could not be matched from a request anyway.
//!
//! Memory is bounded by a cap per pod: past it the oldest stored block is forgotten (the index
//! then under-reports that pod, which only costs a missed hit). Both tables hash with a
//! per-process random key, since a client picks the tokens and so, in effect, the keys.

use std::collections::VecDeque;

use foldhash::fast::RandomState;
use hashbrown::HashMap;
use scheduler::prefix::token_blocks::block_key;

#[derive(Clone, Copy)]
struct Entry {
    key: u64,
    /// Engine blocks with this hash (vLLM may hold the same prefix twice, and then stores and
    /// removes it twice).
    refs: u32,
    /// Which `order` slot is this entry's; older slots for the same hash are stale.
    stamp: u32,
}

pub struct PodBlocks {
    by_engine_hash: HashMap<u64, Entry, RandomState>,
    keys: HashMap<u64, u32, RandomState>,
    /// Engine hashes in the order they were stored, for the cap; stale slots are skipped.
    order: VecDeque<(u64, u32)>,
    next_stamp: u32,
    cap: usize,
    /// Blocks forgotten to stay under the cap.
    pub evicted_for_cap: u64,
    /// Stored blocks ignored because their parent was unknown.
    pub orphans: u64,
}

impl PodBlocks {
    pub fn new(cap: usize) -> Self {
        PodBlocks {
            by_engine_hash: HashMap::default(),
            keys: HashMap::default(),
            order: VecDeque::new(),
            next_stamp: 0,
            cap: cap.max(1),
            evicted_for_cap: 0,
            orphans: 0,
        }
    }

    /// Engine blocks held.
    pub fn len(&self) -> usize {
        self.by_engine_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_engine_hash.is_empty()
    }

    /// How many of `keys`' leading keys this pod holds, in a row from the first.
    pub fn matched(&self, keys: &[u64]) -> usize {
        keys.iter()
            .take_while(|key| self.keys.contains_key(*key))
            .count()
    }

    /// Records consecutive blocks `engine_hashes` (with `tokens`, `block_size` per block)
    /// following the block `parent` (`None`: the first blocks of a sequence, chained from
    /// `seed`).
    pub fn store(
        &mut self,
        parent: Option<u64>,
        engine_hashes: &[u64],
        tokens: &[u32],
        block_size: usize,
        seed: u64,
    ) {
        let mut parent_key = match parent {
            None => seed,
            Some(parent) => match self.by_engine_hash.get(&parent) {
                Some(entry) => entry.key,
                None => {
                    self.orphans += engine_hashes.len() as u64;
                    return;
                }
            },
        };
        for (&engine_hash, block) in engine_hashes.iter().zip(tokens.chunks_exact(block_size)) {
            parent_key = block_key(parent_key, block);
            self.insert(engine_hash, parent_key);
        }
    }

    fn insert(&mut self, engine_hash: u64, key: u64) {
        if let Some(entry) = self.by_engine_hash.get_mut(&engine_hash) {
            entry.refs += 1;
            return;
        }
        let stamp = self.next_stamp;
        self.next_stamp = self.next_stamp.wrapping_add(1);
        self.by_engine_hash.insert(
            engine_hash,
            Entry {
                key,
                refs: 1,
                stamp,
            },
        );
        *self.keys.entry(key).or_insert(0) += 1;
        self.order.push_back((engine_hash, stamp));
        while self.by_engine_hash.len() > self.cap {
            let Some((oldest, stamp)) = self.order.pop_front() else {
                break;
            };
            if self
                .by_engine_hash
                .get(&oldest)
                .is_some_and(|e| e.stamp == stamp)
            {
                self.forget(oldest);
                self.evicted_for_cap += 1;
            }
        }
        // Removals leave stale slots behind; drop them before they outnumber live ones.
        if self.order.len() > 2 * self.by_engine_hash.len() + 64 {
            let live = &self.by_engine_hash;
            self.order
                .retain(|(hash, stamp)| live.get(hash).is_some_and(|e| e.stamp == *stamp));
        }
    }

    /// One engine block with this hash was evicted.
    pub fn remove(&mut self, engine_hash: u64) {
        match self.by_engine_hash.get_mut(&engine_hash) {
            Some(entry) if entry.refs > 1 => entry.refs -= 1,
            Some(_) => self.forget(engine_hash),
            None => {}
        }
    }

    fn forget(&mut self, engine_hash: u64) {
        let Some(entry) = self.by_engine_hash.remove(&engine_hash) else {
            return;
        };
        if let hashbrown::hash_map::EntryRef::Occupied(mut holders) =
            self.keys.entry_ref(&entry.key)
        {
            *holders.get_mut() -= 1;
            if *holders.get() == 0 {
                holders.remove();
            }
        }
    }

    pub fn clear(&mut self) {
        self.by_engine_hash = HashMap::default();
        self.keys = HashMap::default();
        self.order = VecDeque::new();
    }

    /// Heap and inline bytes used now.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.by_engine_hash.allocation_size()
            + self.keys.allocation_size()
            + self.order.capacity() * std::mem::size_of::<(u64, u32)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scheduler::prefix::token_blocks::{chain_seed, token_block_keys};

    const SEED: u64 = 1;

    fn keys(tokens: &[u32]) -> Vec<u64> {
        let mut out = Vec::new();
        token_block_keys(SEED, tokens, 2, &mut out);
        out
    }

    #[test]
    fn stored_blocks_chain_through_their_parents_engine_hash() {
        let mut pod = PodBlocks::new(100);
        let tokens = [1, 2, 3, 4, 5, 6];
        pod.store(None, &[10], &tokens[..2], 2, SEED);
        pod.store(Some(10), &[11, 12], &tokens[2..], 2, SEED);
        assert_eq!(pod.matched(&keys(&tokens)), 3);
        assert_eq!(pod.matched(&keys(&[1, 2, 9, 9])), 1);
        assert_eq!(pod.matched(&keys(&[9, 9])), 0);
        pod.store(Some(99), &[13], &[7, 8], 2, SEED);
        assert_eq!(pod.orphans, 1, "unknown parent");
        pod.remove(11);
        assert_eq!(
            pod.matched(&keys(&tokens)),
            1,
            "a removed block breaks the run"
        );
        assert_eq!(pod.len(), 2);
        assert_ne!(chain_seed(None), SEED);
    }

    #[test]
    fn a_block_held_twice_needs_two_removals() {
        let mut pod = PodBlocks::new(100);
        pod.store(None, &[10], &[1, 2], 2, SEED);
        pod.store(None, &[10], &[1, 2], 2, SEED);
        pod.remove(10);
        assert_eq!(pod.matched(&keys(&[1, 2])), 1);
        pod.remove(10);
        assert_eq!(pod.matched(&keys(&[1, 2])), 0);
        assert!(pod.is_empty());
    }

    #[test]
    fn the_cap_forgets_the_oldest_and_stale_slots_are_compacted() {
        let mut pod = PodBlocks::new(4);
        for i in 0..10u32 {
            pod.store(None, &[u64::from(i)], &[i, i], 2, SEED);
        }
        assert_eq!(pod.len(), 4);
        assert_eq!(pod.evicted_for_cap, 6);
        assert_eq!(pod.matched(&keys(&[0, 0])), 0);
        assert_eq!(pod.matched(&keys(&[9, 9])), 1);
        // Churn: store and remove many times; the order queue must not grow with it.
        for i in 100..10_000u32 {
            pod.store(None, &[u64::from(i)], &[i, i], 2, SEED);
            pod.remove(u64::from(i));
        }
        assert!(pod.order.len() <= 2 * pod.len() + 65, "{}", pod.order.len());
        pod.clear();
        assert!(pod.is_empty() && pod.matched(&keys(&[9, 9])) == 0);
    }
}
