//! Precise prefix routing from the pods' own KV-cache events, end to end: simulated vLLM pods
//! publish their real prefix cache's events over ZeroMQ, Envoy with the module subscribes to
//! every pod, tokenizes each request with the same `tokenizer.json` the pods use, and routes by
//! what the pods hold — also after a pod evicted what this gateway routed there.

#![allow(clippy::result_large_err)] // ureq 2 errors carry the response; fine in tests

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use inference_sim::PodConfig;
use integration::client::{eventually, prometheus, sample, DESTINATION};
use integration::pods::{event_pods, fast_pods, EventPods};
use integration::{Envoy, EnvoyConfig};
use kv_events::{KvEventsConfig, KvEventsIndex};
use prompt_tokenizer::{PromptTokenizer, TokenizerConfig};
use scheduler::plugins::scorers::PreciseBlockIndex;
use scheduler::prefix::token_blocks::{chain_seed, token_block_keys};
use scheduler::request::{parse, ApiKind};

const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
const BLOCK: usize = 16;
/// Small caches, so a handful of prompts sent straight to a pod evicts the rest.
const KV_BLOCKS: usize = 96;

/// A profile that scores prefixes by the pods' events.
const FILTER_CONFIG: &str = r#"{"decision_header": true, "scheduler": {
    "default_profile": "precise",
    "profiles": {"precise": {"scorers": [
        {"type": "queue"}, {"type": "kv-cache"}, {"type": "precise-prefix"}]}}}}"#;

fn tokenizer_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = prompt_tokenizer::write_trained_tokenizer(dir.path());
    (dir, path)
}

fn pod_config(tokenizer: &Path) -> PodConfig {
    PodConfig {
        time_scale: 0.02,
        kv_blocks: KV_BLOCKS,
        block_size: BLOCK,
        max_model_len: KV_BLOCKS * BLOCK,
        tokenizer: Some(tokenizer.to_path_buf()),
        ..PodConfig::default()
    }
}

fn pool_config(pods: &EventPods, tokenizer: &Path) -> String {
    serde_json::json!({
        "kv_events": pods.kv_events,
        "tokenizer": {"path": tokenizer},
    })
    .to_string()
}

/// English-like text of about `words` words, distinct per `seed`.
fn text(seed: u64, words: usize) -> String {
    const WORDS: [&str; 16] = [
        "the", "model", "server", "caches", "prefix", "blocks", "of", "every", "prompt", "and",
        "routes", "requests", "to", "pods", "that", "hold",
    ];
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = format!("Document {seed}:");
    for _ in 0..words {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push(' ');
        out.push_str(WORDS[(state % WORDS.len() as u64) as usize]);
    }
    out
}

fn completion_body(prompt: &str) -> String {
    serde_json::json!({"model": MODEL, "prompt": prompt, "max_tokens": 2}).to_string()
}

/// Sends a completion through `url`; returns the serving pod (from the destination header when
/// it went through the gateway) and the decision header.
fn complete(url: &str, prompt: &str) -> (String, String) {
    let response = ureq::post(&format!("{url}/v1/completions"))
        .send_string(&completion_body(prompt))
        .expect("a completion");
    assert_eq!(response.status(), 200);
    let pod = response.header(DESTINATION).unwrap_or_default().to_owned();
    let decision = response
        .header("x-inference-scheduler-decision")
        .unwrap_or_default()
        .to_owned();
    (pod, decision)
}

/// The `precise=` entry of a decision header.
fn precise(decision: &str) -> &str {
    decision
        .split(' ')
        .find_map(|part| part.strip_prefix("precise="))
        .unwrap_or_else(|| panic!("no precise entry in {decision:?}"))
}

