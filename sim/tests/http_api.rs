//! The OpenAI API and router-facing endpoints over real HTTP.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn streams_completions_as_sse_with_usage_and_done() {
    let sim = start(fast_config(), 1);
    let addr = sim.pods()[0].addr();
    let body = json!({"model": MODEL, "prompt": "Tell me a story.", "max_tokens": 12, "stream": true,
                      "stream_options": {"include_usage": true}});
    let streamed = stream(addr, "/v1/completions", &body).await;
    assert_eq!(streamed.status, 200);
    let (done, rest) = streamed.events.split_last().unwrap();
    assert_eq!(done, "[DONE]");
    let (usage, tokens) = rest.split_last().unwrap();
    assert_eq!(tokens.len(), 12, "one chunk per token");
    for (i, chunk) in tokens.iter().enumerate() {
        let chunk: Value = serde_json::from_str(chunk).unwrap();
        assert_eq!(chunk["object"], "text_completion");
        assert_eq!(chunk["model"], MODEL);
        assert!(chunk["choices"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with(' '));
        let finish = if i == 11 {
            json!("length")
        } else {
            Value::Null
        };
        assert_eq!(chunk["choices"][0]["finish_reason"], finish);
    }
    let usage: Value = serde_json::from_str(usage).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 12);
    assert_eq!(usage["usage"]["prompt_tokens"], 6, "BOS + 5 tokens");
    assert_eq!(usage["usage"]["total_tokens"], 18);
}

#[tokio::test]
async fn streams_chat_with_role_first_and_finish_last() {
    let sim = start(fast_config(), 1);
    let addr = sim.pods()[0].addr();
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                      "max_completion_tokens": 5, "stream": true});
    let streamed = stream(addr, "/v1/chat/completions", &body).await;
    assert_eq!(streamed.events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = streamed.events[..streamed.events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(
        chunks.len(),
        6,
        "role chunk + 5 tokens, no usage unless asked"
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "length");
    let text: String = chunks[1..]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text.split_whitespace().count(), 5);
}

#[tokio::test]
async fn answers_non_streaming_requests_with_usage() {
    let sim = start(fast_config(), 1);
    let addr = sim.pods()[0].addr();
    let answer = post(
        addr,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "a b c", "max_tokens": 4}),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.pod(), "0");
    let body = answer.json();
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 4);
    // Without max_tokens the model stops on its own, deterministically per prompt.
    let chat = json!({"messages": [{"role": "user", "content": "Why?"}]});
    let first = post(addr, "/v1/chat/completions", &chat).await.json();
    let again = post(addr, "/v1/chat/completions", &chat).await.json();
    assert_eq!(first["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        first["choices"][0]["message"]["content"],
        again["choices"][0]["message"]["content"]
    );
    assert_eq!(
        first["model"], MODEL,
        "a missing model means the base model"
    );
}

#[tokio::test]
async fn rejects_bad_requests_as_vllm_does() {
    let config = PodConfig {
        max_body_bytes: 4096,
        max_model_len: 1000,
        ..fast_config()
    };
    let sim = start(config, 1);
    let addr = sim.pods()[0].addr();
    let check = |answer: Answer, status: u16, needle: &str| {
        assert_eq!(answer.status, status, "{}", answer.body);
        let body = answer.json();
        assert_eq!(body["error"]["code"], status);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        assert_eq!(answer.pod(), "0");
    };
    check(
        post(
            addr,
            "/v1/completions",
            &json!({"model": "gpt-4", "prompt": "x"}),
        )
        .await,
        404,
        "gpt-4",
    );
    check(
        call(addr, "POST", "/v1/completions", Some("{not json")).await,
        400,
        "invalid request body",
    );
    check(
        post(addr, "/v1/completions", &json!({"model": MODEL})).await,
        400,
        "prompt",
    );
    check(
        post(
            addr,
            "/v1/completions",
            &json!({"prompt": "x", "max_tokens": 0}),
        )
        .await,
        400,
        "at least 1",
    );
    check(
        post(
            addr,
            "/v1/completions",
            &json!({"prompt": "x", "max_tokens": -5}),
        )
        .await,
        400,
        "invalid",
    );
    check(
        post(
            addr,
            "/v1/completions",
            &json!({"prompt": "x", "max_tokens": 999}),
        )
        .await,
        400,
        "maximum context length is 1000",
    );
    check(
        post(addr, "/v1/completions", &json!({"prompt": "x", "n": 2})).await,
        400,
        "n=2",
    );
    check(
        post(addr, "/v1/chat/completions", &json!({"messages": []})).await,
        400,
        "messages",
    );
    let huge = json!({"prompt": "x".repeat(10_000)});
    check(
        post(addr, "/v1/completions", &huge).await,
        413,
        "4096 bytes",
    );
    check(get(addr, "/v1/completions").await, 405, "GET");
    check(get(addr, "/no/such/path").await, 404, "/no/such/path");
}

