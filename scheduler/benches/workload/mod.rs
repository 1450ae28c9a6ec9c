//! The benchmark workload, shared by the criterion benches and the percentile report: request
//! bodies shaped like the reference's shared-prefix data set (groups of prompts sharing a long
//! system prompt), pods with varied metrics, and an index warmed to a given number of blocks.
#![allow(dead_code)]

pub mod counting_alloc;

use std::time::Instant;

use scheduler::request::{parse, ApiKind};
use scheduler::{PodMetrics, PodView, RequestContext, Scheduler};

const WORDS: [&str; 24] = [
    "the",
    "model",
    "answers",
    "questions",
    "about",
    "cluster",
    "routing",
    "with",
    "short",
    "precise",
    "sentences",
    "and",
    "cites",
    "its",
    "sources",
    "when",
    "asked",
    "to",
    "explain",
    "latency",
    "cache",
    "tokens",
    "requests",
    "policy",
];

/// Deterministic English-like text of `len` bytes with a line break every dozen words, so the
/// JSON string has escapes as real prompts do.
pub fn text(seed: u64, len: usize) -> String {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = String::with_capacity(len + 16);
    let mut n = 0;
    while out.len() < len {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push_str(WORDS[(state >> 33) as usize % WORDS.len()]);
        n += 1;
        out.push(if n % 12 == 0 { '\n' } else { ' ' });
    }
    out.truncate(len);
    out
}

/// Completions bodies: `groups` system prompts × `per_group` questions, interleaved.
pub fn bodies(groups: u64, per_group: u64, system_len: usize, question_len: usize) -> Vec<Vec<u8>> {
    let systems: Vec<String> = (0..groups).map(|g| text(g, system_len)).collect();
    let mut out = Vec::new();
    for q in 0..per_group {
        for (g, system) in systems.iter().enumerate() {
            let prompt = format!(
                "{system}\n{}",
                text(1_000_000 + q * groups + g as u64, question_len)
            );
            out.push(
                serde_json::to_vec(&serde_json::json!({
                    "model": "meta-llama/Llama-3.1-8B-Instruct",
                    "prompt": prompt,
                    "max_tokens": 256,
                    "stream": true
                }))
                .unwrap(),
            );
        }
    }
    out
}

pub fn addresses(pods: usize) -> Vec<String> {
    (0..pods)
        .map(|i| format!("10.{}.{}.{}:8000", i / 65536, (i / 256) % 256, i % 256))
        .collect()
}

/// Fresh, varied metrics: queues 0..7, KV usage 10..80%.
pub fn metrics(pods: usize) -> Vec<PodMetrics> {
    (0..pods)
        .map(|i| PodMetrics {
            waiting: (i * 5 % 8) as u32,
            running: 8 + (i % 5) as u32,
            kv_usage: 0.1 + (i * 7 % 8) as f64 / 10.0,
            ..PodMetrics::idle()
        })
        .collect()
}

pub fn views<'a>(addresses: &'a [String], metrics: &'a [PodMetrics]) -> Vec<PodView<'a>> {
    addresses
        .iter()
        .zip(metrics)
        .enumerate()
        .map(|(i, (address, m))| PodView {
            metrics: Some(m),
            in_flight: (i % 3) as u32,
            ..PodView::new(address)
        })
        .collect()
}

/// Fills the index with `blocks` synthetic blocks spread evenly over the pods (256-block
/// requests of unrelated prompts), then routes each body once so the workload's prefixes are
/// known somewhere.
pub fn warm(scheduler: &Scheduler, pods: &[PodView<'_>], blocks: usize, bodies: &[Vec<u8>]) {
    let index = scheduler.prefix_index();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut request = Vec::with_capacity(256);
    for (i, pod) in pods.iter().enumerate() {
        let mut quota = blocks / pods.len() + usize::from(i < blocks % pods.len());
        while quota > 0 {
            request.clear();
            for _ in 0..quota.min(256) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                request.push(state);
            }
            quota -= request.len();
            index.record(pod, &request);
        }
    }
    for body in bodies {
        decide(scheduler, body, pods);
    }
}

/// One full decision as the filter makes it: parse the body, schedule, record the route.
pub fn decide(scheduler: &Scheduler, body: &[u8], pods: &[PodView<'_>]) -> usize {
    let request = parse(body, ApiKind::Completions).expect("valid body");
    scheduler
        .schedule(&request, pods, &RequestContext::default())
        .expect("pods available")
        .pod
}

/// Mean heap allocations and bytes allocated per decision over `count` decisions (one full
/// decision each: parse + schedule, as the filter makes it), counted by
/// [`counting_alloc::CountingAllocator`], which the calling bench must install. Call with no
/// other thread allocating.
pub fn allocations_per_decision(
    scheduler: &Scheduler,
    pods: &[PodView<'_>],
    bodies: &[Vec<u8>],
    count: usize,
) -> (f64, f64) {
    let (a0, b0) = counting_alloc::allocations();
    for i in 0..count {
        std::hint::black_box(decide(scheduler, &bodies[i % bodies.len()], pods));
    }
    let (a1, b1) = counting_alloc::allocations();
    (
        (a1 - a0) as f64 / count as f64,
        (b1 - b0) as f64 / count as f64,
    )
}

/// Per-decision times in microseconds: wall clock, and CPU time of the deciding thread (which
/// leaves out time the thread spent preempted by other processes; it includes one clock read,
/// a fraction of a microsecond).
#[derive(Default)]
pub struct Timings {
    pub wall: Vec<f64>,
    pub cpu: Vec<f64>,
}

impl Timings {
    pub fn extend(&mut self, other: Timings) {
        self.wall.extend(other.wall);
        self.cpu.extend(other.cpu);
    }
}

/// Times `count` decisions, cycling through `bodies`. Metrics are re-stamped every 500
/// decisions (outside the timing) so they never go stale mid-run.
pub fn time_decisions(
    scheduler: &Scheduler,
    addresses: &[String],
    bodies: &[Vec<u8>],
    count: usize,
    offset: usize,
) -> Timings {
    time_each(addresses, bodies, count, offset, |body, pods| {
        decide(scheduler, body, pods)
    })
}

/// Times `count` calls of `decide` (a body and the pods' views) the way `time_decisions`
/// times the scheduler's, for benchmarks that decide differently (with tokenizing, say).
pub fn time_each<T>(
    addresses: &[String],
    bodies: &[Vec<u8>],
    count: usize,
    offset: usize,
    mut decide: impl FnMut(&[u8], &[PodView<'_>]) -> T,
) -> Timings {
    let mut timings = Timings {
        wall: Vec::with_capacity(count),
        cpu: Vec::with_capacity(count),
    };
    let mut metrics = metrics(addresses.len());
    let mut i = 0;
    while i < count {
        for m in &mut metrics {
            m.scraped_at = Instant::now();
        }
        let pods = views(addresses, &metrics);
        for _ in 0..500.min(count - i) {
            let body = &bodies[(offset + i * 7919) % bodies.len()];
            let cpu = cpu_time::ThreadTime::now();
            let wall = Instant::now();
            std::hint::black_box(decide(body, &pods));
            timings.wall.push(wall.elapsed().as_secs_f64() * 1e6);
            timings.cpu.push(cpu.elapsed().as_secs_f64() * 1e6);
            i += 1;
        }
    }
    timings
}

/// The `q` quantile (0..1) of `samples` (sorted in place).
pub fn quantile(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let rank = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[rank]
}