/// The module's view of every pod's stream, from Envoy's metrics (reported once a second).
fn wait_until_synced(envoy: &Envoy, pods: &[String]) {
    eventually(
        "every pod's event stream synced",
        Duration::from_secs(15),
        || {
            let text = prometheus(&envoy.admin_url);
            pods.iter().all(|pod| {
                sample(
                    &text,
                    &format!("envoy_inference_scheduler_kv_events_synced{{pod=\"{pod}\"}}"),
                ) == Some(1.0)
            })
        },
    );
}

/// The keys of `prompt`'s token blocks, as the module computes them.
fn keys_of(tokenizer: &PromptTokenizer, prompt: &str) -> Vec<u64> {
    let body = completion_body(prompt);
    let request = parse(body.as_bytes(), ApiKind::Completions).unwrap();
    let mut tokens = Vec::new();
    tokenizer.request_tokens(&request, &mut tokens).unwrap();
    let mut keys = Vec::new();
    token_block_keys(chain_seed(None), &tokens, BLOCK, &mut keys);
    keys
}

#[test]
fn routes_follow_what_the_pods_hold_after_evictions() {
    let (_dir, tokenizer_path) = tokenizer_file();
    let pods = event_pods(3, pod_config(&tokenizer_path));
    let config = EnvoyConfig::new(pods.addresses.clone())
        .pool_config(&pool_config(&pods, &tokenizer_path))
        .filter_config(FILTER_CONFIG);
    let envoy = Envoy::start(&config);
    wait_until_synced(&envoy, &pods.addresses);

    // An observer of our own on the same real sockets, to know when the pods' caches changed.
    let observer = KvEventsIndex::new(KvEventsConfig {
        block_size: BLOCK,
        ..KvEventsConfig::default()
    })
    .unwrap();
    let rules: KvEventsConfig = serde_json::from_value(pods.kv_events.clone()).unwrap();
    for pod in &pods.addresses {
        observer.subscribe(pod, rules.endpoints_of(pod).unwrap());
    }
    let tokenizer = PromptTokenizer::load(&TokenizerConfig::new(&tokenizer_path)).unwrap();
    let held = |pod: &str, keys: &[u64]| observer.precise_matches(pod, keys).unwrap_or(0);

    let shared = text(1, 300);
    let keys = keys_of(&tokenizer, &shared);
    assert!(keys.len() >= 8, "{} blocks", keys.len());
    let (first, _) = complete(&envoy.url, &shared);
    eventually(
        "the first pod's events report the prompt",
        Duration::from_secs(10),
        || held(&first, &keys) == keys.len(),
    );
    let (again, decision) = complete(&envoy.url, &shared);
    assert_eq!(again, first, "{decision}");
    assert_eq!(precise(&decision), format!("{0}/{0}", keys.len()));

    // Another gateway (here: requests straight to the pods) fills the first pod's cache with
    // other prompts and puts the shared prompt on a second pod.
    let other = pods
        .addresses
        .iter()
        .find(|p| **p != first)
        .unwrap()
        .clone();
    complete(&format!("http://{other}"), &shared);
    for seed in 100..108 {
        complete(&format!("http://{first}"), &text(seed, 300));
    }
    eventually(
        "the first pod evicted the prompt",
        Duration::from_secs(10),
        || held(&first, &keys) == 0 && held(&other, &keys) == keys.len(),
    );

    // The module saw the same events: the request goes where the prompt is cached now ...
    let mut routed = (String::new(), String::new());
    eventually(
        "the gateway routes to the pod holding the prompt",
        Duration::from_secs(5),
        || {
            routed = complete(&envoy.url, &shared);
            routed.0 == other
        },
    );
    assert_eq!(
        precise(&routed.1),
        format!("{0}/{0}", keys.len()),
        "{}",
        routed.1
    );
    // ... which routing history alone knew nothing of: the route index predicted no hit there
    // (it still believes the first pod holds the prompt).
    assert!(routed.1.contains(" prefix=0/"), "{}", routed.1);
}

