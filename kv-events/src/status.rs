//! What is known about one pod's event stream, for the scorer (is it trustworthy?) and for
//! metrics (why not?).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// Whether a pod's entries can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// Never connected yet.
    Connecting,
    /// Connected and following the stream: the entries are the pod's cache as far as the
    /// stream (and its replay buffer) told.
    Synced,
    /// Disconnected: the pod may have changed since (restarted, evicted); entries are kept
    /// for when it comes back but should not be used.
    Stale,
}

/// A snapshot of one pod's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodStatus {
    pub state: StreamState,
    /// Sequence number of the last batch applied.
    pub last_seq: Option<u64>,
    /// Blocks held for the pod now.
    pub blocks: usize,
    /// Batches applied (live or replayed).
    pub batches: u64,
    /// Messages not understood (bad framing or payload); skipped.
    pub garbage: u64,
    /// Sequence gaps seen in the live stream.
    pub gaps: u64,
    /// Replays that returned what was asked.
    pub replays_ok: u64,
    /// Times the pod's entries were dropped because what was missed could not be recovered.
    pub dropped: u64,
    /// Publisher restarts detected (sequence numbers went back).
    pub restarts: u64,
    /// Connections made (the first and every reconnection).
    pub connects: u64,
    /// Stored blocks ignored: parent unknown, other block size, or an adapter without a name.
    pub skipped_blocks: u64,
    /// Blocks forgotten to stay under `max_blocks_per_pod`.
    pub evicted_for_cap: u64,
}

/// The counters of a `PodStatus` that are not derived from the blocks.
#[derive(Default)]
pub(crate) struct Counters {
    pub last_seq: Option<u64>,
    pub batches: u64,
    pub garbage: u64,
    pub gaps: u64,
    pub replays_ok: u64,
    pub dropped: u64,
    pub restarts: u64,
    pub connects: u64,
    pub skipped_blocks: u64,
}

/// The state is read on the hot path, so it is an atomic; counters change once per message
/// and are read for metrics only.
pub(crate) struct StatusCells {
    state: AtomicU8,
    pub counters: Mutex<Counters>,
}

impl StatusCells {
    pub fn new() -> Self {
        StatusCells {
            state: AtomicU8::new(StreamState::Connecting as u8),
            counters: Mutex::new(Counters::default()),
        }
    }

    pub fn state(&self) -> StreamState {
        match self.state.load(Ordering::Acquire) {
            0 => StreamState::Connecting,
            1 => StreamState::Synced,
            _ => StreamState::Stale,
        }
    }

    pub fn set_state(&self, state: StreamState) {
        self.state.store(state as u8, Ordering::Release);
    }

    pub fn update(&self, change: impl FnOnce(&mut Counters)) {
        change(&mut self.counters.lock().unwrap_or_else(|p| p.into_inner()));
    }
}