#[tokio::test]
async fn exposes_vllm_metrics() {
    let config = PodConfig {
        lora_adapters: vec!["sql-lora".into()],
        ..fast_config()
    };
    let sim = start(config, 1);
    let addr = sim.pods()[0].addr();
    post(
        addr,
        "/v1/completions",
        &json!({"model": "sql-lora", "prompt": "select", "max_tokens": 3}),
    )
    .await;
    let answer = get(addr, "/metrics").await;
    assert_eq!(answer.status, 200);
    for name in [
        "vllm:num_requests_running{",
        "vllm:num_requests_waiting{",
        "vllm:kv_cache_usage_perc{",
        "vllm:gpu_cache_usage_perc{",
        "vllm:prefix_cache_queries_total{",
        "vllm:prefix_cache_hits_total{",
        "vllm:lora_requests_info{",
        "vllm:cache_config_info{",
        "vllm:time_to_first_token_seconds_bucket{",
        "vllm:inter_token_latency_seconds_bucket{",
        "vllm:e2e_request_latency_seconds_count{",
        "vllm:request_success_total{",
        "vllm:generation_tokens_total{",
        "vllm:prompt_tokens_total{",
    ] {
        assert!(
            answer.body.lines().any(|l| l.starts_with(name)),
            "missing {name}"
        );
    }
    assert!(
        answer.body.contains("block_size=\"16\"")
            && answer.body.contains("num_gpu_blocks=\"28160\"")
    );
    assert!(answer.body.contains(&format!("model_name=\"{MODEL}\"")));
    assert_eq!(metric(&answer.body, "vllm:generation_tokens_total"), 3.0);
    assert!(answer.body.contains("max_lora=\"4\""));
}

#[tokio::test]
async fn a_repeated_prompt_hits_the_prefix_cache_and_lowers_ttft() {
    // Real-time scale so the prefill difference dominates HTTP noise.
    let sim = start(
        PodConfig {
            time_scale: 0.5,
            ..PodConfig::default()
        },
        1,
    );
    let addr = sim.pods()[0].addr();
    let body = json!({"prompt": prompt(1, 2000), "max_tokens": 2, "stream": true,
                      "stream_options": {"include_usage": true}});
    let cold = stream(addr, "/v1/completions", &body).await;
    let hits_after_cold = metric(
        &get(addr, "/metrics").await.body,
        "vllm:prefix_cache_hits_total",
    );
    let warm = stream(addr, "/v1/completions", &body).await;
    let metrics = get(addr, "/metrics").await.body;
    assert_eq!(hits_after_cold, 0.0);
    assert!(metric(&metrics, "vllm:prefix_cache_hits_total") > 0.0);
    assert!(
        warm.ttft * 3 < cold.ttft,
        "warm {:?} vs cold {:?}",
        warm.ttft,
        cold.ttft
    );
    let usage: Value = serde_json::from_str(&warm.events[warm.events.len() - 2]).unwrap();
    let prompt_tokens = usage["usage"]["prompt_tokens"].as_u64().unwrap();
    let cached = usage["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached > 0 && prompt_tokens - cached <= 16,
        "{cached} of {prompt_tokens} cached"
    );
}

