//! `--tokenizer`: with a real tokenizer (the fixture: byte-level BPE with Llama-3's special
//! tokens and a Llama-3-format chat template), the simulator's `/tokenize`, renderer and prefix
//! cache use the ids the routing module computes (`prompt_tokenizer::PromptTokenizer`), and the
//! KV events carry them: same tokens, same block keys.

use std::path::PathBuf;
use std::time::Duration;

use inference_sim::{KvEventsEncoding, PodConfig, Simulator};
use prompt_tokenizer::{write_trained_tokenizer, PromptTokenizer, TokenizerConfig};
use rmpv::Value;
use scheduler::prefix::token_blocks::{chain_seed, token_block_keys};
use scheduler::request::{parse, ApiKind};
use serde_json::json;
use zeromq::{Socket, SocketRecv, SubSocket};

mod common;

const BLOCK_SIZE: usize = 16;

fn setup(name: &str) -> (PathBuf, PromptTokenizer) {
    let dir = std::env::temp_dir().join(format!("sim-tokenizer-{}-{name}", std::process::id()));
    let path = write_trained_tokenizer(&dir);
    let module = PromptTokenizer::load(&TokenizerConfig::new(&path)).unwrap();
    (path, module)
}

/// What the module computes for a request body.
fn module_tokens(module: &PromptTokenizer, body: &serde_json::Value, kind: ApiKind) -> Vec<u32> {
    let bytes = body.to_string();
    let request = parse(bytes.as_bytes(), kind).unwrap();
    let mut out = Vec::new();
    module.request_tokens(&request, &mut out).unwrap();
    out
}

fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn system_prompt() -> String {
    "You are a careful assistant that answers questions about the model server, its prefix \
     cache and the pods that hold the blocks of every prompt. "
        .repeat(6)
}

#[tokio::test]
async fn tokenize_and_render_use_the_tokenizer_as_the_module_does() {
    let (path, module) = setup("tokenize");
    let sim = common::start(
        PodConfig {
            tokenizer: Some(path),
            ..common::fast_config()
        },
        1,
    );
    let addr = sim.addrs()[0];
    let prompt = format!("{}What is a prefix cache?", system_prompt());
    let body = json!({"prompt": prompt});
    let answer = common::post(addr, "/tokenize", &body).await.json();
    let expected = module_tokens(&module, &body, ApiKind::Completions);
    assert_eq!(ids(&answer["tokens"]), expected);
    assert_eq!(answer["count"], expected.len());
    assert_eq!(answer["token_strs"][0], "<|begin_of_text|>");

    let chat = json!({"messages": [
        {"role": "system", "content": system_prompt()},
        {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]},
    ]});
    let expected = module_tokens(&module, &chat, ApiKind::Chat);
    let answer = common::post(addr, "/tokenize", &chat).await.json();
    assert_eq!(ids(&answer["tokens"]), expected);
    let rendered = common::post(addr, "/v1/chat/completions/render", &chat)
        .await
        .json();
    assert_eq!(ids(&rendered["token_ids"]), expected);
    assert!(
        rendered["prompt"]
            .as_str()
            .unwrap()
            .contains("<|start_header_id|>user<|end_header_id|>\n\nfirst\nsecond<|eot_id|>"),
        "{rendered}"
    );
    let rendered = common::post(addr, "/v1/completions/render", &body)
        .await
        .json();
    assert_eq!(
        ids(&rendered[0]["token_ids"]),
        module_tokens(&module, &body, ApiKind::Completions)
    );

    // Out-of-vocabulary ids are checked against the tokenizer's vocabulary.
    let answer = common::post(
        addr,
        "/v1/completions",
        &json!({"prompt": [1, 4_000_000], "max_tokens": 1}),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
}

/// Tokens of every `BlockStored` event received within `wait`, in order.
async fn stored_tokens(socket: &mut SubSocket, wait: Duration) -> Vec<u32> {
    let mut tokens = Vec::new();
    while let Ok(Ok(message)) = tokio::time::timeout(wait, socket.recv()).await {
        let payload = message.get(2).expect("topic, seq, payload");
        let batch = rmpv::decode::read_value(&mut &payload[..]).unwrap();
        for event in batch[1].as_array().unwrap() {
            let fields: Vec<(&str, &Value)> = event
                .as_map()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.as_str().unwrap(), v))
                .collect();
            let field = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
            if field("type").and_then(Value::as_str) == Some("BlockStored") {
                let ids = field("token_ids").unwrap().as_array().unwrap();
                tokens.extend(ids.iter().map(|v| v.as_u64().unwrap() as u32));
            }
        }
    }
    tokens
}

