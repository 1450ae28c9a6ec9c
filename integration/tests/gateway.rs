//! The module inside real Envoy 1.40, in front of real HTTP backends on loopback.

#![allow(clippy::result_large_err)] // ureq 2 errors carry the response; fine in tests

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};

use integration::backend::{fnv, refused_address};
use integration::{Backend, Envoy, EnvoyConfig, SseGate};
use serde_json::Value;

const DEST: &str = "x-gateway-destination-endpoint";

fn backends(n: usize) -> (Vec<Backend>, SseGate) {
    let gate = SseGate::default();
    ((0..n).map(|_| Backend::start(gate.clone())).collect(), gate)
}

fn addrs(backends: &[Backend]) -> Vec<String> {
    backends.iter().map(|b| b.addr.clone()).collect()
}

fn post(url: &str, body: &str) -> Result<ureq::Response, ureq::Error> {
    ureq::post(url)
        .set("content-type", "application/json")
        .send_string(body)
}

/// Status, headers of interest and JSON body, for success and error statuses alike.
fn call(url: &str, body: &str) -> (u16, Option<String>, Value) {
    let resp = match post(url, body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let dest = resp.header(DEST).map(str::to_owned);
    let text = resp.into_string().unwrap();
    (
        status,
        dest,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn completion(prompt: &str) -> String {
    serde_json::json!({ "model": "m", "prompt": prompt, "max_tokens": 4 }).to_string()
}

#[test]
fn same_prefix_goes_to_the_same_pod_and_different_prefixes_spread() {
    let (pods, _gate) = backends(4);
    let envoy = Envoy::start(&EnvoyConfig::new(addrs(&pods)));
    let url = format!("{}/v1/completions", envoy.url);

    let mut pod_of_group: HashMap<usize, String> = HashMap::new();
    for round in 0..3 {
        for group in 0..12 {
            let shared = format!(
                "You are assistant number {group}. {}",
                "Answer briefly. ".repeat(20)
            );
            let prompt = format!("{shared} Question {round}?");
            let (status, dest, body) = call(&url, &completion(&prompt));
            assert_eq!(status, 200, "{body}");
            let served_by = body["backend"].as_str().unwrap().to_owned();
            assert_eq!(
                dest.as_deref(),
                Some(served_by.as_str()),
                "response header names the serving pod"
            );
            assert_eq!(
                body["destination"].as_str(),
                Some(served_by.as_str()),
                "upstream saw the header"
            );
            let first = pod_of_group
                .entry(group)
                .or_insert_with(|| served_by.clone());
            assert_eq!(*first, served_by, "group {group} moved between rounds");
        }
    }
    let used: HashSet<_> = pod_of_group.values().collect();
    assert!(
        used.len() >= 3,
        "12 groups used only {} of 4 pods: {pod_of_group:?}",
        used.len()
    );
}

#[test]
fn chat_completions_are_scheduled_too() {
    let (pods, _gate) = backends(3);
    let envoy = Envoy::start(&EnvoyConfig::new(addrs(&pods)));
    let body = serde_json::json!({
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    })
    .to_string();
    let first = call(&format!("{}/v1/chat/completions", envoy.url), &body);
    let second = call(&format!("{}/v1/chat/completions", envoy.url), &body);
    assert_eq!(first.0, 200);
    assert!(first.1.is_some());
    assert_eq!(first.1, second.1);
}

#[test]
fn non_inference_traffic_passes_through_untouched() {
    let (pods, _gate) = backends(2);
    let envoy = Envoy::start(&EnvoyConfig::new(addrs(&pods)));

    let resp = ureq::get(&format!("{}/v1/models", envoy.url))
        .call()
        .unwrap();
    assert!(resp.header(DEST).is_none());
    let v: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    assert_eq!(v["path"], "/v1/models");
    assert_eq!(v["destination"], Value::Null);

    // A POST elsewhere with a body that is not JSON at all reaches a pod byte for byte.
    let odd = "not json {{{ at all";
    let (status, dest, v) = call(&format!("{}/admin/upload", envoy.url), odd);
    assert_eq!(status, 200);
    assert!(dest.is_none());
    assert_eq!(v["body_sha"], fnv(odd.as_bytes()));

    // Other methods on an inference path are not scheduled either.
    let resp = ureq::get(&format!("{}/v1/completions", envoy.url))
        .call()
        .unwrap();
    assert!(resp.header(DEST).is_none());
}

#[test]
fn bad_bodies_get_a_400_with_a_json_error() {
    let (pods, _gate) = backends(2);
    let envoy = Envoy::start(&EnvoyConfig::new(addrs(&pods)));
    let url = format!("{}/v1/completions", envoy.url);

    let (status, _, v) = call(&url, "{\"model\": \"m\", \"prompt\": ");
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{v}"
    );

    let (status, _, v) = call(
        &url,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`prompt`"),
        "{v}"
    );

    let (status, _, v) = call(
        &format!("{}/v1/chat/completions", envoy.url),
        r#"{"model":"m"}"#,
    );
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`messages`"),
        "{v}"
    );
    assert_eq!(
        pods.iter().map(Backend::served).sum::<usize>(),
        0,
        "rejected requests reached a pod"
    );
}

#[test]
fn oversized_bodies_get_a_413_with_a_json_error() {
    let (pods, _gate) = backends(2);
    let config = EnvoyConfig::new(addrs(&pods)).filter_config(r#"{"max_body_bytes": 65536}"#);
    let envoy = Envoy::start(&config);
    let url = format!("{}/v1/completions", envoy.url);

    // Declared too large by content-length.
    let (status, _, v) = call(&url, &completion(&"x".repeat(100_000)));
    assert_eq!(status, 413);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("65536"),
        "{v}"
    );

    // Too large without a content-length: counted while it streams in.
    let big = completion(&"y".repeat(200_000));
    let resp = ureq::post(&url).send(std::io::Cursor::new(big.into_bytes()));
    let resp = match resp {
        Err(ureq::Error::Status(_, r)) => r,
        other => panic!("expected 413, got {:?}", other.map(|r| r.status())),
    };
    assert_eq!(resp.status(), 413);
    let v: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    assert_eq!(v["error"]["code"], 413);

    // Just under the limit is fine.
    let (status, _, _) = call(&url, &completion(&"z".repeat(60_000)));
    assert_eq!(status, 200);
}

#[test]
fn large_bodies_within_the_limit_arrive_intact() {
    let (pods, _gate) = backends(2);
    let envoy = Envoy::start(&EnvoyConfig::new(addrs(&pods)));
    let body = completion(&"long shared context ".repeat(15_000)); // ~300 KB, over Envoy's 1 MiB? no: below
    let (status, dest, v) = call(&format!("{}/v1/completions", envoy.url), &body);
    assert_eq!(status, 200);
    assert!(dest.is_some());
    assert_eq!(v["body_sha"], fnv(body.as_bytes()));
    let body = completion(&"2 MB prompt ".repeat(180_000)); // over Envoy's default 1 MiB buffer
    let (status, _, v) = call(&format!("{}/v1/completions", envoy.url), &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["body_sha"], fnv(body.as_bytes()));
}

#[test]
fn sse_responses_stream_through_before_the_backend_finishes() {
    let (pods, gate) = backends(2);
    let envoy = Envoy::start(&EnvoyConfig::new(addrs(&pods)));
    let body = serde_json::json!({"model": "m", "prompt": "stream me", "stream": true}).to_string();
    let resp = post(&format!("{}/v1/completions", envoy.url), &body).unwrap();
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    assert!(resp.header(DEST).is_some());
    let mut reader = BufReader::new(resp.into_reader());
    let mut first = String::new();
    // The backend holds back its last event until the gate opens: if the gateway buffered the
    // response, this read would not return before the backend's 15 s safety timeout.
    let started = std::time::Instant::now();
    reader.read_line(&mut first).unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "first event arrived only after the stream ended"
    );
    assert_eq!(first.trim(), r#"data: {"first":true}"#);
    gate.release();
    let rest: Vec<String> = reader.lines().map(Result::unwrap).collect();
    assert!(rest.iter().any(|l| l == "data: [DONE]"), "{rest:?}");
}

#[test]
fn a_pod_that_refuses_connections_costs_a_retry_not_a_failed_request() {
    let (pods, _gate) = backends(1);
    let dead = refused_address();
    let envoy = Envoy::start(&EnvoyConfig::new(vec![pods[0].addr.clone(), dead.clone()]));
    let url = format!("{}/v1/completions", envoy.url);
    for i in 0..24 {
        let (status, dest, v) = call(&url, &completion(&format!("distinct prompt {i}")));
        assert_eq!(status, 200, "request {i}: {v}");
        assert_eq!(
            dest.as_deref(),
            Some(pods[0].addr.as_str()),
            "response names the pod that served"
        );
    }
    // Some of those were first sent to the dead pod (the pick spreads prompts over both).
    assert!(envoy.stat("cluster.inference_pool.upstream_cx_connect_fail") > 0);
    assert!(envoy.stat("cluster.inference_pool.upstream_rq_retry") > 0);
}

#[test]
fn a_bad_filter_config_fails_the_load_naming_the_field() {
    let config =
        EnvoyConfig::new(vec![refused_address()]).filter_config(r#"{"max_body_bytes": "lots"}"#);
    let log = match Envoy::try_start(&config) {
        Ok(_) => panic!("Envoy accepted a bad filter config"),
        Err(log) => log,
    };
    assert!(
        log.contains("field `max_body_bytes`"),
        "log does not name the field:\n{log}"
    );
}

#[test]
fn envoy_stays_ready_after_every_kind_of_request() {
    let (pods, _gate) = backends(2);
    let mut envoy = Envoy::start(&EnvoyConfig::new(addrs(&pods)));
    let url = format!("{}/v1/completions", envoy.url);
    for body in [
        "",
        "{",
        "[]",
        "null",
        r#"{"prompt": 1}"#,
        r#"{"prompt": ["a", 2]}"#,
        "\u{0}\u{1}",
    ] {
        let (status, _, _) = call(&url, body);
        assert_eq!(status, 400, "body {body:?}");
    }
    let (status, _, _) = call(&url, &completion("fine"));
    assert_eq!(status, 200);
    assert!(envoy.running());
    assert!(envoy.ready());
}
