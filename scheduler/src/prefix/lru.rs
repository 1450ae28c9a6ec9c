//! One pod's set of block hashes with least-recently-used eviction, laid out for memory: a slab
//! of 16-byte slots threaded on an intrusive recency list, and a hash table of 4-byte slot
//! numbers. General LRU crates spend 50+ bytes an entry (boxed nodes, pointer-sized links);
//! this spends about 26, which is what keeps the index within its memory target.

use std::hash::BuildHasher;

use hashbrown::HashTable;

/// End of the recency list.
const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    /// Towards the most recent end.
    newer: u32,
    /// Towards the least recent end.
    older: u32,
}

/// A bounded set of block hashes; inserting into a full set evicts the least recently used.
pub struct BlockLru {
    /// Slot numbers, found by their block hash.
    table: HashTable<u32>,
    slots: Vec<Slot>,
    newest: u32,
    oldest: u32,
    capacity: usize,
    /// Block hashes come from a public, fixed-seed hash, so a client could craft prompts whose
    /// hashes collide in the table's low bits; re-hashing with a per-process random key keeps
    /// lookups constant-time.
    keyed: foldhash::fast::RandomState,
}

impl BlockLru {
    /// An empty set holding at most `capacity` (at least 1) hashes. Memory grows with use.
    pub fn new(capacity: usize) -> Self {
        BlockLru {
            table: HashTable::new(),
            slots: Vec::new(),
            newest: NIL,
            oldest: NIL,
            capacity: capacity.clamp(1, NIL as usize - 1),
            keyed: foldhash::fast::RandomState::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Heap and inline bytes this set uses now.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.table.allocation_size()
            + self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    pub fn contains(&self, hash: u64) -> bool {
        self.find(hash).is_some()
    }

    /// Block hashes from most to least recently used.
    pub fn iter_recent(&self) -> impl Iterator<Item = u64> + '_ {
        let mut at = self.newest;
        std::iter::from_fn(move || {
            (at != NIL).then(|| {
                let slot = self.slots[at as usize];
                at = slot.older;
                slot.hash
            })
        })
    }

    fn find(&self, hash: u64) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(self.keyed.hash_one(hash), |&s| {
                slots[s as usize].hash == hash
            })
            .copied()
    }

    /// Touches each of `hashes` in order, as [`BlockLru::touch`] would one by one.
    ///
    /// Faster for a request's worth of blocks: the hash-table probes of a batch are made first,
    /// independently of each other, so the CPU overlaps their cache misses; the relinking that
    /// follows finds the slots already in cache.
    pub fn touch_all(&mut self, hashes: impl Iterator<Item = u64>) {
        const BATCH: usize = 32;
        let mut batch = [(0u64, NIL); BATCH];
        let mut hashes = hashes.peekable();
        while hashes.peek().is_some() {
            let mut len = 0;
            for hash in hashes.by_ref().take(BATCH) {
                batch[len] = (hash, self.find(hash).unwrap_or(NIL));
                len += 1;
            }
            for &(hash, slot) in &batch[..len] {
                // An insert earlier in this batch may have evicted and reused the slot found.
                if slot != NIL && self.slots[slot as usize].hash == hash {
                    self.unlink(slot);
                    self.link_newest(slot);
                } else {
                    self.touch(hash);
                }
            }
        }
    }

    /// Marks `hash` most recently used, inserting it (and evicting the least recently used
    /// hash when full) if absent.
    pub fn touch(&mut self, hash: u64) {
        if let Some(slot) = self.find(hash) {
            self.unlink(slot);
            self.link_newest(slot);
            return;
        }
        let slot = if self.table.len() >= self.capacity {
            let victim = self.oldest;
            self.remove_from_table(victim);
            self.unlink(victim);
            self.slots[victim as usize].hash = hash;
            victim
        } else {
            self.grow_slots();
            self.slots.push(Slot {
                hash,
                newer: NIL,
                older: NIL,
            });
            (self.slots.len() - 1) as u32
        };
        self.link_newest(slot);
        let (slots, keyed) = (&self.slots, &self.keyed);
        self.table.insert_unique(keyed.hash_one(hash), slot, |&s| {
            keyed.hash_one(slots[s as usize].hash)
        });
    }

