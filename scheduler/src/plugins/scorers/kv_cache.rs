use crate::framework::{Candidate, Cycle, Scorer};

/// `kv-cache`: the free fraction of the pod's KV cache (1 − usage). Unknown without metrics.
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
            *score = c.metrics().map(|m| {
                let usage = if m.kv_usage.is_finite() {
                    m.kv_usage
                } else {
                    1.0
                };
                1.0 - usage.clamp(0.0, 1.0)
            });
        }
    }
}
