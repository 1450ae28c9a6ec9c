//! One scheduling decision: the pool's members and their live state, handed to the scheduler.

use std::sync::Arc;

use pods::PodState;
use scheduler::{Criticality, Decision, InferenceRequest, PodView, RequestContext, ScheduleError};

use crate::module_config::ModuleConfig;
use crate::pool::{Health, PoolSnapshot};

/// The pod chosen for a request.
pub struct Choice {
    pub pod: Arc<PodState>,
    pub decision: Decision,
}

/// Request headers that steer the scheduler, as read by the filter.
#[derive(Default)]
pub struct Steering<'a> {
    pub criticality: Option<&'a str>,
    pub session: Option<&'a str>,
    pub profile: Option<&'a str>,
}

/// Why the request cannot be scheduled, as an HTTP status and a message for the client.
pub type Rejection = (u32, String);

/// Chooses among `pool`'s members. `Ok(None)` when the pool has no member the registry knows
/// (Envoy's own balancing then decides).
pub fn decide(
    config: &ModuleConfig,
    pool: &PoolSnapshot,
    request: &InferenceRequest<'_>,
    steering: &Steering<'_>,
) -> Result<Option<Choice>, Rejection> {
    let criticality = match steering.criticality {
        None => Criticality::default(),
        Some(value) => Criticality::from_header(value).map_err(|e| (400, e.to_string()))?,
    };
    let context = RequestContext {
        criticality,
        session: steering.session,
        profile: steering.profile,
    };

    let states: Vec<(Arc<PodState>, bool)> = pool
        .members
        .iter()
        .filter_map(|m| {
            let state = config.pods.get(&m.address)?;
            // Envoy's health checks, and our own scrapes: a pod whose /metrics keeps refusing
            // or timing out is most likely down too.
            let healthy = m.health != Health::Unhealthy && !config.scrapes_failing(&state);
            Some((state, healthy))
        })
        .collect();
    if states.is_empty() {
        return Ok(None);
    }
    let metrics: Vec<_> = states.iter().map(|(s, _)| s.metrics()).collect();
    let views: Vec<PodView<'_>> = states
        .iter()
        .zip(&metrics)
        .map(|((state, healthy), metrics)| PodView {
            address: state.address(),
            healthy: *healthy,
            metrics: metrics.as_deref(),
            in_flight: state.in_flight(),
            queued_since_scrape: state.routed_since_scrape(),
        })
        .collect();
    match config.scheduler.schedule(request, &views, &context) {
        Ok(decision) => Ok(Some(Choice {
            pod: Arc::clone(&states[decision.pod].0),
            decision,
        })),
        Err(ScheduleError::NoPods) => Ok(None),
        Err(e @ ScheduleError::UnknownProfile { .. }) => Err((400, e.to_string())),
    }
}

/// Records that `choice`'s request was served by `pod` after all (a retry moved it).
pub fn record_served_by(config: &ModuleConfig, choice: &Choice, pod: &PodState) {
    let metrics = pod.metrics();
    let view = PodView {
        address: pod.address(),
        healthy: true,
        metrics: metrics.as_deref(),
        in_flight: pod.in_flight(),
        queued_since_scrape: pod.routed_since_scrape(),
    };
    config.scheduler.record_route(&choice.decision, &view);
}
