use crate::framework::{Candidate, Cycle, Scorer};
use crate::rendezvous;

/// `session-affinity`, for requests carrying the session header: the pod that rendezvous
/// hashing assigns the session to among the candidates scores 1, the others 0. Stateless, so
/// every replica sends a session to the same pod, and only sessions of a pod that leaves move.
/// Abstains without a session.
pub struct SessionAffinity;

impl Scorer for SessionAffinity {
    fn name(&self) -> &'static str {
        "session-affinity"
    }

    fn score(
        &self,
        cycle: &mut Cycle<'_>,
        candidates: &[Candidate<'_>],
        scores: &mut [Option<f64>],
    ) {
        let Some(session) = cycle.request.session else {
            return;
        };
        let home = rendezvous::pick(session.as_bytes(), candidates.iter().map(|c| c.pod.address));
        for (i, score) in scores.iter_mut().enumerate() {
            *score = Some(if Some(i) == home { 1.0 } else { 0.0 });
        }
    }
}
