use crate::framework::{Candidates, Cycle, Filter};

/// `health`: drops pods the pool marks unhealthy. When every pod is unhealthy, the scheduler
/// still routes, to the pod with the fewest requests in flight.
pub struct Health;

impl Filter for Health {
    fn name(&self) -> &'static str {
        "health"
    }

    fn filter(&self, _cycle: &mut Cycle<'_>, candidates: &mut Candidates<'_>) {
        candidates.retain(|c| c.pod.healthy);
    }
}
