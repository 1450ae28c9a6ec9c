//! Decisions that include tokenization, as precise prefix routing makes them: parse the body,
//! `request_tokens` (warm chunk cache), the token-block keys, then the scheduler's default
//! decision. A ~10 KB completion prompt and a ~10 KB chat request over 16 pods and a
//! 1,000,000-block index (the scheduler report's seed workload), plus whole-prompt tokenizing
//! without the cache. Merges its figures into `target/bench/scheduler.json` (path overridable
//! with `SCHEDULER_BENCH_JSON`; `scripts/bench-scheduler.sh` runs it after the scheduler's
//! report) and prints them. `SCHEDULER_BENCH_QUICK=1` takes a tenth of the samples.
//!
//! It lives here rather than in `scheduler/benches` because the scheduler cannot depend on
//! this crate (which depends on the scheduler).

#[path = "../../scheduler/benches/workload/mod.rs"]
mod workload;

use std::hint::black_box;
use std::time::Instant;

use prompt_tokenizer::{write_trained_tokenizer, PromptTokenizer, TokenizerConfig};
use scheduler::prefix::token_blocks::{chain_seed, token_block_keys};
use scheduler::request::parse;
use scheduler::{ApiKind, RequestContext, Scheduler};
use workload::counting_alloc::CountingAllocator;
use workload::*;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const PODS: usize = 16;
const WARM_BLOCKS: usize = 1_000_000;
const BLOCK_SIZE: usize = 16;
const ROUNDS: usize = 5;

/// Chat bodies shaped like the completion ones: a group's ~8 KB system message and a ~2 KB
/// user question.
fn chat_bodies(
    groups: u64,
    per_group: u64,
    system_len: usize,
    question_len: usize,
) -> Vec<Vec<u8>> {
    let systems: Vec<String> = (0..groups).map(|g| text(g, system_len)).collect();
    let mut out = Vec::new();
    for q in 0..per_group {
        for (g, system) in systems.iter().enumerate() {
            let question = text(1_000_000 + q * groups + g as u64, question_len);
            out.push(
                serde_json::to_vec(&serde_json::json!({
                    "model": "meta-llama/Llama-3.1-8B-Instruct",
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": question},
                    ],
                    "max_tokens": 256,
                    "stream": true
                }))
                .unwrap(),
            );
        }
    }
    out
}

struct Decider<'a> {
    scheduler: &'a Scheduler,
    tokenizer: &'a PromptTokenizer,
    tokens: Vec<u32>,
    keys: Vec<u64>,
}

impl Decider<'_> {
    /// Parse, tokenize, key the blocks, decide. Returns the pod and the token count.
    fn decide(
        &mut self,
        body: &[u8],
        kind: ApiKind,
        pods: &[scheduler::PodView<'_>],
    ) -> (usize, usize) {
        let request = parse(body, kind).expect("valid body");
        self.tokenizer
            .request_tokens(&request, &mut self.tokens)
            .expect("tokenizable");
        self.keys.clear();
        token_block_keys(chain_seed(None), &self.tokens, BLOCK_SIZE, &mut self.keys);
        black_box(&self.keys);
        let pod = self
            .scheduler
            .schedule(&request, pods, &RequestContext::default())
            .expect("pods available")
            .pod;
        (pod, self.tokens.len())
    }
}

