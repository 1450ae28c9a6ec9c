//! The figures of the KV-event index: bytes per block held, time of one pod's lookup on the
//! hot path, and the subscriber thread's CPU per applied block against the simulator's real
//! event stream. Writes `target/bench/kv_events.json` (path overridable with
//! `KV_EVENTS_BENCH_JSON`) and prints it.
//!
//! `cargo bench -p kv-events --bench report`

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use inference_sim::{PodConfig, Simulator};
use kv_events::{Endpoints, KvEventsConfig, KvEventsIndex, PodBlocks};
use prompt_tokenizer::{PromptTokenizer, TokenizerConfig};
use scheduler::prefix::token_blocks::{chain_seed, token_block_keys};

const BLOCK_SIZE: usize = 16;

/// Fills one pod's blocks with `blocks` blocks in chains of `chain` blocks, as stored events
/// of whole prompts would; returns bytes per block.
fn bytes_per_block(blocks: usize, chain: usize) -> (f64, PodBlocks, Vec<u32>) {
    let mut pod = PodBlocks::new(blocks);
    let mut first_prompt = Vec::new();
    let mut engine_hash = 0u64;
    for prompt in 0..blocks / chain {
        let tokens: Vec<u32> = (0..(chain * BLOCK_SIZE) as u32)
            .map(|i| (prompt as u32).wrapping_mul(7919).wrapping_add(i * 31) % 128_000)
            .collect();
        let hashes: Vec<u64> = (0..chain as u64).map(|i| engine_hash + i + 1).collect();
        pod.store(None, &hashes, &tokens, BLOCK_SIZE, chain_seed(None));
        engine_hash += chain as u64;
        if prompt == 0 {
            first_prompt = tokens;
        }
    }
    assert_eq!(pod.len(), blocks / chain * chain);
    (pod.bytes() as f64 / pod.len() as f64, pod, first_prompt)
}

fn lookup_ns(pod: &PodBlocks, keys: &[u64]) -> (usize, f64) {
    let rounds = 200_000;
    let matched = pod.matched(keys);
    let start = Instant::now();
    for _ in 0..rounds {
        black_box(pod.matched(black_box(keys)));
    }
    (matched, start.elapsed().as_nanos() as f64 / rounds as f64)
}

/// CPU time (user + system) of this process's thread named `name`, from /proc.
fn thread_cpu(name: &str) -> Option<Duration> {
    let ticks = 100.0; // USER_HZ on Linux
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        return Some(Duration::from_secs_f64((utime + stime) / ticks));
    }
    None
}

