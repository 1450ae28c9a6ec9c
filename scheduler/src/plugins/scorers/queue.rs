use serde::Deserialize;

use crate::framework::{Candidate, Cycle, Scorer};
use crate::plugins::queued;

/// `queue`: fewer waiting requests score higher, relative to the shortest queue:
/// `(shortest + scale) / (queue + scale)`. The shortest queue scores 1; a pod `shortest + scale`
/// requests longer scores one half, and so on: a smooth, scale-aware ranking in which one or two
/// queued requests cannot outweigh a pod's cached prefix, but a long queue does. (A min-max
/// scaling swings from 1 to 0 on a single request of difference; measured on the
/// shared-prefix benchmark, it cost about 0.05 of prefix-cache hit ratio.)
///
/// The scraped queue grows by what we routed to the pod since that scrape. A pod without
/// metrics yet is judged on its requests in flight, the part of its queue we know.
pub struct Queue {
    scale: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueParameters {
    /// Extra waiting requests, over the shortest queue when that is empty, that halve a pod's
    /// score (default 8).
    #[serde(default = "default_scale")]
    pub scale: f64,
}

fn default_scale() -> f64 {
    8.0
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            scale: default_scale(),
        }
    }
}

impl Queue {
    pub fn from_parameters(p: QueueParameters) -> Result<Self, String> {
        if !(p.scale.is_finite() && p.scale > 0.0) {
            return Err("scale must be a number > 0".into());
        }
        Ok(Queue { scale: p.scale })
    }
}

impl Scorer for Queue {
    fn name(&self) -> &'static str {
        "queue"
    }

    fn score(
        &self,
        _cycle: &mut Cycle<'_>,
        candidates: &[Candidate<'_>],
        scores: &mut [Option<f64>],
    ) {
        let shortest = candidates.iter().map(queued).fold(f64::INFINITY, f64::min);
        for (score, c) in scores.iter_mut().zip(candidates) {
            *score = Some((shortest + self.scale) / (queued(c) + self.scale));
        }
    }
}
