//! The plugin framework: a scheduling cycle runs a profile's filters, then its scorers, then its
//! picker, over the candidate pods.

mod cycle_state;

use std::time::Instant;

use smallvec::SmallVec;

pub use cycle_state::CycleState;

use crate::context::Criticality;
use crate::pod::{PodMetrics, PodView};

/// Pools up to this size are scheduled without a heap allocation for per-pod lists.
pub const INLINE_PODS: usize = 16;

/// The candidates of a cycle, on the stack for pools of up to [`INLINE_PODS`] pods.
pub type Candidates<'a> = SmallVec<[Candidate<'a>; INLINE_PODS]>;

/// A pod still in the running, by its position in the caller's pod list.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// Index into the pod list given to the scheduler.
    pub index: usize,
    pub pod: PodView<'a>,
}

impl<'a> Candidate<'a> {
    /// The metrics scorers may trust; a filter hides untrusted (stale) ones by clearing them.
    pub fn metrics(&self) -> Option<&'a PodMetrics> {
        self.pod.metrics
    }
}

/// What a scheduling cycle knows about the request.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// The model the request names (an adapter name for LoRA requests).
    pub model: &'a str,
    /// `Some(model)` when the model is a LoRA adapter (configured, or served by some pod).
    pub adapter: Option<&'a str>,
    /// Chained hashes of the prompt's blocks.
    pub blocks: &'a [u64],
    /// The key ties are broken on, the same on every replica (the first block's hash).
    pub route_key: u64,
    pub criticality: Criticality,
    pub session: Option<&'a str>,
    /// The prompt's token ids, when the caller tokenized it.
    pub tokens: Option<&'a [u32]>,
}

/// One scheduling cycle: the request, the clock, and the state plugins share.
pub struct Cycle<'a> {
    pub request: RequestFacts<'a>,
    /// When the cycle started; staleness is measured against it.
    pub now: Instant,
    pub state: CycleState,
}

/// Removes pods that must not serve the request.
pub trait Filter: Send + Sync {
    /// The name the plugin is registered under.
    fn name(&self) -> &'static str;
    /// Retains the candidates that pass. A filter may also clear a candidate's metrics to make
    /// scorers treat them as unknown. Leaving no candidate makes the scheduler fall back to the
    /// least loaded pod, so a filter that must never strand a request keeps some.
    fn filter(&self, cycle: &mut Cycle<'_>, candidates: &mut Candidates<'_>);
}

/// Rates each candidate in [0, 1], higher is better.
pub trait Scorer: Send + Sync {
    fn name(&self) -> &'static str;
    /// Writes one score per candidate into `scores` (same order, same length, all `None` on
    /// entry). `None` means "unknown for this pod": the pod's total is then the weighted mean
    /// of the scorers that did score it.
    fn score(
        &self,
        cycle: &mut Cycle<'_>,
        candidates: &[Candidate<'_>],
        scores: &mut [Option<f64>],
    );
    /// Whether the scorer reads the request's token ids, so the caller should tokenize.
    fn wants_tokens(&self) -> bool {
        false
    }
}

/// Chooses one candidate from their total scores.
pub trait Picker: Send + Sync {
    fn name(&self) -> &'static str;
    /// The position in `candidates` (never empty; `totals` has the same length).
    fn pick(&self, cycle: &Cycle<'_>, candidates: &[Candidate<'_>], totals: &[f64]) -> usize;
}
