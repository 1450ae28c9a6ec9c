use std::sync::Arc;

use serde::Deserialize;

use crate::framework::{Candidate, Candidates, Cycle, Filter};
use crate::prefix::PrefixIndex;
use crate::LoadEstimate;

/// `saturation`: keeps routing on merit when pods fill up instead of falling off a cliff to
/// least-loaded routing. Which pods are full is the caller's rule ([`crate::PodView::full`]).
///
/// * Some candidates have room: the full ones are dropped and the scorers (prefix affinity
///   among them) decide among the rest.
/// * None has room: each is given a cost, `queue_scale × (waiting − shortest) / (shortest +
///   queue_scale) + prefill_weight × uncached share` — how much longer its queue is than the
///   shortest, relative to that queue (as the `queue` scorer judges queues: five more waiting
///   matter behind an empty queue, not behind ninety), plus the share of the prompt the pod
///   would have to prefill (a whole uncached prompt weighs `prefill_weight` requests of queue).
///   The cheapest pods stay (ties go to the picker's replica-stable tie-break). Under overload
///   every prefilled token saved is capacity, so a pod holding the prefix keeps it unless its
///   queue is far longer; a pod a long way behind still loses. (After the cost of the Dynamo KV
///   router, `prefill blocks not cached + load`, with the load counted in queued requests, the
///   signal every replica scrapes alike.)
pub struct Saturation {
    index: Arc<PrefixIndex>,
    prefill_weight: f64,
    queue_scale: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaturationParameters {
    /// Queued requests that one fully uncached prompt is worth when every pod is full (8).
    #[serde(default = "default_prefill_weight")]
    pub prefill_weight: f64,
    /// Queue length that makes excess waiting count relative: `queue_scale` more waiting
    /// behind an empty shortest queue cost `queue_scale` (default 8, the `queue` scorer's
    /// scale), behind a shortest queue of `q` they cost `queue_scale² / (q + queue_scale)`.
    #[serde(default = "default_queue_scale")]
    pub queue_scale: f64,
}

fn default_prefill_weight() -> f64 {
    8.0
}

fn default_queue_scale() -> f64 {
    8.0
}

impl Saturation {
    pub fn new(index: Arc<PrefixIndex>, p: SaturationParameters) -> Result<Self, String> {
        if !(p.prefill_weight.is_finite() && p.prefill_weight >= 0.0) {
            return Err("prefill_weight must be a number ≥ 0".into());
        }
        if !(p.queue_scale.is_finite() && p.queue_scale > 0.0) {
            return Err("queue_scale must be a number > 0".into());
        }
        Ok(Saturation {
            index,
            prefill_weight: p.prefill_weight,
            queue_scale: p.queue_scale,
        })
    }

    fn cost(
        &self,
        cycle: &Cycle<'_>,
        snapshot: &crate::prefix::IndexSnapshot,
        shortest: f64,
        c: &Candidate<'_>,
    ) -> f64 {
        let blocks = cycle.request.blocks;
        let uncached = if blocks.is_empty() {
            1.0
        } else {
            let hit = snapshot.matched_blocks(c.pod.address, blocks) as f64;
            1.0 - hit / blocks.len() as f64
        };
        let excess = f64::from(LoadEstimate::of(&c.pod).waiting) - shortest;
        self.queue_scale * excess / (shortest + self.queue_scale) + self.prefill_weight * uncached
    }
}

/// Costs closer than this are equal (float noise between equal inputs).
const TIE: f64 = 1e-9;

impl Filter for Saturation {
    fn name(&self) -> &'static str {
        "saturation"
    }

    fn filter(&self, cycle: &mut Cycle<'_>, candidates: &mut Candidates<'_>) {
        if candidates.iter().any(|c| !c.pod.full) {
            candidates.retain(|c| !c.pod.full);
            return;
        }
        if candidates.len() < 2 {
            return;
        }
        let snapshot = self.index.snapshot();
        let shortest = candidates
            .iter()
            .map(|c| f64::from(LoadEstimate::of(&c.pod).waiting))
            .fold(f64::INFINITY, f64::min);
        let costs: Vec<f64> = candidates
            .iter()
            .map(|c| self.cost(cycle, &snapshot, shortest, c))
            .collect();
        let best = costs.iter().copied().fold(f64::INFINITY, f64::min);
        let mut i = 0;
        candidates.retain(|_| {
            i += 1;
            costs[i - 1] <= best + TIE
        });
    }
}