fn complete(addr: SocketAddr, tokens: &[u32]) {
    let body = format!(r#"{{"prompt": {tokens:?}, "max_tokens": 1}}"#);
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /v1/completions HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Drives `requests` prompts of `blocks` blocks through a simulated pod with a small cache
/// (so every prompt also evicts), and measures the subscriber thread's CPU.
fn subscriber_cpu(requests: usize, blocks: usize) -> serde_json::Value {
    let kv_blocks = 4 * blocks;
    let sim = Simulator::start(
        PodConfig {
            kv_blocks,
            block_size: BLOCK_SIZE,
            max_model_len: kv_blocks * BLOCK_SIZE,
            time_scale: 0.01,
            kv_events_port: Some(0),
            ..PodConfig::default()
        },
        &[SocketAddr::from(([127, 0, 0, 1], 0))],
    )
    .unwrap();
    let pod = &sim.pods()[0];
    let index = KvEventsIndex::new(KvEventsConfig::default()).unwrap();
    index.subscribe(
        "pod",
        Endpoints {
            publish: pod.kv_events_endpoint().unwrap(),
            replay: pod.kv_events_replay_endpoint(),
        },
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while index.pod_status("pod").unwrap().connects == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    let cpu_before = thread_cpu("kv-events").unwrap();
    let batches_before = index.pod_status("pod").unwrap().batches;
    let started = Instant::now();
    let mut last_tokens = Vec::new();
    for r in 0..requests {
        last_tokens = (0..(blocks * BLOCK_SIZE) as u32)
            .map(|i| (r as u32 * 100_003 + i) % 128_000)
            .collect();
        complete(pod.addr(), &last_tokens);
    }
    let mut keys = Vec::new();
    token_block_keys(chain_seed(None), &last_tokens, BLOCK_SIZE, &mut keys);
    while index.matched_blocks("pod", &keys) < blocks {
        assert!(Instant::now() < deadline + Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(1));
    }
    let wall = started.elapsed();
    let cpu = thread_cpu("kv-events").unwrap() - cpu_before;
    let status = index.pod_status("pod").unwrap();
    let batches = status.batches - batches_before;
    // Each prompt stores `blocks` blocks; once the cache is full each also evicts as many.
    let events_blocks = (requests * blocks * 2).saturating_sub(kv_blocks);
    serde_json::json!({
        "requests": requests,
        "blocks_per_request": blocks,
        "batches_applied": batches,
        "block_events": events_blocks,
        "wall_s": wall.as_secs_f64(),
        "subscriber_cpu_s": cpu.as_secs_f64(),
        "subscriber_cpu_us_per_block_event": cpu.as_secs_f64() * 1e6 / events_blocks as f64,
        "gaps": status.gaps,
        "dropped": status.dropped,
    })
}

/// English-like text from a 200-word vocabulary (deterministic).
fn text(bytes: usize, mut state: u32) -> String {
    let words: Vec<String> = (0..200u32)
        .map(|w| {
            let len = 2 + (w * 7 % 9) as usize;
            (0..len)
                .map(|i| (b'a' + ((w * 31 + i as u32 * 17) % 26) as u8) as char)
                .collect()
        })
        .collect();
    let mut out = String::with_capacity(bytes + 16);
    while out.len() < bytes {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        out.push_str(&words[state as usize % words.len()]);
        out.push(if state.is_multiple_of(11) { '.' } else { ' ' });
    }
    out.truncate(bytes);
    out
}

/// Cost of tokenizing a 10 KB prompt with a byte-level BPE tokenizer (as Llama-3's), trained
/// here on the same kind of text (8,000 ids: no network, no shipped model), loaded back from
/// its tokenizer.json as the module would load one.
fn tokenization() -> serde_json::Value {
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::models::TrainerWrapper;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::Tokenizer;

    let mut trained = Tokenizer::new(BPE::default());
    trained.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(8_000)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let corpus: Vec<String> = (0..2_000).map(|i| text(500, i + 1)).collect();
    trained.train(&mut trainer, corpus.iter()).unwrap();
    let dir = std::env::temp_dir().join(format!("kv-events-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    trained.save(&path, false).unwrap();
    let load_start = Instant::now();
    let tokenizer = PromptTokenizer::load(&TokenizerConfig::new(&path)).unwrap();
    let load_ms = load_start.elapsed().as_secs_f64() * 1e3;

    let prompt = text(10 * 1024, 0xdead_beef);
    let mut times = Vec::new();
    let mut tokens = 0;
    let mut keys = Vec::new();
    let mut key_times = Vec::new();
    for _ in 0..500 {
        let start = Instant::now();
        let ids = tokenizer.encode_whole(black_box(&prompt), true).unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e6);
        tokens = ids.len();
        let start = Instant::now();
        keys.clear();
        token_block_keys(chain_seed(None), &ids, BLOCK_SIZE, &mut keys);
        black_box(&keys);
        key_times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let pct = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    serde_json::json!({
        "vocab_size": tokenizer.vocab_size(),
        "prompt_bytes": prompt.len(),
        "prompt_tokens": tokens,
        "load_ms": load_ms,
        "encode_10kb_p50_us": pct(&mut times, 0.5),
        "encode_10kb_p99_us": pct(&mut times, 0.99),
        "block_keys_p50_us": pct(&mut key_times, 0.5),
    })
}

fn main() {
    let mut memory = serde_json::Map::new();
    let mut lookups = serde_json::Map::new();
    for blocks in [28_160usize, 131_072] {
        let (per_block, pod, first_prompt) = bytes_per_block(blocks, 64);
        memory.insert(blocks.to_string(), serde_json::json!(per_block));
        if blocks == 28_160 {
            let mut keys = Vec::new();
            // A 10 KB prompt is ~2,500 tokens: 156 blocks; the pod holds the first 64.
            let mut tokens = first_prompt.clone();
            tokens.extend((0..(156 - 64) * BLOCK_SIZE as u32).map(|i| 127_000 + i % 999));
            token_block_keys(chain_seed(None), &tokens, BLOCK_SIZE, &mut keys);
            let (matched, ns) = lookup_ns(&pod, &keys);
            assert_eq!(matched, 64);
            lookups.insert("matched_64_of_156_ns".into(), serde_json::json!(ns));
            let miss: Vec<u64> = keys.iter().map(|k| k ^ 1).collect();
            let (matched, ns) = lookup_ns(&pod, &miss);
            assert_eq!(matched, 0);
            lookups.insert("matched_0_of_156_ns".into(), serde_json::json!(ns));
        }
    }
    let json = serde_json::json!({
        "bytes_per_block": memory,
        "lookup_one_pod": lookups,
        "subscriber": subscriber_cpu(2_000, 64),
        "tokenization": tokenization(),
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    let path = std::env::var("KV_EVENTS_BENCH_JSON").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/bench/kv_events.json"
        )
        .into()
    });
    if let Some(dir) = std::path::Path::new(&path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let text = serde_json::to_string_pretty(&json).unwrap() + "\n";
    std::fs::write(&path, &text).unwrap();
    print!("{text}");
}