#[tokio::test]
async fn serves_what_sglang_and_vllm_routers_ask_a_worker() {
    let config = PodConfig {
        lora_adapters: vec!["a".into(), "b".into()],
        ..fast_config()
    };
    let sim = start(config, 2);
    let addr = sim.pods()[1].addr();
    assert_eq!(get(addr, "/health").await.status, 200);
    for path in [
        "/server_info",
        "/get_server_info",
        "/model_info",
        "/get_model_info",
    ] {
        let answer = get(addr, path).await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.pod(), "1");
        let body = answer.body.to_lowercase();
        assert!(
            !body.contains("model_path") && !body.contains("tokenizer_path"),
            "{path}: {body}"
        );
    }
    let models = get(addr, "/v1/models").await.json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [MODEL, "a", "b"]);
    let load = get(addr, "/get_load").await.json();
    assert_eq!(load["load"], 0);
    assert_eq!(get(addr, "/v1/loads").await.json(), load);
    assert_eq!(
        load["loads"][0]["num_tokens"], 0,
        "per-rank token load for SGLang's power-of-two"
    );
    assert_eq!(get(addr, "/kv_event_sources").await.json(), json!({}));

    let tokenized = post(
        addr,
        "/tokenize",
        &json!({"model": MODEL, "prompt": "Hello world"}),
    )
    .await
    .json();
    assert_eq!(tokenized["count"], 3);
    assert_eq!(tokenized["max_model_len"], 131072);
    assert_eq!(
        tokenized["token_strs"],
        json!(["<|begin_of_text|>", "Hello", " world"])
    );
    assert_eq!(tokenized["tokens"].as_array().unwrap().len(), 3);
    let chat = json!({"messages": [{"role": "user", "content": "Hello world"}]});
    let chat_tokens = post(addr, "/tokenize", &chat).await.json();
    let rendered = post(addr, "/v1/chat/completions/render", &chat)
        .await
        .json();
    assert_eq!(rendered["token_ids"], chat_tokens["tokens"]);
    let rendered = post(
        addr,
        "/v1/completions/render",
        &json!({"prompt": "Hello world"}),
    )
    .await
    .json();
    assert_eq!(rendered[0]["token_ids"], tokenized["tokens"]);
    assert!(rendered[0]["request_id"]
        .as_str()
        .unwrap()
        .starts_with("cmpl-"));
    assert_eq!(
        post(addr, "/tokenize", &json!({"model": "zzz", "prompt": "x"}))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn answers_http2_prior_knowledge_probes_at_once() {
    let sim = start(fast_config(), 1);
    let addr = sim.pods()[0].addr();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let probe = hyper::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = sender.send_request(probe).await.expect("HTTP/2 answer");
    assert_eq!(response.status(), 404);
    let health = hyper::Request::get(format!("http://{addr}/health"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(sender.send_request(health).await.unwrap().status(), 200);
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
}

#[tokio::test]
async fn pods_are_independent() {
    let sim = start(fast_config(), 2);
    let [a, b] = [sim.pods()[0].addr(), sim.pods()[1].addr()];
    let body = json!({"prompt": prompt(7, 100), "max_tokens": 1});
    post(a, "/v1/completions", &body).await;
    post(a, "/v1/completions", &body).await;
    let answer = post(b, "/v1/completions", &body).await;
    assert_eq!(answer.pod(), "1");
    assert!(
        metric(
            &get(a, "/metrics").await.body,
            "vllm:prefix_cache_hits_total"
        ) > 0.0
    );
    assert_eq!(
        metric(
            &get(b, "/metrics").await.body,
            "vllm:prefix_cache_hits_total"
        ),
        0.0
    );
}
