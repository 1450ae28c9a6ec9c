//! `/admin/*`: faults and resets for tests and benchmarks. These never hang or close, whatever
//! the faults, so a test can always clear what it set.

use std::sync::Arc;

use hyper::StatusCode;

use super::{json_response, parse_json, ApiError, ApiResponse};
use crate::config::FaultConfig;
use crate::pod::Pod;

/// Replaces the pod's faults with the body (`{}` clears them). `die` stops the pod just after
/// answering.
pub fn set_faults(pod: &Arc<Pod>, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let faults: FaultConfig = parse_json(body)?;
    if !(0.0..=1.0).contains(&faults.error_rate) {
        return Err(ApiError::bad_request("error_rate must be between 0 and 1"));
    }
    let response = json_response(StatusCode::OK, &faults);
    if faults.die {
        // Let this answer reach the client before the pod drops every connection.
        let pod = pod.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            pod.set_faults(faults);
        });
    } else {
        pod.set_faults(faults);
    }
    Ok(response)
}

/// Aborts all requests, empties the prefix cache and adapter slots, and zeroes the metrics.
pub async fn reset(pod: &Pod) -> ApiResponse {
    pod.reset().await;
    json_response(StatusCode::OK, &serde_json::json!({"reset": true}))
}
