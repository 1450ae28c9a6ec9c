//! One scheduling decision: the pool's members and their live state, handed to the scheduler.

use std::sync::Arc;

use smallvec::SmallVec;
use std::time::Instant;

use pods::PodState;
use scheduler::{
    Criticality, Decision, InferenceRequest, PodView, RequestContext, ScheduleError, Scheduler,
};

use crate::pool::{Condition, Health, Pool};
use crate::prompt_tokens::with_prompt_tokens;
use crate::saturation::SaturationConfig;

/// Pools up to this size are decided without a heap allocation for the per-pod lists.
const INLINE_PODS: usize = 16;

/// The pod chosen for a request.
pub struct Choice {
    pub pod: Arc<PodState>,
    pub decision: Decision,
    /// Envoy marks every member unhealthy: its load balancer will not pick any, so the choice
    /// must bypass it (we still route rather than fail the request).
    pub pool_unhealthy: bool,
}

/// Request headers that steer the scheduler, as read by the filter.
#[derive(Default)]
pub struct Steering<'a> {
    pub criticality: Option<&'a str>,
    pub session: Option<&'a str>,
    pub profile: Option<&'a str>,
}

/// Why the request cannot be scheduled: an HTTP status, a message for the client, and for 429
/// how many seconds to wait.
#[derive(Debug)]
pub struct Rejection {
    pub status: u32,
    pub message: String,
    pub retry_after_s: Option<u32>,
}

impl Rejection {
    fn bad_request(message: String) -> Self {
        Rejection {
            status: 400,
            message,
            retry_after_s: None,
        }
    }
}

/// Chooses among `pool`'s members with `scheduler`. `Ok(None)` when the pool has no member
/// yet (Envoy's own balancing then decides).
pub fn decide(
    scheduler: &Scheduler,
    saturation: &SaturationConfig,
    pool: &Pool,
    request: &InferenceRequest<'_>,
    steering: &Steering<'_>,
) -> Result<Option<Choice>, Rejection> {
    let criticality = match steering.criticality {
        None => Criticality::default(),
        Some(value) => {
            Criticality::from_header(value).map_err(|e| Rejection::bad_request(e.to_string()))?
        }
    };
    let context = RequestContext {
        criticality,
        session: steering.session,
        profile: steering.profile,
        tokens: None,
    };
    with_prompt_tokens(
        pool.tokenizer(),
        scheduler.wants_tokens(),
        request,
        |tokens| {
            let context = RequestContext { tokens, ..context };
            decide_with(scheduler, saturation, pool, request, &context)
        },
    )
}

fn decide_with(
    scheduler: &Scheduler,
    saturation: &SaturationConfig,
    pool: &Pool,
    request: &InferenceRequest<'_>,
    context: &RequestContext<'_>,
) -> Result<Option<Choice>, Rejection> {
    let members = pool.members();
    if members.pods.is_empty() {
        return Ok(None);
    }
    let now = Instant::now();
    // On the stack for pools of up to `INLINE_PODS` pods: no heap allocation per request.
    let metrics: SmallVec<[_; INLINE_PODS]> = members.pods.iter().map(|p| p.metrics()).collect();
    let mut views: SmallVec<[PodView<'_>; INLINE_PODS]> = members
        .snapshot
        .members
        .iter()
        .zip(&members.pods)
        .zip(&metrics)
        .map(|((member, state), metrics)| {
            // Envoy's health checks and outlier detection, and what we saw ourselves: a pod
            // whose /metrics keeps refusing or timing out is most likely down too, and one
            // failing request after request is paused.
            let healthy = member.health != Health::Unhealthy
                && pool.condition(state, now) == Condition::Serving;
            state.view(healthy, metrics.as_deref())
        })
        .collect();
    for view in &mut views {
        view.full = saturation.is_saturated(view);
    }
    // Every pod full: shed what may be shed; the scheduler's `saturation` filter weighs queue
    // against cached prefix for the rest.
    if context.criticality == Criticality::Sheddable && saturation.all_saturated(&views) {
        return Err(Rejection {
            status: 429,
            message: "every inference pod is saturated; sheddable requests are refused until there is room".into(),
            retry_after_s: Some(saturation.retry_after_s),
        });
    }
    match scheduler.schedule(request, &views, context) {
        Ok(decision) => {
            let pod = Arc::clone(&members.pods[decision.pod]);
            let pool_unhealthy = members
                .snapshot
                .members
                .iter()
                .all(|m| m.health == Health::Unhealthy);
            Ok(Some(Choice {
                pod,
                decision,
                pool_unhealthy,
            }))
        }
        Err(ScheduleError::NoPods) => Ok(None),
        Err(e @ ScheduleError::UnknownProfile { .. }) => Err(Rejection::bad_request(e.to_string())),
    }
}

/// Records that `choice`'s request was served by `pod` after all (a retry moved it).
pub fn record_served_by(scheduler: &Scheduler, choice: &Choice, pod: &PodState) {
    let metrics = pod.metrics();
    scheduler.record_route(&choice.decision, &pod.view(true, metrics.as_deref()));
}
