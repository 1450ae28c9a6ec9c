//! Small client helpers shared by the tests: a completion through the gateway, Prometheus
//! samples from Envoy's admin, and waiting for a condition.

use std::time::{Duration, Instant};

/// Header naming the pod that served a request.
pub const DESTINATION: &str = "x-gateway-destination-endpoint";

/// Sends a non-streaming completion; returns the status and the pod that served it.
pub fn complete(gateway: &str, prompt: &str, max_tokens: u32) -> (u16, Option<String>) {
    let body = serde_json::json!({ "model": "meta-llama/Llama-3.1-8B-Instruct", "prompt": prompt, "max_tokens": max_tokens });
    match ureq::post(&format!("{gateway}/v1/completions")).send_string(&body.to_string()) {
        Ok(r) => (r.status(), r.header(DESTINATION).map(str::to_owned)),
        Err(ureq::Error::Status(code, r)) => (code, r.header(DESTINATION).map(str::to_owned)),
        Err(e) => panic!("transport error: {e}"),
    }
}

/// Envoy's Prometheus text.
pub fn prometheus(admin: &str) -> String {
    ureq::get(&format!("{admin}/stats/prometheus"))
        .call()
        .unwrap()
        .into_string()
        .unwrap()
}

/// The value of the first sample whose line starts with `prefix`.
pub fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// Polls `check` every 50 ms until it holds, for at most `limit`; panics naming `what`.
pub fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sets a simulator pod's faults (`{}` clears them).
pub fn set_fault(pod_url: &str, faults: &str) {
    ureq::post(&format!("{pod_url}/admin/fault"))
        .send_string(faults)
        .expect("set fault");
}
