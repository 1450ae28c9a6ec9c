//! Read-only endpoints: models, metrics, and what SGLang's and vLLM's routers ask a worker.
//! None of them reports a model or tokenizer path: a router would try to download it.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::generate::resolve_model;
use super::prompt::{chat_tokens, completion_tokens, Message, PromptInput};
use super::{json_response, parse_json, ApiError, ApiResponse};
use crate::pod::Pod;
use crate::tokenizer::pieces;

pub fn metrics(pod: &Pod) -> ApiResponse {
    ApiResponse::Full {
        status: StatusCode::OK,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        body: Bytes::from(pod.metrics().encode()),
    }
}

pub fn version() -> ApiResponse {
    json_response(
        StatusCode::OK,
        &json!({"version": concat!("inference-sim-", env!("CARGO_PKG_VERSION"))}),
    )
}

pub fn models(pod: &Pod) -> ApiResponse {
    let config = &pod.config;
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let card = |id: &str, parent: Option<&str>| {
        json!({
            "id": id,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": id,
            "parent": parent,
            "max_model_len": config.max_model_len,
        })
    };
    let mut data = vec![card(&config.model, None)];
    data.extend(
        config
            .lora_adapters
            .iter()
            .map(|name| card(name, Some(&config.model))),
    );
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

pub fn server_info(pod: &Pod) -> ApiResponse {
    let config = &pod.config;
    json_response(
        StatusCode::OK,
        &json!({
            "served_model_name": config.model,
            "max_model_len": config.max_model_len,
            "context_length": config.max_model_len,
            "block_size": config.block_size,
            "page_size": config.block_size,
            "num_gpu_blocks": config.kv_blocks,
            "max_total_num_tokens": config.kv_blocks * config.block_size,
            "max_num_seqs": config.max_running_seqs,
            "max_running_requests": config.max_running_seqs,
            "max_num_batched_tokens": config.max_batched_tokens,
            "max_loras": config.max_loras,
            "lora_adapters": config.lora_adapters,
            "tp_size": 1,
            "dp_size": 1,
            "enable_prefix_caching": true,
            "version": concat!("inference-sim-", env!("CARGO_PKG_VERSION")),
        }),
    )
}

pub fn model_info(pod: &Pod) -> ApiResponse {
    let config = &pod.config;
    json_response(
        StatusCode::OK,
        &json!({
            "served_model_name": config.model,
            "is_generation": true,
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "max_model_len": config.max_model_len,
        }),
    )
}

/// Load as SGLang's workers report it, in both its older flat shape and its per-rank `loads`
/// list (routers' power-of-two reads `load` or sums the ranks' token counts).
pub fn load(pod: &Pod) -> ApiResponse {
    let metrics = pod.metrics();
    let running = metrics.num_requests_running.get();
    let waiting = metrics.num_requests_waiting.get();
    let capacity = (pod.config.kv_blocks * pod.config.block_size) as f64;
    let tokens = (metrics.kv_cache_usage() * capacity).round() as u64;
    json_response(
        StatusCode::OK,
        &json!({
            "load": running + waiting,
            "num_reqs": running + waiting,
            "num_running_reqs": running,
            "num_waiting_reqs": waiting,
            "num_tokens": tokens,
            "loads": [{
                "dp_rank": 0,
                "num_reqs": running + waiting,
                "num_waiting_reqs": waiting,
                "num_tokens": tokens,
                "num_total_tokens": tokens,
            }],
        }),
    )
}

/// vLLM's `/tokenize` body: a completion prompt or chat messages.
#[derive(Deserialize)]
struct TokenizeRequest {
    model: Option<String>,
    prompt: Option<PromptInput>,
    messages: Option<Vec<Message>>,
    add_special_tokens: Option<bool>,
}

pub fn tokenize(pod: &Pod, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let request: TokenizeRequest = parse_json(body)?;
    resolve_model(pod, request.model.as_deref())?;
    let (text, tokens) = match (&request.prompt, &request.messages) {
        (Some(PromptInput::Text(text)), None) => {
            let add_special = request.add_special_tokens.unwrap_or(true);
            let tokens = completion_tokens(
                request.prompt.as_ref().expect("matched Some"),
                add_special,
                pod.tokenizer.as_deref(),
            )?;
            let text = if add_special {
                format!("<|begin_of_text|>{text}")
            } else {
                text.clone()
            };
            (text, tokens)
        }
        (None, Some(messages)) => chat_tokens(messages, pod.tokenizer.as_deref())?,
        _ => {
            return Err(ApiError::bad_request(
                "give either `prompt` (a string) or `messages`",
            ))
        }
    };
    let token_strs: Vec<String> = match &pod.tokenizer {
        Some(tokenizer) => tokenizer.token_strs(&tokens),
        None => pieces(&text).map(str::to_owned).collect(),
    };
    debug_assert_eq!(token_strs.len(), tokens.len());
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "count": tokens.len(),
            "max_model_len": pod.config.max_model_len,
            "tokens": tokens,
            "token_strs": token_strs,
        }),
    ))
}

#[derive(Deserialize)]
struct RenderCompletion {
    model: Option<String>,
    prompt: PromptInput,
    max_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct RenderChat {
    model: Option<String>,
    messages: Vec<Message>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
}

/// vLLM's renderer API: the token ids a completion request would run on.
pub fn render_completion(pod: &Pod, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let request: RenderCompletion = parse_json(body)?;
    resolve_model(pod, request.model.as_deref())?;
    let tokens = completion_tokens(&request.prompt, true, pod.tokenizer.as_deref())?;
    let prompt = match &request.prompt {
        PromptInput::Text(text) => Some(text.clone()),
        PromptInput::Texts(texts) => texts.first().cloned(),
        _ => None,
    };
    let model = request.model.unwrap_or_else(|| pod.config.model.clone());
    Ok(json_response(
        StatusCode::OK,
        &json!([{
            "request_id": format!("cmpl-sim{}-{}", pod.index, pod.next_request_id()),
            "token_ids": tokens,
            "prompt_token_ids": tokens,
            "prompt": prompt,
            "sampling_params": {"max_tokens": request.max_tokens},
            "model": model,
        }]),
    ))
}

pub fn render_chat(pod: &Pod, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let request: RenderChat = parse_json(body)?;
    resolve_model(pod, request.model.as_deref())?;
    let (text, tokens) = chat_tokens(&request.messages, pod.tokenizer.as_deref())?;
    let model = request.model.unwrap_or_else(|| pod.config.model.clone());
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "request_id": format!("chatcmpl-sim{}-{}", pod.index, pod.next_request_id()),
            "token_ids": tokens,
            "prompt_token_ids": tokens,
            "prompt": text,
            "sampling_params": {"max_tokens": request.max_completion_tokens.or(request.max_tokens)},
            "model": model,
        }),
    ))
}