/// One pod tokenizing with `tokenizer` and publishing its KV events (named fields), and a
/// subscriber to them, connected.
async fn publishing_pod(tokenizer: PathBuf) -> (Simulator, SubSocket) {
    let sim = common::start(
        PodConfig {
            tokenizer: Some(tokenizer),
            kv_events_port: Some(0),
            kv_events_encoding: KvEventsEncoding::Map,
            ..common::fast_config()
        },
        1,
    );
    let mut socket = SubSocket::new();
    socket
        .connect(&sim.pods()[0].kv_events_endpoint().unwrap())
        .await
        .unwrap();
    socket.subscribe("").await.unwrap();
    // A SUB socket misses what is published before its subscription reaches the publisher.
    tokio::time::sleep(Duration::from_millis(300)).await;
    (sim, socket)
}

fn keys(tokens: &[u32]) -> Vec<u64> {
    let mut out = Vec::new();
    token_block_keys(chain_seed(None), tokens, BLOCK_SIZE, &mut out);
    out
}

#[tokio::test]
async fn kv_events_carry_the_module_side_tokens() {
    let (path, module) = setup("events");
    let (sim, mut socket) = publishing_pod(path).await;
    let pod = &sim.pods()[0];

    for (body, kind, path) in [
        (
            json!({"prompt": format!("{}Where do blocks live?", system_prompt()), "max_tokens": 1}),
            ApiKind::Completions,
            "/v1/completions",
        ),
        (
            json!({"messages": [
                {"role": "system", "content": format!("Chat. {}", system_prompt())},
                {"role": "user", "content": "Which pod holds my prefix?"},
            ], "max_tokens": 1}),
            ApiKind::Chat,
            "/v1/chat/completions",
        ),
    ] {
        let answer = common::post(pod.addr(), path, &body).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let stored = stored_tokens(&mut socket, Duration::from_millis(500)).await;
        let expected = module_tokens(&module, &body, kind);
        let full = expected.len() / BLOCK_SIZE * BLOCK_SIZE;
        assert!(full >= 4 * BLOCK_SIZE, "{} tokens", expected.len());
        assert!(
            stored.len() >= full,
            "{} stored for {} prompt tokens",
            stored.len(),
            expected.len()
        );
        assert_eq!(&stored[..full], &expected[..full], "{path}");
        assert_eq!(
            keys(&stored)[..full / BLOCK_SIZE],
            keys(&expected)[..],
            "{path}: same block keys"
        );
    }
}

#[tokio::test]
async fn generated_words_get_the_tokenizer_ids_of_their_text() {
    let (path, module) = setup("output");
    let (sim, mut socket) = publishing_pod(path).await;
    let pod = &sim.pods()[0];

    let prompt_text = system_prompt().trim_end().to_owned();
    let body = json!({"prompt": prompt_text, "max_tokens": 64});
    let answer = common::post(pod.addr(), "/v1/completions", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let text = answer.json()["choices"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored = stored_tokens(&mut socket, Duration::from_millis(500)).await;
    let prompt = module_tokens(&module, &body, ApiKind::Completions);
    // The answer's blocks hold the ids the text re-tokenizes to, so a next turn that sends the
    // answer back finds them.
    let continued = module
        .encode_whole(&format!("{prompt_text}{text}"), true)
        .unwrap();
    let full = stored.len();
    assert!(
        full > prompt.len() + 32,
        "{full} stored, {} prompt tokens",
        prompt.len()
    );
    assert_eq!(&stored[..], &continued[..full]);
}

#[test]
fn a_bad_tokenizer_path_stops_the_start_with_the_file_named() {
    let error = inference_sim::spawn_pods(
        PodConfig {
            tokenizer: Some("/nonexistent/tokenizer.json".into()),
            ..common::fast_config()
        },
        1,
    )
    .err()
    .expect("no pods without the tokenizer");
    let message = error.to_string();
    assert!(
        message.contains("--tokenizer") && message.contains("/nonexistent/tokenizer.json"),
        "{message}"
    );
}
