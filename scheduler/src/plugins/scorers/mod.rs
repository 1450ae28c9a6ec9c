//! Scorers: queue, KV cache, prefix (by routes, or precise by the pods' KV events), LoRA
//! affinity, in-flight, session affinity.

mod in_flight;
mod kv_cache;
mod lora_affinity;
mod precise_prefix;
mod prefix;
mod queue;
mod session_affinity;

pub use in_flight::InFlight;
pub use kv_cache::KvCache;
pub use lora_affinity::LoraAffinity;
pub use precise_prefix::{PreciseBlockIndex, PreciseMatches, PrecisePrefix, PreciseUse};
pub use prefix::{Prefix, PrefixMatches, PrefixParameters};
pub use queue::{Queue, QueueParameters};
pub use session_affinity::SessionAffinity;
