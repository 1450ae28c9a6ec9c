use crate::framework::{Candidate, Cycle, Picker};
use crate::rendezvous;

/// Totals closer than this are a tie (guards against float noise between equal inputs).
const TIE: f64 = 1e-9;

/// `max-score`: the highest total; ties go to the pod rendezvous hashing prefers for the
/// request's first block, so every replica picks the same pod and a shared prompt start keeps
/// landing on the same pod while the pods look alike.
pub struct MaxScore;

impl Picker for MaxScore {
    fn name(&self) -> &'static str {
        "max-score"
    }

    fn pick(&self, cycle: &Cycle<'_>, candidates: &[Candidate<'_>], totals: &[f64]) -> usize {
        let best = totals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let tied = (0..candidates.len()).filter(|&i| totals[i] >= best - TIE);
        let key = cycle.request.route_key.to_le_bytes();
        rendezvous::pick(&key, tied.clone().map(|i| candidates[i].pod.address))
            .and_then(|n| tied.clone().nth(n))
            .unwrap_or(0)
    }
}