#[test]
fn chat_requests_are_tokenized_with_the_chat_template() {
    let (_dir, tokenizer_path) = tokenizer_file();
    let pods = event_pods(2, pod_config(&tokenizer_path));
    let config = EnvoyConfig::new(pods.addresses.clone())
        .pool_config(&pool_config(&pods, &tokenizer_path))
        .filter_config(FILTER_CONFIG);
    let envoy = Envoy::start(&config);
    wait_until_synced(&envoy, &pods.addresses);
    let body = serde_json::json!({"model": MODEL, "max_tokens": 2, "messages": [
        {"role": "system", "content": text(7, 200)},
        {"role": "user", "content": "Which pod holds the prefix?"},
    ]})
    .to_string();
    let chat = || {
        let response = ureq::post(&format!("{}/v1/chat/completions", envoy.url))
            .send_string(&body)
            .expect("a chat completion");
        let header = |name| response.header(name).unwrap_or_default().to_owned();
        (
            header(DESTINATION),
            header("x-inference-scheduler-decision"),
        )
    };
    let (first, _) = chat();
    let mut second = (String::new(), String::new());
    // The pod's events about the first turn arrive within milliseconds; every full block of the
    // rendered conversation (what the pod cached) must then be reported held.
    eventually(
        "the chat's blocks are reported held",
        Duration::from_secs(5),
        || {
            second = chat();
            let (hits, blocks) = precise(&second.1).split_once('/').unwrap_or(("0", "1"));
            hits == blocks && hits != "0"
        },
    );
    assert_eq!(second.0, first, "{}", second.1);
}

/// A TCP server that answers every connection with bytes that are not ZeroMQ.
fn garbage_publisher(port: u16) -> Option<TcpListener> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).ok()?;
    let serving = listener.try_clone().ok()?;
    std::thread::spawn(move || {
        for mut stream in serving.incoming().flatten() {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\nnot a ZeroMQ greeting at all");
        }
    });
    Some(listener)
}

#[test]
fn a_pod_without_a_working_stream_is_scored_approximately_and_serves() {
    let (_dir, tokenizer_path) = tokenizer_file();
    let pods = event_pods(2, pod_config(&tokenizer_path));
    // A third pod publishes nothing: where its events should be, a server sends garbage.
    let (_plain, plain) = fast_pods(1);
    let plain = plain[0].clone();
    let offset = pods.kv_events["publish_port_offset"].as_i64().unwrap();
    let plain_port: i64 = plain.rsplit_once(':').unwrap().1.parse().unwrap();
    let _garbage = garbage_publisher((plain_port + offset) as u16);
    let mut members = pods.addresses.clone();
    members.push(plain.clone());
    let config = EnvoyConfig::new(members)
        .pool_config(&pool_config(&pods, &tokenizer_path))
        .filter_config(FILTER_CONFIG);
    let envoy = Envoy::start(&config);
    wait_until_synced(&envoy, &pods.addresses);

    let mut on_plain = Vec::new();
    for seed in 0..30 {
        let (pod, decision) = complete(&envoy.url, &text(1000 + seed, 60));
        if pod == plain {
            on_plain.push(decision);
        }
    }
    assert!(
        !on_plain.is_empty(),
        "the pod without events got no request"
    );
    for decision in &on_plain {
        assert_eq!(precise(decision), "no-stream", "{decision}");
    }
    eventually("metrics show the fallback", Duration::from_secs(5), || {
        let text = prometheus(&envoy.admin_url);
        let m = |name: &str| sample(&text, &format!("envoy_inference_scheduler_{name}"));
        m(&format!("kv_events_synced{{pod=\"{plain}\"}}")) == Some(0.0)
            && m("precise_decisions_total{basis=\"no-stream\"}").unwrap_or(0.0) >= 1.0
            && m("precise_decisions_total{basis=\"events\"}").unwrap_or(0.0) >= 1.0
    });
    assert!(envoy.ready(), "Envoy is still serving");
}
