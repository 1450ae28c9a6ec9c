//! The module learns what a pod generates as the answer streams back through Envoy: the next
//! turn of the conversation is predicted cached on that pod for its whole history, answer
//! included. Real Envoy, a real simulated pod streaming server-sent events.

use std::io::{BufRead, BufReader};

use integration::client::DESTINATION;
use integration::pods::fast_pods;
use integration::{Envoy, EnvoyConfig};

const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

/// Streams a chat completion; returns the pod, the decision header and the answer's text.
fn chat(gateway: &str, messages: &serde_json::Value) -> (String, String, String) {
    let body =
        serde_json::json!({"model": MODEL, "messages": messages, "stream": true, "max_tokens": 40});
    let response = ureq::post(&format!("{gateway}/v1/chat/completions"))
        .send_string(&body.to_string())
        .expect("a streamed chat completion");
    let pod = response
        .header(DESTINATION)
        .expect("destination")
        .to_owned();
    let decision = response
        .header("x-inference-scheduler-decision")
        .expect("decision header")
        .to_owned();
    let mut answer = String::new();
    for line in BufReader::new(response.into_reader()).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let event: serde_json::Value = serde_json::from_str(data).unwrap();
        if let Some(piece) = event["choices"][0]["delta"]["content"].as_str() {
            answer.push_str(piece);
        }
    }
    (pod, decision, answer)
}

/// `hits/blocks` from a decision header's `prefix=` entry.
fn prefix(decision: &str) -> (u32, u32) {
    let (_, p) = decision
        .rsplit_once(" prefix=")
        .expect("prefix in the decision");
    let (hits, blocks) = p.split_once('/').unwrap();
    let blocks = blocks.split(' ').next().unwrap();
    (hits.parse().unwrap(), blocks.parse().unwrap())
}

fn turn_two_hits(learn: bool) -> (u32, u32, usize) {
    let (_sim, pods) = fast_pods(3);
    let config = EnvoyConfig::new(pods).filter_config(&format!(
        r#"{{"decision_header": true, "learn_answers": {learn}}}"#
    ));
    let envoy = Envoy::start(&config);
    let system = "You are a patient teacher of computer science; answer in plain words. ".repeat(3);
    let mut messages = serde_json::json!([
        {"role": "system", "content": system},
        {"role": "user", "content": "What is a cache?"},
    ]);
    let (first_pod, _, answer) = chat(&envoy.url, &messages);
    assert!(
        answer.len() >= 64,
        "the answer is too short to make a block: {answer:?}"
    );
    let list = messages.as_array_mut().unwrap();
    list.push(serde_json::json!({"role": "assistant", "content": answer}));
    list.push(serde_json::json!({"role": "user", "content": "And an LRU?"}));
    let (pod, decision, _) = chat(&envoy.url, &messages);
    assert_eq!(
        pod, first_pod,
        "the second turn left its conversation's pod: {decision}"
    );
    let (hits, blocks) = prefix(&decision);
    (hits, blocks, answer.len())
}

#[test]
fn the_next_turn_finds_the_streamed_answer_cached() {
    let (hits, blocks, answer_len) = turn_two_hits(true);
    let (hits_without, _, _) = turn_two_hits(false);
    eprintln!("turn 2: {hits}/{blocks} blocks predicted cached ({hits_without} without learning; answer {answer_len} chars)");
    // Every block but the one holding the new question, at most: the answer's blocks count.
    assert!(
        hits + 1 >= blocks,
        "only {hits} of {blocks} blocks predicted cached"
    );
    assert!(
        hits > hits_without,
        "learning the answer predicted no more hits ({hits} vs {hits_without})"
    );
}
