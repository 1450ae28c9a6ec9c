use std::sync::Arc;

use smallvec::SmallVec;

use crate::framework::{Candidate, Cycle, Scorer, INLINE_PODS};
use crate::prefix::PrefixIndex;

/// `prefix`: the share of the request's blocks that the pod probably has cached, counted as the
/// leading run of blocks the index holds for it. Publishes the run lengths as
/// [`PrefixMatches`] in the cycle state. Abstains for prompts shorter than one block.
pub struct Prefix {
    index: Arc<PrefixIndex>,
}

/// Leading blocks each candidate holds, in candidate order; published by the prefix scorer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixMatches(pub SmallVec<[u32; INLINE_PODS]>);

impl Prefix {
    pub fn new(index: Arc<PrefixIndex>) -> Self {
        Prefix { index }
    }
}

impl Scorer for Prefix {
    fn name(&self) -> &'static str {
        "prefix"
    }

    fn score(
        &self,
        cycle: &mut Cycle<'_>,
        candidates: &[Candidate<'_>],
        scores: &mut [Option<f64>],
    ) {
        let blocks = cycle.request.blocks;
        if blocks.is_empty() {
            return;
        }
        let snapshot = self.index.snapshot();
        let matches: SmallVec<[u32; INLINE_PODS]> = candidates
            .iter()
            .map(|c| snapshot.matched_blocks(c.pod.address, blocks) as u32)
            .collect();
        for (score, &m) in scores.iter_mut().zip(&matches) {
            *score = Some(f64::from(m) / blocks.len() as f64);
        }
        cycle.state.insert(PrefixMatches(matches));
    }
}
