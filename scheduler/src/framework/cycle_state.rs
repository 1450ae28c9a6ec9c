//! Data plugins share within one scheduling cycle, keyed by type: a plugin defines a type for
//! what it publishes, and readers ask for that type. No string keys, no downcasts that can fail
//! at a distance.

use std::any::{Any, TypeId};

use smallvec::SmallVec;

/// A map from type to one value of that type, alive for one scheduling cycle.
#[derive(Default)]
pub struct CycleState {
    // A handful of entries at most: a short list beats a hash map here, and on the stack.
    entries: SmallVec<[(TypeId, Box<dyn Any + Send + Sync>); 4]>,
}

impl CycleState {
    /// Stores `value`, returning the previous value of the same type.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) -> Option<T> {
        let id = TypeId::of::<T>();
        match self.entries.iter_mut().find(|(t, _)| *t == id) {
            Some((_, slot)) => {
                let old = std::mem::replace(slot, Box::new(value));
                old.downcast::<T>().ok().map(|b| *b)
            }
            None => {
                self.entries.push((id, Box::new(value)));
                None
            }
        }
    }

    pub fn get<T: Any>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.entries
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, v)| v.downcast_ref::<T>())
    }

    pub fn get_mut<T: Any>(&mut self) -> Option<&mut T> {
        let id = TypeId::of::<T>();
        self.entries
            .iter_mut()
            .find(|(t, _)| *t == id)
            .and_then(|(_, v)| v.downcast_mut::<T>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Matches(Vec<u32>);
    #[derive(Debug, PartialEq)]
    struct Flag(bool);

    #[test]
    fn values_are_found_by_type() {
        let mut state = CycleState::default();
        assert_eq!(state.get::<Matches>(), None);
        state.insert(Matches(vec![1, 2]));
        state.insert(Flag(true));
        assert_eq!(state.get::<Matches>(), Some(&Matches(vec![1, 2])));
        assert_eq!(state.get::<Flag>(), Some(&Flag(true)));
        state.get_mut::<Flag>().unwrap().0 = false;
        assert_eq!(state.insert(Flag(true)), Some(Flag(false)));
        assert_eq!(state.get::<Flag>(), Some(&Flag(true)));
    }
}
