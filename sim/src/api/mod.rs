//! HTTP routing for one pod: vLLM's OpenAI endpoints, the worker endpoints SGLang's and vLLM's
//! routers call, and the admin endpoints for faults and resets. Every response names the pod
//! in `x-sim-pod`.

mod admin;
mod error;
mod generate;
mod info;
mod prompt;
mod response;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

pub use error::ApiError;
pub use response::TokenStream;

use crate::pod::Pod;

pub type Body = Either<Full<Bytes>, TokenStream>;

/// What a handler produced, before headers common to all responses are added.
pub enum ApiResponse {
    Full {
        status: StatusCode,
        content_type: &'static str,
        body: Bytes,
    },
    Stream(TokenStream),
}

/// Returned instead of a response to make hyper drop the connection (fault injection).
#[derive(Debug)]
pub struct ConnectionCut;

impl std::fmt::Display for ConnectionCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed by fault injection")
    }
}

impl std::error::Error for ConnectionCut {}

pub async fn handle(
    pod: Arc<Pod>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ConnectionCut> {
    if !request.uri().path().starts_with("/admin/") {
        let faults = pod.faults();
        if faults.hang {
            pod.stopped().await;
            return Err(ConnectionCut);
        }
        if faults.close_connections {
            return Err(ConnectionCut);
        }
    }
    let log = pod
        .config
        .log_requests
        .then(|| format!("{} {}", request.method(), request.uri().path()));
    let answer = match route(&pod, request).await {
        Ok(answer) => answer,
        Err(error) => json_response(error.status, &error.body()),
    };
    let pod_header = HeaderValue::from(pod.index);
    let mut response = match answer {
        ApiResponse::Full {
            status,
            content_type,
            body,
        } => {
            let mut response = Response::new(Either::Left(Full::new(body)));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        ApiResponse::Stream(stream) => {
            let mut response = Response::new(Either::Right(stream));
            let headers = response.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            );
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
    };
    response.headers_mut().insert("x-sim-pod", pod_header);
    if let Some(line) = log {
        eprintln!(
            "inference-sim: pod {}: {line} -> {}",
            pod.index,
            response.status().as_u16()
        );
    }
    Ok(response)
}

/// Every path `route` serves, to tell a wrong method (405) from an unknown path (404).
const KNOWN_PATHS: [&str; 18] = [
    "/v1/completions",
    "/v1/chat/completions",
    "/health",
    "/metrics",
    "/v1/models",
    "/version",
    "/server_info",
    "/get_server_info",
    "/model_info",
    "/get_model_info",
    "/get_load",
    "/v1/loads",
    "/kv_event_sources",
    "/tokenize",
    "/v1/completions/render",
    "/v1/chat/completions/render",
    "/admin/fault",
    "/admin/reset",
];

async fn route(pod: &Arc<Pod>, request: Request<Incoming>) -> Result<ApiResponse, ApiError> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let get = method == Method::GET;
    let post = method == Method::POST;
    match path.as_str() {
        "/v1/completions" | "/v1/chat/completions" if post => {
            inject_inference_faults(pod).await?;
            let body = read_body(pod, request).await?;
            if path == "/v1/completions" {
                generate::completions(pod.clone(), body).await
            } else {
                generate::chat_completions(pod.clone(), body).await
            }
        }
        "/health" if get => Ok(ApiResponse::Full {
            status: StatusCode::OK,
            content_type: "text/plain",
            body: Bytes::new(),
        }),
        "/metrics" if get => Ok(info::metrics(pod)),
        "/v1/models" if get => Ok(info::models(pod)),
        "/version" if get => Ok(info::version()),
        "/server_info" | "/get_server_info" if get => Ok(info::server_info(pod)),
        "/model_info" | "/get_model_info" if get => Ok(info::model_info(pod)),
        "/get_load" | "/v1/loads" if get => Ok(info::load(pod)),
        // No KV events are published; vllm-router 0.1.17 parses an object here, not a list.
        "/kv_event_sources" if get => Ok(json_response(StatusCode::OK, &serde_json::json!({}))),
        "/tokenize" if post => info::tokenize(pod, &read_body(pod, request).await?),
        "/v1/completions/render" if post => {
            info::render_completion(pod, &read_body(pod, request).await?)
        }
        "/v1/chat/completions/render" if post => {
            info::render_chat(pod, &read_body(pod, request).await?)
        }
        "/admin/fault" if get => Ok(json_response(StatusCode::OK, &pod.faults())),
        "/admin/fault" if post => admin::set_faults(pod, &read_body(pod, request).await?),
        "/admin/reset" if post => Ok(admin::reset(pod).await),
        known if KNOWN_PATHS.contains(&known) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        )),
        _ => {
            // Logged so that what an unfamiliar client expects of a worker shows up.
            eprintln!(
                "inference-sim: pod {}: no route for {method} {path}",
                pod.index
            );
            Err(ApiError::not_found(format!("no route for {method} {path}")))
        }
    }
}

async fn inject_inference_faults(pod: &Pod) -> Result<(), ApiError> {
    let faults = pod.faults();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if faults.error_rate > 0.0 && fastrand::f64() < faults.error_rate {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected fault: internal error",
        ));
    }
    Ok(())
}

async fn read_body(pod: &Pod, request: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limit = pod.config.max_body_bytes;
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds {limit} bytes"),
        )),
        Err(error) => Err(ApiError::bad_request(format!(
            "could not read the request body: {error}"
        ))),
    }
}

pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("invalid request body: {error}")))
}

pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> ApiResponse {
    let body = serde_json::to_vec(value).expect("serialising plain data cannot fail");
    ApiResponse::Full {
        status,
        content_type: "application/json",
        body: Bytes::from(body),
    }
}
