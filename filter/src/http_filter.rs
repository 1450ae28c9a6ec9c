//! The HTTP filter: buffers an inference request's body, decides which pod serves it, and tells
//! the pool's load-balancing policy through `x-gateway-destination-endpoint`.
//!
//! Everything else (other methods and paths, response bodies, SSE streams) passes through
//! untouched.

use std::sync::Arc;
use std::time::Instant;

use pods::{InFlight, PodState};
use scheduler::answer::{AnswerFormat, AnswerReader};
use scheduler::request::{self, ApiKind};
use scheduler::Scheduler;

use crate::config::{DECISION_HEADER, DESTINATION_HEADER};
use crate::decide::{decide, record_served_by, Choice, Rejection, Steering};
use crate::envoy::{BodyStatus, EnvoyHttpFilter, HeadersStatus};
use crate::error_body::error_json;
use crate::metrics;
use crate::module_config::ModuleConfig;
use crate::pool::Pool;
use crate::pools;

/// Bodies up to this size keep their buffer for the worker's next request; a larger one is
/// freed after use, so one huge request does not pin its memory on every worker.
const KEPT_BODY_CAPACITY: usize = 1024 * 1024;

thread_local! {
    /// The worker thread's buffer for the one body it is parsing: a request body is read into
    /// it whole, parsed and scheduled, then the buffer is cleared for the next one.
    static BODY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's (empty) body buffer.
fn with_body_buffer<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    BODY.with_borrow_mut(|body| {
        body.clear();
        let result = f(body);
        body.clear();
        if body.capacity() > KEPT_BODY_CAPACITY {
            body.shrink_to(KEPT_BODY_CAPACITY);
        }
        result
    })
}

/// Headroom above `max_body_bytes` for Envoy's own buffer limit, so that we, not Envoy, see the
/// body cross our limit and answer with a JSON 413 (a single read never adds more than this).
const BUFFER_LIMIT_SLACK: u64 = 1024 * 1024;

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Not an inference request, or already decided: every hook continues.
    PassThrough,
    /// Buffering an inference request body for an endpoint of this kind.
    Buffering(ApiKind),
    /// Sent upstream to the pod chosen (`routed`).
    Routed,
    /// We answered locally; nothing else to do.
    Replied,
}

/// A scheduled request: the choice, and the pool and scheduler it was made with (the response
/// may say a retry moved it, and the route is then recorded where it really went).
struct Routed {
    choice: Choice,
    pool: Arc<Pool>,
    scheduler: Arc<Scheduler>,
}

pub struct InferenceFilter {
    config: Arc<ModuleConfig>,
    phase: Phase,
    /// Set with `Phase::Routed`.
    routed: Option<Routed>,
    /// The answer being read as it streams back, and the pod generating it.
    answer: Option<(AnswerReader, Arc<PodState>)>,
    /// Counts this request against the pod serving it until the stream ends, however it ends:
    /// dropped with the filter.
    in_flight: Option<InFlight>,
}

impl InferenceFilter {
    pub fn new(config: Arc<ModuleConfig>) -> Self {
        InferenceFilter {
            config,
            phase: Phase::PassThrough,
            routed: None,
            answer: None,
            in_flight: None,
        }
    }

    /// The endpoint this request was routed to, if any.
    #[cfg(test)]
    pub fn routed_to(&self) -> Option<&str> {
        self.routed.as_ref().map(|r| r.choice.pod.address())
    }

    /// Whether the filter already answered the request itself.
    pub fn replied(&self) -> bool {
        self.phase == Phase::Replied
    }

    pub fn on_request_headers(
        &mut self,
        envoy: &mut impl EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> HeadersStatus {
        let limits = &self.config.filter;
        let is_post = envoy.request_header(":method") == Some(b"POST");
        let path = envoy
            .request_header(":path")
            .and_then(|p| std::str::from_utf8(p).ok());
        let Some(path) = path.filter(|p| is_post && limits.is_inference_path(p)) else {
            return HeadersStatus::Continue;
        };
        let kind = ApiKind::for_path(path.split_once('?').map_or(path, |(p, _)| p));
        if end_of_stream {
            self.reply(
                envoy,
                400,
                "request body is empty; expected an OpenAI-style JSON body",
            );
            return HeadersStatus::StopIteration;
        }
        let declared = envoy
            .request_header("content-length")
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max_body_bytes) {
            self.reply_too_large(envoy);
            return HeadersStatus::StopIteration;
        }
        envoy.set_buffer_limit(limits.max_body_bytes.saturating_add(BUFFER_LIMIT_SLACK));
        self.phase = Phase::Buffering(kind);
        HeadersStatus::StopIteration
    }

