//! Which LoRA adapters sit in the GPU's adapter slots (vLLM --max-loras). A request for an
//! absent adapter needs a slot: a free one, or the least recently used adapter that no running
//! request needs. Loading costs time (see `timing`).

use lru::LruCache;

pub struct AdapterSlots {
    max_resident: usize,
    resident: LruCache<usize, ()>,
    /// Running requests per adapter; an adapter in use cannot be evicted.
    running: Vec<u32>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Residency {
    AlreadyResident,
    LoadedNow,
    NoFreeSlot,
}

impl AdapterSlots {
    pub fn new(adapters: usize, max_resident: usize) -> Self {
        Self {
            max_resident,
            resident: LruCache::unbounded(),
            running: vec![0; adapters],
        }
    }

    /// Makes `adapter` resident if a slot can be had.
    pub fn ensure_resident(&mut self, adapter: usize) -> Residency {
        if self.resident.get(&adapter).is_some() {
            return Residency::AlreadyResident;
        }
        if self.resident.len() >= self.max_resident {
            let idle = self
                .resident
                .iter()
                .rev()
                .map(|(&a, ())| a)
                .find(|&a| self.running[a] == 0);
            match idle {
                Some(victim) => {
                    self.resident.pop(&victim);
                }
                None => return Residency::NoFreeSlot,
            }
        }
        self.resident.put(adapter, ());
        Residency::LoadedNow
    }

    pub fn start_running(&mut self, adapter: usize) {
        self.running[adapter] += 1;
    }

    pub fn stop_running(&mut self, adapter: usize) {
        self.running[adapter] -= 1;
    }

    #[cfg(test)]
    pub fn is_resident(&self, adapter: usize) -> bool {
        self.resident.contains(&adapter)
    }

    pub fn clear(&mut self) {
        self.resident.clear();
        self.running.iter_mut().for_each(|count| *count = 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_until_full_then_evicts_the_least_recent_idle_adapter() {
        let mut slots = AdapterSlots::new(3, 2);
        assert_eq!(slots.ensure_resident(0), Residency::LoadedNow);
        assert_eq!(slots.ensure_resident(1), Residency::LoadedNow);
        assert_eq!(slots.ensure_resident(0), Residency::AlreadyResident);
        assert_eq!(
            slots.ensure_resident(2),
            Residency::LoadedNow,
            "evicts 1, used least recently"
        );
        assert!(slots.is_resident(0) && !slots.is_resident(1));
    }

    #[test]
    fn an_adapter_in_use_is_never_evicted() {
        let mut slots = AdapterSlots::new(3, 2);
        slots.ensure_resident(0);
        slots.ensure_resident(1);
        slots.start_running(0);
        slots.start_running(1);
        assert_eq!(slots.ensure_resident(2), Residency::NoFreeSlot);
        slots.stop_running(0);
        assert_eq!(slots.ensure_resident(2), Residency::LoadedNow);
        assert!(!slots.is_resident(0) && slots.is_resident(1));
    }
}
