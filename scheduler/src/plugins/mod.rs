//! The built-in plugins, registered by name in [`crate::registry::Registry::builtin`].

pub mod filters;
pub mod pickers;
pub mod scorers;

use serde::Deserialize;

/// Parameters of a plugin that takes none: `parameters` must be absent, `null` or `{}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParameters {}

/// A candidate's estimated waiting requests ([`crate::LoadEstimate`]). Requests running in the
/// batch are not queued: continuous batching is serving them.
pub(crate) fn queued(candidate: &crate::framework::Candidate<'_>) -> f64 {
    f64::from(crate::LoadEstimate::of(&candidate.pod).waiting)
}

/// Scores `values` so the smallest gets 1 and the largest 0, linearly; all equal get 1.
/// Used for loads where fewer is better.
pub(crate) fn lower_is_better(
    values: impl Iterator<Item = Option<f64>> + Clone,
    scores: &mut [Option<f64>],
) {
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.clone().flatten() {
        min = min.min(v);
        max = max.max(v);
    }
    for (score, value) in scores.iter_mut().zip(values) {
        *score = value.map(|v| {
            if max > min {
                (max - v) / (max - min)
            } else {
                1.0
            }
        });
    }
}