    pub fn on_request_body(
        &mut self,
        envoy: &mut impl EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> BodyStatus {
        let Phase::Buffering(kind) = self.phase else {
            return match self.phase {
                Phase::Replied => BodyStatus::StopIterationNoBuffer,
                _ => BodyStatus::Continue,
            };
        };
        if envoy.request_body_size() > self.config.filter.max_body_bytes {
            self.reply_too_large(envoy);
            return BodyStatus::StopIterationNoBuffer;
        }
        if !end_of_stream {
            return BodyStatus::StopIterationAndBuffer;
        }
        match self.route(envoy, kind) {
            true => BodyStatus::Continue,
            false => BodyStatus::StopIterationNoBuffer,
        }
    }

    /// Trailers end a request whose last body chunk did not say end of stream.
    pub fn on_request_trailers(&mut self, envoy: &mut impl EnvoyHttpFilter) -> HeadersStatus {
        match self.phase {
            Phase::Buffering(kind) => match self.route(envoy, kind) {
                true => HeadersStatus::Continue,
                false => HeadersStatus::StopIteration,
            },
            Phase::Replied => HeadersStatus::StopIteration,
            _ => HeadersStatus::Continue,
        }
    }

    pub fn on_response_headers(&mut self, envoy: &mut impl EnvoyHttpFilter) -> HeadersStatus {
        let Some(routed) = self.routed.as_ref().filter(|_| self.phase == Phase::Routed) else {
            return HeadersStatus::Continue;
        };
        let (chosen, pool) = (&routed.choice.pod, &routed.pool);
        // The pod that answered, as our state of it (no copy of Envoy's address string, but
        // for a host the pool does not know, which cannot happen but through a race).
        let mut stranger = None;
        let served_by = match envoy.upstream_address() {
            None => None,
            Some(address) if address == chosen.address() => Some(Arc::clone(chosen)),
            Some(address) => {
                // A retry moved the request: the chosen pod failed it (reset, refused, 5xx or
                // no first byte in time). Count it where it is, and remember its prefix there.
                pool.record_answer(chosen, false);
                let moved_to = pool.pods().get(address);
                match &moved_to {
                    Some(pod) => {
                        self.in_flight = Some(pod.begin_request());
                        record_served_by(&routed.scheduler, &routed.choice, pod);
                    }
                    None => stranger = Some(address.to_owned()),
                }
                moved_to
            }
        };
        let status = envoy.response_header(":status");
        let (ok, server_error) = (
            status == Some(b"200"),
            status.is_some_and(|s| s.first() == Some(&b'5')),
        );
        if let Some(pod) = &served_by {
            pool.record_answer(pod, !server_error);
        }
        let format = envoy
            .response_header("content-type")
            .and_then(AnswerFormat::for_content_type);
        if let (true, true, Some(format), Some(pod)) =
            (self.config.filter.learn_answers, ok, format, &served_by)
        {
            self.answer = routed
                .scheduler
                .learn_answer(&routed.choice.decision)
                .map(|blocks| (AnswerReader::new(blocks, format), Arc::clone(pod)));
        }
        if self.config.filter.response_header {
            let named = match (&stranger, &served_by) {
                (Some(address), _) => address.as_str(),
                (None, Some(pod)) => pod.address(),
                (None, None) => chosen.address(),
            };
            envoy.set_response_header(DESTINATION_HEADER, named);
        }
        if self.config.filter.decision_header {
            envoy.set_response_header(DECISION_HEADER, &routed.choice.decision.to_string());
        }
        HeadersStatus::Continue
    }

    /// Reads the answer out of the response as it passes; at its end, the pod that generated
    /// it is known to hold it too.
    pub fn on_response_body(&mut self, envoy: &mut impl EnvoyHttpFilter, end_of_stream: bool) {
        let Some((reader, _)) = &mut self.answer else {
            return;
        };
        envoy.visit_response_chunk(&mut |chunk| reader.feed(chunk));
        if !end_of_stream {
            return;
        }
        let (Some((reader, pod)), Some(routed)) = (self.answer.take(), &self.routed) else {
            return;
        };
        if let Some(blocks) = reader.finish() {
            let metrics = pod.metrics();
            routed
                .scheduler
                .record_answer(&pod.view(true, metrics.as_deref()), &blocks);
        }
    }

    /// Parses the buffered body and picks the pod. Returns false when it answered locally.
    fn route(&mut self, envoy: &mut impl EnvoyHttpFilter, kind: ApiKind) -> bool {
        let started = Instant::now();
        let outcome = with_body_buffer(|body| {
            envoy.read_request_body(body);
            self.choose(envoy, body, kind)
        });
        let latency_us = started.elapsed().as_micros() as u64;
        match outcome {
            Err(rejection) => {
                let retry_after = rejection.retry_after_s.map(|s| s.to_string());
                let extra = retry_after.as_deref().map(|v| ("retry-after", v));
                self.reply_with(envoy, rejection.status, &rejection.message, extra);
                false
            }
            Ok(Some(routed)) => {
                let choice = &routed.choice;
                let endpoint = choice.pod.address();
                let d = &choice.decision;
                let ids = self.config.metrics.as_ref();
                metrics::record_decision(ids, envoy, endpoint, latency_us, d);
                envoy.set_request_header(DESTINATION_HEADER, endpoint);
                if choice.pool_unhealthy {
                    // Envoy's balancer only picks healthy hosts; go around it (the cluster's
                    // `override_host_status` must accept UNHEALTHY, see envoy.yaml).
                    envoy.set_upstream_override_host(endpoint);
                }
                self.in_flight = Some(choice.pod.begin_request());
                self.routed = Some(routed);
                self.phase = Phase::Routed;
                true
            }
            // No pool published for this route (its cluster does not use our policy) or no
            // member yet: let Envoy's own load balancing decide.
            Ok(None) => {
                self.phase = Phase::PassThrough;
                true
            }
        }
    }

    fn choose(
        &self,
        envoy: &impl EnvoyHttpFilter,
        body: &[u8],
        kind: ApiKind,
    ) -> Result<Option<Routed>, Rejection> {
        let request = request::parse(body, kind).map_err(|e| Rejection {
            status: 400,
            message: e.to_string(),
            retry_after_s: None,
        })?;
        let Some(pool) = envoy.cluster_name().and_then(pools::find) else {
            return Ok(None);
        };
        let scheduler = self.config.scheduler_for(&pool);
        let names = self.config.headers();
        let header = |name: &str| {
            envoy
                .request_header(name)
                .and_then(|v| std::str::from_utf8(v).ok())
        };
        let steering = Steering {
            criticality: header(&names.criticality),
            session: header(&names.session),
            profile: header(&names.profile),
        };
        let saturation = &self.config.filter.saturation;
        let choice = decide(&scheduler, saturation, &pool, &request, &steering)?;
        Ok(choice.map(|choice| Routed {
            choice,
            pool,
            scheduler,
        }))
    }

    fn reply_too_large(&mut self, envoy: &mut impl EnvoyHttpFilter) {
        let message = format!(
            "request body exceeds the limit of {} bytes (max_body_bytes)",
            self.config.filter.max_body_bytes
        );
        self.reply(envoy, 413, &message);
    }

    fn reply(&mut self, envoy: &mut impl EnvoyHttpFilter, status: u32, message: &str) {
        self.reply_with(envoy, status, message, None);
    }

    fn reply_with(
        &mut self,
        envoy: &mut impl EnvoyHttpFilter,
        status: u32,
        message: &str,
        extra_header: Option<(&str, &str)>,
    ) {
        self.phase = Phase::Replied;
        metrics::record_rejection(self.config.metrics.as_ref(), envoy, status);
        let body = error_json(status, message);
        let content_type = ("content-type", "application/json");
        let headers: &[(&str, &str)] = match &extra_header {
            Some(h) => &[content_type, *h],
            None => &[content_type],
        };
        envoy.send_response(status, headers, &body, "inference_scheduler_rejected");
    }
}
