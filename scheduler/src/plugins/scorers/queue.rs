use crate::framework::{Candidate, Cycle, Scorer};
use crate::plugins::lower_is_better;

/// `queue`: fewer waiting requests score higher, scaled between the shortest queue (1) and the
/// longest (0). The scraped queue grows by what we routed to the pod since that scrape. A pod
/// without metrics yet is judged on its requests in flight, the part of its queue we know.
pub struct Queue;

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
        let queued = candidates.iter().map(|c| {
            Some(f64::from(c.metrics().map_or(c.pod.in_flight, |m| {
                m.waiting.saturating_add(c.pod.queued_since_scrape)
            })))
        });
        lower_is_better(queued, scores);
    }
}
