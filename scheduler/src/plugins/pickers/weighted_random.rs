use crate::framework::{Candidate, Cycle, Picker};

/// `weighted-random`: picks at random with probability proportional to the total score
/// (uniformly when every total is 0). Spreads load where max-score would concentrate it, at
/// the cost of replicas no longer agreeing.
pub struct WeightedRandom;

impl Picker for WeightedRandom {
    fn name(&self) -> &'static str {
        "weighted-random"
    }

    fn pick(&self, _cycle: &Cycle<'_>, candidates: &[Candidate<'_>], totals: &[f64]) -> usize {
        let sum: f64 = totals.iter().map(|t| t.max(0.0)).sum();
        if sum <= 0.0 {
            return fastrand::usize(..candidates.len());
        }
        let mut point = fastrand::f64() * sum;
        for (i, t) in totals.iter().enumerate() {
            point -= t.max(0.0);
            if point < 0.0 {
                return i;
            }
        }
        totals.iter().rposition(|t| *t > 0.0).unwrap_or(0)
    }
}
