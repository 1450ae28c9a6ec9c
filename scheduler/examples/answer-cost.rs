//! What learning an answer costs on the response path: a streamed completion of 512 token
//! events (OpenAI chat deltas, ~90 bytes each) fed through `AnswerReader` in 4 KiB chunks, as
//! Envoy passes them. Prints the median per stream and per event.
//!
//! `cargo run --release -p scheduler --example answer-cost`

use std::time::Instant;

use scheduler::answer::{AnswerFormat, AnswerReader};
use scheduler::prefix::PrefixConfig;

fn main() {
    let hasher = PrefixConfig::default().hasher();
    let events = 512;
    let stream: Vec<u8> = (0..events)
        .flat_map(|i| {
            let event = serde_json::json!({"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":format!(" word{i}")}}]});
            format!("data: {event}\n\n").into_bytes()
        })
        .collect();
    let prompt = hasher.hash_text("m", &"a long system prompt ".repeat(20));
    let mut times = Vec::new();
    let mut learned = 0;
    for _ in 0..500 {
        let started = Instant::now();
        let blocks = hasher.continue_after(prompt.end.as_ref().unwrap(), ("assistant: ", "\n"));
        let mut reader = AnswerReader::new(blocks, AnswerFormat::Events);
        for chunk in stream.chunks(4096) {
            reader.feed(chunk);
        }
        learned = reader.finish().map_or(0, |b| b.hashes().len());
        times.push(started.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "answer learning: {events} events ({} bytes) in {:.1} µs per stream, {:.3} µs per event, {learned} blocks learned",
        stream.len(),
        median.as_secs_f64() * 1e6,
        median.as_secs_f64() * 1e6 / events as f64
    );
}