    /// Changes the capacity; shrinking keeps the most recently used hashes.
    pub fn set_capacity(&mut self, capacity: usize) {
        let capacity = capacity.clamp(1, NIL as usize - 1);
        if capacity == self.capacity {
            return;
        }
        if capacity < self.table.len() {
            let keep: Vec<u64> = self.iter_recent().take(capacity).collect();
            *self = BlockLru {
                keyed: self.keyed.clone(),
                ..BlockLru::new(capacity)
            };
            for &hash in keep.iter().rev() {
                self.touch(hash);
            }
        }
        self.capacity = capacity;
    }

    /// Grows the slab geometrically but never past the capacity, so a full set wastes nothing.
    fn grow_slots(&mut self) {
        if self.slots.len() == self.slots.capacity() {
            let more = self
                .slots
                .len()
                .max(64)
                .min(self.capacity - self.slots.len());
            self.slots.reserve_exact(more.max(1));
        }
    }

    fn remove_from_table(&mut self, slot: u32) {
        let hash = self.slots[slot as usize].hash;
        if let Ok(entry) = self
            .table
            .find_entry(self.keyed.hash_one(hash), |&s| s == slot)
        {
            entry.remove();
        }
    }

    fn unlink(&mut self, slot: u32) {
        let Slot { newer, older, .. } = self.slots[slot as usize];
        match newer {
            NIL => self.newest = older,
            n => self.slots[n as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
    }

    fn link_newest(&mut self, slot: u32) {
        let old_newest = self.newest;
        self.slots[slot as usize].newer = NIL;
        self.slots[slot as usize].older = old_newest;
        match old_newest {
            NIL => self.oldest = slot,
            n => self.slots[n as usize].newer = slot,
        }
        self.newest = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut lru = BlockLru::new(3);
        for h in [1, 2, 3] {
            lru.touch(h);
        }
        lru.touch(1); // 2 is now the oldest
        lru.touch(4);
        assert!(!lru.contains(2));
        assert!(lru.contains(1) && lru.contains(3) && lru.contains(4));
        assert_eq!(lru.len(), 3);
        assert_eq!(lru.iter_recent().collect::<Vec<_>>(), [4, 1, 3]);
    }

    #[test]
    fn touching_a_present_hash_does_not_grow_the_set() {
        let mut lru = BlockLru::new(10);
        for _ in 0..5 {
            lru.touch(7);
        }
        assert_eq!(lru.len(), 1);
        assert_eq!(lru.iter_recent().collect::<Vec<_>>(), [7]);
    }

    #[test]
    fn stays_within_capacity_under_churn() {
        let mut lru = BlockLru::new(1000);
        for h in 0..100_000u64 {
            lru.touch(h.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        assert_eq!(lru.len(), 1000);
        assert_eq!(lru.iter_recent().count(), 1000);
        // The last 1000 inserted survive.
        for h in 99_000..100_000u64 {
            assert!(lru.contains(h.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        }
        assert!(lru.slots.capacity() <= 1000);
    }

    #[test]
    fn shrinking_keeps_the_most_recent_and_growing_keeps_all() {
        let mut lru = BlockLru::new(5);
        for h in 1..=5 {
            lru.touch(h);
        }
        lru.set_capacity(2);
        assert_eq!(lru.iter_recent().collect::<Vec<_>>(), [5, 4]);
        lru.set_capacity(10);
        for h in 6..=10 {
            lru.touch(h);
        }
        assert_eq!(lru.len(), 7);
        assert_eq!(lru.capacity(), 10);
    }

    #[test]
    fn memory_per_entry_is_compact_when_full() {
        let mut lru = BlockLru::new(31_250);
        for h in 0..31_250u64 {
            lru.touch(h);
        }
        let per_entry = lru.bytes() as f64 / lru.len() as f64;
        assert!(per_entry < 30.0, "{per_entry} bytes per entry");
    }

    #[test]
    fn touching_a_batch_equals_touching_one_by_one() {
        // Batches that evict blocks found earlier in the same batch, and repeat hashes.
        let mut state = 1u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) % 300
        };
        let (mut one, mut all) = (BlockLru::new(100), BlockLru::new(100));
        for _ in 0..200 {
            let batch: Vec<u64> = (0..70).map(|_| next()).collect();
            for &h in &batch {
                one.touch(h);
            }
            all.touch_all(batch.iter().copied());
            assert_eq!(
                one.iter_recent().collect::<Vec<_>>(),
                all.iter_recent().collect::<Vec<_>>()
            );
        }
    }
}
