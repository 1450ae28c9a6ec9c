use crate::framework::{Candidate, Cycle, Scorer};
use crate::plugins::lower_is_better;

/// `in-flight`: fewer requests in flight from this gateway score higher, scaled between the
/// least (1) and the most (0). Needs no metrics, so it decides when they are unknown or stale.
pub struct InFlight;

impl Scorer for InFlight {
    fn name(&self) -> &'static str {
        "in-flight"
    }

    fn score(
        &self,
        _cycle: &mut Cycle<'_>,
        candidates: &[Candidate<'_>],
        scores: &mut [Option<f64>],
    ) {
        lower_is_better(
            candidates.iter().map(|c| Some(f64::from(c.pod.in_flight))),
            scores,
        );
    }
}
