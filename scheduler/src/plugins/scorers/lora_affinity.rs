use crate::framework::{Candidate, Cycle, Scorer};

/// `lora-affinity`, for requests naming a LoRA adapter: a pod serving the adapter scores 1, one
/// already loading it 0.8, one with room for another adapter 0.5 (also when its limit is
/// unknown), one that would have to swap an adapter out 0. Abstains for base-model requests and
/// for pods without metrics.
pub struct LoraAffinity;

const SERVING: f64 = 1.0;
const LOADING: f64 = 0.8;
const ROOM: f64 = 0.5;
const SWAP: f64 = 0.0;

impl Scorer for LoraAffinity {
    fn name(&self) -> &'static str {
        "lora-affinity"
    }

    fn score(
        &self,
        cycle: &mut Cycle<'_>,
        candidates: &[Candidate<'_>],
        scores: &mut [Option<f64>],
    ) {
        let Some(adapter) = cycle.request.adapter else {
            return;
        };
        for (score, c) in scores.iter_mut().zip(candidates) {
            *score = c.metrics().map(|m| {
                if m.running_adapters.iter().any(|a| &**a == adapter) {
                    SERVING
                } else if m.waiting_adapters.iter().any(|a| &**a == adapter) {
                    LOADING
                } else if m
                    .max_lora
                    .is_none_or(|max| (m.running_adapters.len() as u64) < u64::from(max))
                {
                    ROOM
                } else {
                    SWAP
                }
            });
        }
    }
}
