//! One stream's filter behind the panic guard: what Envoy holds for us per stream.
//!
//! A panic in a request-phase hook answers the request with a JSON 500 (unless we already
//! answered) and marks the stream failed; once the response has begun a panic can only be
//! contained, so the stream passes through. A failed stream never runs filter code again.

use std::sync::Arc;

use crate::envoy::EnvoyHttpFilter;
use crate::error_body::error_json;
use crate::http_filter::InferenceFilter;
use crate::module_config::ModuleConfig;
use crate::panic_guard::catch;

pub struct GuardedStream {
    filter: InferenceFilter,
    failed: bool,
}

impl GuardedStream {
    pub fn new(config: Arc<ModuleConfig>) -> Self {
        GuardedStream {
            filter: InferenceFilter::new(config),
            failed: false,
        }
    }

    /// Runs a request-phase hook; `on_failure` is returned after a panic (now or earlier).
    pub fn request<H: EnvoyHttpFilter, R>(
        &mut self,
        envoy: &mut H,
        hook: &str,
        on_failure: R,
        work: impl FnOnce(&mut InferenceFilter, &mut H) -> R,
    ) -> R {
        if self.failed {
            return on_failure;
        }
        match catch(hook, || work(&mut self.filter, envoy)) {
            Ok(status) => status,
            Err(message) => {
                self.failed = true;
                if !self.filter.replied() {
                    let body = error_json(
                        500,
                        &format!("inference-scheduler internal error: {message}"),
                    );
                    let headers = [("content-type", "application/json")];
                    envoy.send_response(500, &headers, &body, "inference_scheduler_panic");
                }
                on_failure
            }
        }
    }

    /// Runs a response-phase hook; after a panic the response passes through (`pass`).
    pub fn response<H: EnvoyHttpFilter, R>(
        &mut self,
        envoy: &mut H,
        hook: &str,
        pass: R,
        work: impl FnOnce(&mut InferenceFilter, &mut H) -> R,
    ) -> R {
        if self.failed {
            return pass;
        }
        match catch(hook, || work(&mut self.filter, envoy)) {
            Ok(status) => status,
            Err(_) => {
                self.failed = true;
                pass
            }
        }
    }
}
