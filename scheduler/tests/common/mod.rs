//! Crafted pod states and requests shared by the integration tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use scheduler::framework::{Candidate, Candidates, Cycle, CycleState, RequestFacts};
use scheduler::{Criticality, PodMetrics, PodView};

pub const PODS: [&str; 4] = [
    "10.0.0.1:8000",
    "10.0.0.2:8000",
    "10.0.0.3:8000",
    "10.0.0.4:8000",
];

/// Fresh metrics with the given queue and KV usage.
pub fn metrics(waiting: u32, kv_usage: f64) -> PodMetrics {
    PodMetrics {
        waiting,
        kv_usage,
        ..PodMetrics::idle()
    }
}

/// Metrics scraped `age` ago.
pub fn aged(mut m: PodMetrics, age: Duration) -> PodMetrics {
    m.scraped_at = Instant::now()
        .checked_sub(age)
        .expect("clock far enough from boot");
    m
}

pub fn pod<'a>(address: &'a str, metrics: Option<&'a PodMetrics>) -> PodView<'a> {
    PodView {
        metrics,
        ..PodView::new(address)
    }
}

pub fn candidates<'a>(pods: &[PodView<'a>]) -> Candidates<'a> {
    pods.iter()
        .enumerate()
        .map(|(index, pod)| Candidate { index, pod: *pod })
        .collect()
}

pub fn facts(blocks: &[u64]) -> RequestFacts<'_> {
    RequestFacts {
        model: "m",
        adapter: None,
        blocks,
        route_key: blocks.first().copied().unwrap_or(7),
        criticality: Criticality::Standard,
        session: None,
        tokens: None,
    }
}

pub fn cycle(request: RequestFacts<'_>) -> Cycle<'_> {
    Cycle {
        request,
        now: Instant::now(),
        state: CycleState::default(),
    }
}

/// A completions body whose prompt is `text`.
pub fn body(model: &str, text: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"model": model, "prompt": text, "max_tokens": 16}))
        .unwrap()
}

/// A prompt of `len` characters, distinct per `seed`.
pub fn prompt(seed: u64, len: usize) -> String {
    let mut out = String::with_capacity(len + 32);
    let mut i = 0u64;
    while out.len() < len {
        out.push_str(&format!("w{}_{} ", seed, i));
        i += 1;
    }
    out.truncate(len);
    out
}
