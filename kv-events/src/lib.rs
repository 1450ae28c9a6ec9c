//! Precise prefix-cache state from the pods' own KV-cache events.
//!
//! Model servers (vLLM with `--kv-events-config`, the simulator with `--kv-events-port`) publish
//! every block they cache and evict over ZeroMQ. A [`KvEventsIndex`] runs one subscriber task per
//! pod on a background thread of its own and keeps, per pod, the blocks it holds, keyed by
//! `scheduler::prefix::token_blocks` keys of their token ids: the scheduler computes the same
//! keys from a tokenized request and asks how many leading blocks each pod holds.
//!
//! ```no_run
//! use kv_events::{Endpoints, KvEventsConfig, KvEventsIndex};
//! use scheduler::prefix::token_blocks::{chain_seed, token_block_keys};
//!
//! let index = KvEventsIndex::new(KvEventsConfig::default()).unwrap();
//! index.subscribe("10.0.0.7:8000", Endpoints::on_pod_host("10.0.0.7:8000", 5557, Some(5558)).unwrap());
//! let mut keys = Vec::new();
//! token_block_keys(chain_seed(None), &[128000, 9906, 1917], 16, &mut keys);
//! let hits = index.matched_blocks("10.0.0.7:8000", &keys);
//! # let _ = hits;
//! ```
//!
//! Reads take no lock but the pod's own read lock (shared with other readers, exclusive only
//! while its subscriber applies one batch): the pod map is an immutable snapshot swapped when
//! pods are added or removed.

mod config;
mod pod_blocks;
mod status;
mod subscriber;
pub mod wire;

use std::collections::HashMap as StdHashMap;
use std::io;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use foldhash::fast::RandomState;
use hashbrown::HashMap;
use scheduler::plugins::scorers::PreciseBlockIndex;
use tokio::sync::mpsc;

pub use config::{Endpoints, KvEventsConfig, DEFAULT_PUBLISH_PORT};
pub use pod_blocks::PodBlocks;
pub use status::{PodStatus, StreamState};

use status::StatusCells;

/// One pod's blocks and stream status, shared by its subscriber (writer) and lookups.
pub(crate) struct PodEntry {
    blocks: RwLock<PodBlocks>,
    status: StatusCells,
}

impl PodEntry {
    fn read_blocks(&self) -> RwLockReadGuard<'_, PodBlocks> {
        self.blocks.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write_blocks(&self) -> RwLockWriteGuard<'_, PodBlocks> {
        self.blocks.write().unwrap_or_else(|p| p.into_inner())
    }
}

type PodMap = HashMap<Box<str>, Arc<PodEntry>, RandomState>;

enum Command {
    Subscribe {
        pod: Box<str>,
        entry: Arc<PodEntry>,
        endpoints: Endpoints,
    },
    Unsubscribe {
        pod: Box<str>,
    },
}

/// Which pod holds which token block, from the pods' KV events.
pub struct KvEventsIndex {
    config: Arc<KvEventsConfig>,
    pods: ArcSwap<PodMap>,
    /// Serialises membership changes (copy-on-write of the pod map); lookups never take it.
    membership: Mutex<()>,
    commands: Option<mpsc::UnboundedSender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl KvEventsIndex {
    /// An empty index and its subscriber thread (`kv-events`, one tokio thread for every pod).
    pub fn new(config: KvEventsConfig) -> io::Result<Self> {
        let config = Arc::new(config);
        let (commands, inbox) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread_config = config.clone();
        let thread = std::thread::Builder::new()
            .name("kv-events".into())
            .spawn(move || runtime.block_on(run_subscribers(inbox, thread_config)))?;
        Ok(KvEventsIndex {
            config,
            pods: ArcSwap::default(),
            membership: Mutex::new(()),
            commands: Some(commands),
            thread: Some(thread),
        })
    }

    pub fn config(&self) -> &KvEventsConfig {
        &self.config
    }

    /// Follows `pod`'s events at `endpoints`, replacing any earlier subscription of that pod
    /// (and its entries).
    pub fn subscribe(&self, pod: &str, endpoints: Endpoints) {
        let entry = Arc::new(PodEntry {
            blocks: RwLock::new(PodBlocks::new(self.config.max_blocks_per_pod)),
            status: StatusCells::new(),
        });
        self.change_pods(|pods| {
            pods.insert(pod.into(), entry.clone());
        });
        self.send(Command::Subscribe {
            pod: pod.into(),
            entry,
            endpoints,
        });
    }

    /// Stops following `pod` and forgets its entries.
    pub fn unsubscribe(&self, pod: &str) {
        if self.pods.load().contains_key(pod) {
            self.change_pods(|pods| {
                pods.remove(pod);
            });
        }
        self.send(Command::Unsubscribe { pod: pod.into() });
    }

    /// Keeps only the pods `keep` accepts (reconciliation with pool membership).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        let gone: Vec<Box<str>> = self
            .pods
            .load()
            .keys()
            .filter(|pod| !keep(pod))
            .cloned()
            .collect();
        for pod in gone {
            self.unsubscribe(&pod);
        }
    }

