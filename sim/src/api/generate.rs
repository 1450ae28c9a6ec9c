//! `POST /v1/completions` and `POST /v1/chat/completions`.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::StatusCode;

use super::error::ApiError;
use super::prompt::{chat_tokens, completion_tokens, ChatRequest, CommonParams, CompletionRequest};
use super::response::{Api, ResponseFormat, TokenStream};
use super::{json_response, parse_json, ApiResponse};
use crate::engine::Request;
use crate::kv_cache::extend_block_hashes;
use crate::pod::Pod;
use crate::progress::{Finish, Progress};

pub async fn completions(pod: Arc<Pod>, body: Bytes) -> Result<ApiResponse, ApiError> {
    let request: CompletionRequest = parse_json(&body)?;
    let prompt = completion_tokens(&request.prompt, true, pod.tokenizer.as_deref())?;
    if prompt.is_empty() {
        return Err(ApiError::bad_request("prompt must not be empty"));
    }
    generate(
        pod,
        Api::Completions,
        request.model,
        prompt,
        &request.common,
        request.common.max_tokens,
    )
    .await
}

pub async fn chat_completions(pod: Arc<Pod>, body: Bytes) -> Result<ApiResponse, ApiError> {
    let request: ChatRequest = parse_json(&body)?;
    let (_, prompt) = chat_tokens(&request.messages, pod.tokenizer.as_deref())?;
    let max_tokens = request.max_completion_tokens.or(request.common.max_tokens);
    generate(
        pod,
        Api::Chat,
        request.model,
        prompt,
        &request.common,
        max_tokens,
    )
    .await
}

/// Which adapter, if any, serves `model`; `None` means the base model.
pub fn resolve_model(pod: &Pod, model: Option<&str>) -> Result<Option<usize>, ApiError> {
    let Some(model) = model else { return Ok(None) };
    if model == pod.config.model {
        return Ok(None);
    }
    match pod
        .config
        .lora_adapters
        .iter()
        .position(|name| name == model)
    {
        Some(adapter) => Ok(Some(adapter)),
        None => Err(ApiError::not_found(format!(
            "The model `{model}` does not exist."
        ))),
    }
}

async fn generate(
    pod: Arc<Pod>,
    api: Api,
    model: Option<String>,
    prompt: Vec<u32>,
    params: &CommonParams,
    max_tokens: Option<u32>,
) -> Result<ApiResponse, ApiError> {
    let adapter = resolve_model(&pod, model.as_deref())?;
    params.check_n()?;
    let config = &pod.config;
    let prompt_len = prompt.len();
    let seed = BuildHasherDefault::<DefaultHasher>::default().hash_one(&prompt);
    let (tokens, finish) = match max_tokens {
        Some(0) => {
            return Err(ApiError::bad_request(
                "max_tokens must be at least 1, got 0.",
            ))
        }
        Some(requested) => (requested, Finish::Length),
        None => {
            let room = config.max_model_len.saturating_sub(prompt_len).max(1) as u64;
            let natural = 1 + seed % u64::from(config.natural_completion_tokens);
            (natural.min(room) as u32, Finish::Stop)
        }
    };
    if prompt_len + tokens as usize > config.max_model_len {
        return Err(ApiError::bad_request(format!(
            "This model's maximum context length is {} tokens. However, you requested {} tokens \
             ({prompt_len} in the messages, {tokens} in the completion). Please reduce the length \
             of the messages or completion.",
            config.max_model_len,
            prompt_len + tokens as usize
        )));
    }

    let mut block_hashes = Vec::with_capacity(prompt_len / config.block_size);
    extend_block_hashes(&mut block_hashes, &prompt, config.block_size, adapter);
    let progress = Arc::new(Progress::default());
    let request = Request {
        prompt,
        block_hashes,
        max_tokens: tokens,
        finish,
        adapter,
        seed,
        output_ids: pod.tokenizer.as_ref().map(|t| t.output_ids()),
        progress: progress.clone(),
    };
    if !pod.submit(request) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the pod is shutting down",
        ));
    }

    let prefix = match api {
        Api::Completions => "cmpl",
        Api::Chat => "chatcmpl",
    };
    let format = ResponseFormat {
        api,
        id: format!("{prefix}-sim{}-{}", pod.index, pod.next_request_id()),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: model.unwrap_or_else(|| config.model.clone()),
        seed,
        prompt_tokens: prompt_len as u32,
        include_usage: params.include_usage(),
    };
    if params.stream {
        return Ok(ApiResponse::Stream(TokenStream::new(
            progress,
            pod.clone(),
            format,
        )));
    }
    let guard = CancelOnDrop(progress);
    let snapshot = guard.0.finished().await;
    if snapshot.finish == Some(Finish::Aborted) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request aborted by the pod",
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &format.complete_body(&snapshot),
    ))
}

/// Frees the engine's sequence if a non-streaming client goes away before the answer.
struct CancelOnDrop(Arc<Progress>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