/// p50 and p99 (wall, CPU) of `count` tokenized decisions, each percentile the median over
/// `ROUNDS` rounds.
fn time(
    decider: &mut Decider<'_>,
    addresses: &[String],
    bodies: &[Vec<u8>],
    kind: ApiKind,
    count: usize,
) -> [f64; 4] {
    let mut rounds: Vec<[f64; 4]> = Vec::new();
    for round in 0..ROUNDS {
        let mut t = time_each(addresses, bodies, count, round * 997, |body, pods| {
            decider.decide(body, kind, pods)
        });
        rounds.push([
            quantile(&mut t.wall, 0.5),
            quantile(&mut t.wall, 0.99),
            quantile(&mut t.cpu, 0.5),
            quantile(&mut t.cpu, 0.99),
        ]);
    }
    std::array::from_fn(|k| quantile(&mut rounds.iter().map(|r| r[k]).collect::<Vec<_>>(), 0.5))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn main() {
    let quick = std::env::var("SCHEDULER_BENCH_QUICK").is_ok_and(|v| v == "1");
    let samples = if quick { 2_000 } else { 20_000 };
    let load_average = std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| {
        s.split_whitespace()
            .next()
            .and_then(|l| l.parse::<f64>().ok())
    });

    let dir = std::env::temp_dir().join(format!("prompt-tokenizer-bench-{}", std::process::id()));
    let path = write_trained_tokenizer(&dir);
    let load_start = Instant::now();
    // `TOKENIZER_BENCH_CHUNK_BYTES` tries another chunk size (default 256, the config's).
    let chunk_bytes = std::env::var("TOKENIZER_BENCH_CHUNK_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let tokenizer = PromptTokenizer::load(&TokenizerConfig {
        chunk_bytes,
        ..TokenizerConfig::new(&path)
    })
    .unwrap();
    let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    assert!(tokenizer.chunking(), "{:?}", tokenizer.chunking_problem());

    let addresses = addresses(PODS);
    let metrics = metrics(PODS);
    let pods = views(&addresses, &metrics);
    let scheduler =
        Scheduler::from_json(r#"{"prefix_index": {"capacity_per_pod": 62500}}"#).unwrap();
    let completions = bodies(64, 8, 8_000, 2_000);
    let chats = chat_bodies(64, 8, 8_000, 2_000);
    warm(&scheduler, &pods, WARM_BLOCKS, &completions);

    let mut decider = Decider {
        scheduler: &scheduler,
        tokenizer: &tokenizer,
        tokens: Vec::new(),
        keys: Vec::new(),
    };
    // Warm the chunk cache (and the index) with every body once.
    let mut completion_tokens = 0;
    for body in &completions {
        completion_tokens += decider.decide(body, ApiKind::Completions, &pods).1;
    }
    let mut chat_tokens = 0;
    for body in &chats {
        chat_tokens += decider.decide(body, ApiKind::Chat, &pods).1;
    }
    let warmed = tokenizer.cache_stats();

    let (a0, b0) = workload::counting_alloc::allocations();
    let count = 2_000;
    for i in 0..count {
        black_box(decider.decide(
            &completions[i % completions.len()],
            ApiKind::Completions,
            &pods,
        ));
    }
    let (a1, b1) = workload::counting_alloc::allocations();
    let allocations = (a1 - a0) as f64 / count as f64;
    let allocated_bytes = (b1 - b0) as f64 / count as f64;
    // Allocations of the decision alone, to tell tokenization's share.
    let (base_allocations, _) = allocations_per_decision(&scheduler, &pods, &completions, count);

    let completion = time(
        &mut decider,
        &addresses,
        &completions,
        ApiKind::Completions,
        samples,
    );
    let chat = time(&mut decider, &addresses, &chats, ApiKind::Chat, samples);
    // The same chat decisions without tokenization (the scheduler's own text-based scoring).
    let untokenized_chat = {
        let mut times = Vec::new();
        for i in 0..samples / 2 {
            let body = &chats[(i * 7919) % chats.len()];
            let start = Instant::now();
            let request = parse(body, ApiKind::Chat).unwrap();
            black_box(
                scheduler
                    .schedule(&request, &pods, &RequestContext::default())
                    .unwrap()
                    .pod,
            );
            times.push(start.elapsed().as_secs_f64() * 1e6);
        }
        quantile(&mut times, 0.5)
    };
    let untokenized = {
        let mut rounds: Vec<f64> = (0..ROUNDS)
            .map(|r| {
                quantile(
                    &mut time_decisions(
                        &scheduler,
                        &addresses,
                        &completions,
                        samples / ROUNDS,
                        r * 997,
                    )
                    .wall,
                    0.5,
                )
            })
            .collect();
        quantile(&mut rounds, 0.5)
    };

    // The parts of a tokenized decision over the same varied bodies: request_tokens (warm) and
    // the block keys.
    let parts = |bodies: &[Vec<u8>], kind: ApiKind| {
        let mut tokenize = Vec::new();
        let mut keying = Vec::new();
        let mut tokens = Vec::new();
        let mut keys = Vec::new();
        for i in 0..samples / 2 {
            let body = &bodies[(i * 7919) % bodies.len()];
            let request = parse(body, kind).unwrap();
            let start = Instant::now();
            tokenizer.request_tokens(&request, &mut tokens).unwrap();
            tokenize.push(start.elapsed().as_secs_f64() * 1e6);
            let start = Instant::now();
            keys.clear();
            token_block_keys(chain_seed(None), &tokens, BLOCK_SIZE, &mut keys);
            black_box(&keys);
            keying.push(start.elapsed().as_secs_f64() * 1e6);
        }
        (quantile(&mut tokenize, 0.5), quantile(&mut keying, 0.5))
    };
    let (completion_tokenize, completion_keys) = parts(&completions, ApiKind::Completions);
    let (chat_tokenize, _) = parts(&chats, ApiKind::Chat);

    // Tokenizing alone: warm chunked (encode) and whole without the cache (encode_whole).
    let prompt = {
        let request = parse(&completions[3], ApiKind::Completions).unwrap();
        request.prompt_text().into_owned()
    };
    let mut ids = Vec::new();
    let mut warm_times: Vec<f64> = (0..samples / 4)
        .map(|_| {
            let start = Instant::now();
            tokenizer
                .encode(black_box(&prompt), true, &mut ids)
                .unwrap();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let cold_runs = if quick { 20 } else { 200 };
    let mut cold_times: Vec<f64> = (0..cold_runs)
        .map(|_| {
            let start = Instant::now();
            black_box(tokenizer.encode_whole(black_box(&prompt), true).unwrap());
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    // Chunked with an empty cache: a prompt seen for the first time.
    let mut cold_chunked: Vec<f64> = (0..cold_runs.min(50))
        .map(|_| {
            let fresh = PromptTokenizer::load(&TokenizerConfig::new(&path)).unwrap();
            let start = Instant::now();
            fresh.encode(black_box(&prompt), true, &mut ids).unwrap();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();

    let figures = serde_json::json!({
        "tokenized_decision_p50_us": round2(completion[0]),
        "tokenized_decision_p99_us": round2(completion[1]),
        "tokenized_decision_cpu_p50_us": round2(completion[2]),
        "tokenized_decision_cpu_p99_us": round2(completion[3]),
        "tokenized_chat_decision_p50_us": round2(chat[0]),
        "tokenized_chat_decision_p99_us": round2(chat[1]),
        "tokenized_chat_decision_cpu_p50_us": round2(chat[2]),
        "tokenized_chat_decision_cpu_p99_us": round2(chat[3]),
        "tokenize_cold_10kb_us": round2(quantile(&mut cold_times, 0.5)),
        "tokenize_cold_chunked_10kb_us": round2(quantile(&mut cold_chunked, 0.5)),
        "tokenize_warm_10kb_us": round2(quantile(&mut warm_times, 0.5)),
        "request_tokens_warm_p50_us": round2(completion_tokenize),
        "chat_request_tokens_warm_p50_us": round2(chat_tokenize),
        "block_keys_p50_us": round2(completion_keys),
        "tokenized_decision_allocations": round2(allocations),
        "tokenized_decision_allocated_bytes": round2(allocated_bytes),
        "untokenized_decision_allocations": round2(base_allocations),
        "untokenized_decision_p50_us": round2(untokenized),
        "untokenized_chat_decision_p50_us": round2(untokenized_chat),
        "tokenizer": {
            "fixture_vocab_size": tokenizer.vocab_size(),
            "load_ms": round2(load_ms),
            "chunk_bytes": chunk_bytes,
            "prompt_bytes": prompt.len(),
            "completion_tokens_mean": completion_tokens / completions.len(),
            "chat_tokens_mean": chat_tokens / chats.len(),
            "cached_chunks": warmed.chunks,
            "samples": samples,
            "load_average": load_average,
        },
    });

    let out = std::env::var("SCHEDULER_BENCH_JSON").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/bench/scheduler.json"
        )
        .into()
    });
    let mut merged = std::fs::read_to_string(&out)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    for (key, value) in figures.as_object().unwrap() {
        merged[key] = value.clone();
    }
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&out, serde_json::to_string_pretty(&merged).unwrap() + "\n").unwrap();
    println!("{}", serde_json::to_string_pretty(&figures).unwrap());
    println!("\nmerged into {out}");
    let _ = std::fs::remove_dir_all(&dir);
}
