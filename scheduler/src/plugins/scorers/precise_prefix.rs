//! What a `precise-prefix` scorer asks of the pods' KV-event index (the `kv-events` crate's
//! `KvEventsIndex` implements it; the pool owns one index). Only the query interface lives
//! here, so the scheduling core stays free of ZeroMQ and of the subscriber's runtime.
//!
//! Keys are `prefix::token_blocks` keys of the request's tokens, in `block_size()` blocks.

/// Which pods hold which token blocks, from their own KV-cache events.
pub trait PreciseBlockIndex: Send + Sync {
    /// Tokens per block the keys must be computed with.
    fn block_size(&self) -> usize;

    /// How many of `keys`' leading blocks `pod` holds, in a row from the first; `None` when
    /// the pod's event stream is not trustworthy now (no stream, disconnected, a gap that
    /// could not be filled): the scorer then falls back to approximate prefix scoring.
    fn precise_matches(&self, pod: &str, keys: &[u64]) -> Option<usize>;
}
