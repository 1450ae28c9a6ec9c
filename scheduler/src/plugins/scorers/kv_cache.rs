use crate::framework::{Candidate, Cycle, Scorer};
use crate::LoadEstimate;

/// `kv-cache`: the free fraction of the pod's KV cache (1 − usage), with the usage estimated
/// between scrapes ([`LoadEstimate::kv_usage`]: requests routed since the scrape fill it, so a
/// burst does not herd onto the pod that looked emptiest at the scrape). Unknown without metrics.
pub struct KvCache;

impl Scorer for KvCache {
    fn name(&self) -> &'static str {
        "kv-cache"
    }

    fn score(
        &self,
        _cycle: &mut Cycle<'_>,
        candidates: &[Candidate<'_>],
        scores: &mut [Option<f64>],
    ) {
        for (score, c) in scores.iter_mut().zip(candidates) {
            *score = LoadEstimate::of(&c.pod).kv_usage.map(|usage| 1.0 - usage);
        }
    }
}
