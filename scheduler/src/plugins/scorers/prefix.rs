use std::sync::Arc;

use serde::Deserialize;
use smallvec::SmallVec;

use crate::framework::{Candidate, Cycle, Scorer, INLINE_PODS};
use crate::prefix::PrefixIndex;
use crate::{rendezvous, LoadEstimate};

/// `prefix`: the share of the request's blocks that the pod probably has cached, counted as the
/// leading run of blocks the index holds for it. Publishes the run lengths as
/// [`PrefixMatches`] in the cycle state. Abstains for prompts shorter than one block.
///
/// A prefix this gateway has not seen (no candidate holds its first `home_blocks` blocks) gets
/// a home: the pod rendezvous hashing picks for those leading blocks among the candidates
/// within `home_band` waiting requests of the shortest queue, scored [`HOME`] (half of holding
/// the whole prompt: enough to outweigh small differences of queue and KV-cache use, which
/// replicas see at different moments, not a pod that serves the request's LoRA adapter or a
/// clearly shorter queue).
/// Every gateway replica computes the same home from the same prompt and the same scraped
/// queues, so replicas that each see part of a prefix group's traffic, and share no state,
/// still place the group on one pod (bounded-load consistent hashing: the band keeps a home
/// from piling up on a pod that is already far behind).
pub struct Prefix {
    index: Arc<PrefixIndex>,
    home_blocks: usize,
    home_band: f64,
}

/// Score of an unseen prefix's home.
pub const HOME: f64 = 0.5;

/// Leading blocks each candidate holds, in candidate order; published by the prefix scorer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixMatches(pub SmallVec<[u32; INLINE_PODS]>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixParameters {
    /// Leading blocks that name a prefix for placing it when unseen (default 1). More would
    /// tell apart prompts that share a start, but the key must not change as a conversation
    /// grows: with 4, a chat whose first turn was 3 blocks long got a new home on turn 2 (the
    /// holder matched 3 < 4 blocks, so the prefix looked unseen) and 6 % of chat turns moved.
    #[serde(default = "default_home_blocks")]
    pub home_blocks: usize,
    /// Waiting requests above the shortest queue within which a pod can be an unseen prefix's
    /// home (default 4).
    #[serde(default = "default_home_band")]
    pub home_band: f64,
}

fn default_home_blocks() -> usize {
    1
}

fn default_home_band() -> f64 {
    4.0
}

impl Prefix {
    pub fn new(index: Arc<PrefixIndex>) -> Self {
        Prefix {
            index,
            home_blocks: default_home_blocks(),
            home_band: default_home_band(),
        }
    }

    pub fn from_parameters(index: Arc<PrefixIndex>, p: PrefixParameters) -> Result<Self, String> {
        if p.home_blocks == 0 {
            return Err("home_blocks must be at least 1".into());
        }
        if !(p.home_band.is_finite() && p.home_band >= 0.0) {
            return Err("home_band must be a number ≥ 0".into());
        }
        Ok(Prefix {
            index,
            home_blocks: p.home_blocks,
            home_band: p.home_band,
        })
    }

    /// Leading blocks each candidate holds by the index; publishes them as [`PrefixMatches`]
    /// and returns them (empty for a prompt shorter than one block).
    pub(crate) fn matches(
        &self,
        cycle: &mut Cycle<'_>,
        candidates: &[Candidate<'_>],
    ) -> SmallVec<[u32; INLINE_PODS]> {
        let blocks = cycle.request.blocks;
        if blocks.is_empty() {
            return SmallVec::new();
        }
        let snapshot = self.index.snapshot();
        let matches: SmallVec<[u32; INLINE_PODS]> = candidates
            .iter()
            .map(|c| snapshot.matched_blocks(c.pod.address, blocks) as u32)
            .collect();
        cycle.state.insert(PrefixMatches(matches.clone()));
        matches
    }

    /// Leading blocks that name a prefix, for `blocks` blocks in all.
    pub(crate) fn leading(&self, blocks: usize) -> usize {
        blocks.min(self.home_blocks)
    }

    /// Position in `candidates` of the home of a prefix whose leading blocks end in `key`.
    pub(crate) fn home(&self, key: u64, candidates: &[Candidate<'_>]) -> Option<usize> {
        let waiting = |c: &Candidate<'_>| f64::from(LoadEstimate::of(&c.pod).waiting);
        let shortest = candidates.iter().map(waiting).fold(f64::INFINITY, f64::min);
        let in_band = |i: &usize| waiting(&candidates[*i]) <= shortest + self.home_band;
        let band = (0..candidates.len()).filter(in_band);
        rendezvous::pick(
            &key.to_le_bytes(),
            band.clone().map(|i| candidates[i].pod.address),
        )
        .and_then(|n| band.clone().nth(n))
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
        let matches = self.matches(cycle, candidates);
        let blocks = cycle.request.blocks;
        if blocks.is_empty() {
            return;
        }
        for (score, &m) in scores.iter_mut().zip(&matches) {
            *score = Some(f64::from(m) / blocks.len() as f64);
        }
        let leading = self.leading(blocks.len());
        if matches.iter().all(|&m| (m as usize) < leading) {
            // Chained hashes: the last leading block's hash names all of them.
            if let Some(home) = self.home(blocks[leading - 1], candidates) {
                scores[home] = Some(HOME);
            }
        }
    }
}