    /// How many of `keys`' leading blocks `pod` holds, in a row from the first, whatever the
    /// state of its stream (see `precise_matches` for the trustworthy answer).
    pub fn matched_blocks(&self, pod: &str, keys: &[u64]) -> usize {
        match self.pods.load().get(pod) {
            Some(entry) => entry.read_blocks().matched(keys),
            None => 0,
        }
    }

    /// The pod's stream state and counters; `None` if it is not subscribed.
    pub fn pod_status(&self, pod: &str) -> Option<PodStatus> {
        let pods = self.pods.load();
        let entry = pods.get(pod)?;
        let (blocks, evicted_for_cap, orphans) = {
            let blocks = entry.read_blocks();
            (blocks.len(), blocks.evicted_for_cap, blocks.orphans)
        };
        let c = entry
            .status
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Some(PodStatus {
            state: entry.status.state(),
            last_seq: c.last_seq,
            blocks,
            batches: c.batches,
            garbage: c.garbage,
            gaps: c.gaps,
            replays_ok: c.replays_ok,
            dropped: c.dropped,
            restarts: c.restarts,
            connects: c.connects,
            skipped_blocks: c.skipped_blocks + orphans,
            evicted_for_cap,
        })
    }

    /// Whether `pod` is subscribed.
    pub fn is_subscribed(&self, pod: &str) -> bool {
        self.pods.load().contains_key(pod)
    }

    /// The state of `pod`'s stream; `None` if it is not subscribed.
    pub fn stream_state(&self, pod: &str) -> Option<StreamState> {
        self.pods.load().get(pod).map(|entry| entry.status.state())
    }

    /// Subscribed pods.
    pub fn pods(&self) -> Vec<String> {
        self.pods.load().keys().map(|pod| pod.to_string()).collect()
    }

    /// Blocks held, summed over pods.
    pub fn blocks(&self) -> usize {
        self.pods
            .load()
            .values()
            .map(|e| e.read_blocks().len())
            .sum()
    }

    /// Bytes the index uses now: every pod's tables and the pod map.
    pub fn bytes(&self) -> usize {
        let pods = self.pods.load();
        std::mem::size_of::<Self>()
            + pods.allocation_size()
            + pods
                .iter()
                .map(|(pod, entry)| {
                    pod.len() + std::mem::size_of::<PodEntry>() + entry.read_blocks().bytes()
                        - std::mem::size_of::<PodBlocks>()
                })
                .sum::<usize>()
    }

    fn change_pods(&self, change: impl FnOnce(&mut PodMap)) {
        let _guard = self.membership.lock().unwrap_or_else(|p| p.into_inner());
        let mut pods = PodMap::clone(&self.pods.load());
        change(&mut pods);
        self.pods.store(Arc::new(pods));
    }

    fn send(&self, command: Command) {
        if let Some(commands) = &self.commands {
            let _ = commands.send(command);
        }
    }
}

impl PreciseBlockIndex for KvEventsIndex {
    fn block_size(&self) -> usize {
        self.config.block_size
    }

    fn precise_matches(&self, pod: &str, keys: &[u64]) -> Option<usize> {
        let pods = self.pods.load();
        let entry = pods.get(pod)?;
        (entry.status.state() == StreamState::Synced).then(|| entry.read_blocks().matched(keys))
    }
}

impl Drop for KvEventsIndex {
    fn drop(&mut self) {
        // Closing the channel ends the thread, which aborts every subscriber.
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn run_subscribers(mut inbox: mpsc::UnboundedReceiver<Command>, config: Arc<KvEventsConfig>) {
    let mut tasks: StdHashMap<Box<str>, tokio::task::JoinHandle<()>> = StdHashMap::new();
    while let Some(command) = inbox.recv().await {
        match command {
            Command::Subscribe {
                pod,
                entry,
                endpoints,
            } => {
                let task = tokio::spawn(subscriber::run(entry, endpoints, config.clone()));
                if let Some(old) = tasks.insert(pod, task) {
                    old.abort();
                }
            }
            Command::Unsubscribe { pod } => {
                if let Some(task) = tasks.remove(&pod) {
                    task.abort();
                }
            }
        }
    }
    tasks.values().for_each(tokio::task::JoinHandle::abort);
}
