//! The HTTP filter: buffers an inference request's body, decides which pod serves it, and tells
//! the pool's load-balancing policy through `x-gateway-destination-endpoint`.
//!
//! Everything else (other methods and paths, response bodies, SSE streams) passes through
//! untouched.

use std::sync::Arc;

use scheduler::request::{self, ApiKind};

use crate::config::DESTINATION_HEADER;
use crate::envoy::{BodyStatus, EnvoyHttpFilter, HeadersStatus};
use crate::error_body::error_json;
use crate::module_config::ModuleConfig;
use crate::pool;

/// Bytes of prompt text the placeholder policy hashes: equal prefixes stick to one pod.
const AFFINITY_PREFIX_BYTES: usize = 256;

/// Headroom above `max_body_bytes` for Envoy's own buffer limit, so that we, not Envoy, see the
/// body cross our limit and answer with a JSON 413 (a single read never adds more than this).
const BUFFER_LIMIT_SLACK: u64 = 1024 * 1024;

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Not an inference request, or already decided: every hook continues.
    PassThrough,
    /// Buffering an inference request body for an endpoint of this kind.
    Buffering(ApiKind),
    /// Sent upstream to this endpoint (`ip:port`).
    Routed(String),
    /// We answered locally; nothing else to do.
    Replied,
}

pub struct InferenceFilter {
    config: Arc<ModuleConfig>,
    phase: Phase,
    body: Vec<u8>,
}

impl InferenceFilter {
    pub fn new(config: Arc<ModuleConfig>) -> Self {
        InferenceFilter {
            config,
            phase: Phase::PassThrough,
            body: Vec::new(),
        }
    }

    /// The endpoint this request was routed to, if any.
    pub fn routed_to(&self) -> Option<&str> {
        match &self.phase {
            Phase::Routed(endpoint) => Some(endpoint),
            _ => None,
        }
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
        if let Phase::Routed(chosen) = &self.phase {
            if self.config.filter.response_header {
                // After a retry the serving pod differs from our first choice: report the truth.
                let actual = envoy.upstream_address();
                envoy.set_response_header(DESTINATION_HEADER, actual.as_deref().unwrap_or(chosen));
            }
        }
        HeadersStatus::Continue
    }

    /// Parses the buffered body and picks the pod. Returns false when it answered locally.
    fn route(&mut self, envoy: &mut impl EnvoyHttpFilter, kind: ApiKind) -> bool {
        self.body.clear();
        envoy.read_request_body(&mut self.body);
        let body = std::mem::take(&mut self.body);
        let chosen = match request::parse(&body, kind) {
            Err(e) => {
                self.reply(envoy, 400, &e.to_string());
                return false;
            }
            Ok(req) => {
                let prompt = req.prompt_text();
                let key = &prompt.as_bytes()[..prompt.len().min(AFFINITY_PREFIX_BYTES)];
                envoy
                    .cluster_name()
                    .and_then(|cluster| pick_member(&cluster, key))
            }
        };
        self.body = body;
        match chosen {
            Some(endpoint) => {
                envoy.set_request_header(DESTINATION_HEADER, &endpoint);
                self.phase = Phase::Routed(endpoint);
            }
            // No pool published for this route (its cluster does not use our policy) or no
            // routable member: let Envoy's own load balancing decide.
            None => self.phase = Phase::PassThrough,
        }
        true
    }

    fn reply_too_large(&mut self, envoy: &mut impl EnvoyHttpFilter) {
        let message = format!(
            "request body exceeds the limit of {} bytes (max_body_bytes)",
            self.config.filter.max_body_bytes
        );
        self.reply(envoy, 413, &message);
    }

    fn reply(&mut self, envoy: &mut impl EnvoyHttpFilter, status: u32, message: &str) {
        self.phase = Phase::Replied;
        let body = error_json(status, message);
        envoy.send_response(
            status,
            &[("content-type", "application/json")],
            &body,
            "inference_scheduler_rejected",
        );
    }
}

/// The placeholder policy: rendezvous hashing of the prompt prefix over the routable members.
fn pick_member(cluster: &str, key: &[u8]) -> Option<String> {
    let snapshot = pool::members(cluster)?;
    let routable: Vec<&str> = snapshot.routable().map(|m| m.address.as_str()).collect();
    let index = scheduler::rendezvous::pick(key, routable.iter().copied())?;
    Some(routable[index].to_owned())
}
