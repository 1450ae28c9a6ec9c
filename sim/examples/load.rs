//! A small streaming load driver for benchmarking the simulator (scripts/bench-sim.sh).
//!
//! Keeps `--concurrency` streaming completions in flight against the targets (round robin, one
//! keep-alive connection per stream slot), counts streamed tokens, and prints throughput every
//! second and a summary at the end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    /// Comma-separated host:port of the pods.
    #[arg(long, value_delimiter = ',', required = true)]
    targets: Vec<SocketAddr>,
    /// Streams kept in flight.
    #[arg(long, default_value_t = 2000)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Words in each prompt (about as many tokens).
    #[arg(long, default_value_t = 200)]
    prompt_words: usize,
    /// Tokens each request asks for.
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// Seconds over which the streams start (staggered, so requests do not arrive in waves).
    #[arg(long, default_value_t = 2.0)]
    ramp_up: f64,
    /// Prompts share a prefix within each of this many groups.
    #[arg(long, default_value_t = 64)]
    groups: usize,
}

#[derive(Default)]
struct Totals {
    tokens: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    ttft_micros: AtomicU64,
    itl_micros: AtomicU64,
    itl_samples: AtomicU64,
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let totals = Arc::new(Totals::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let args = Arc::new(args);
    let mut workers = Vec::new();
    for slot in 0..args.concurrency {
        let (args, totals) = (args.clone(), totals.clone());
        workers.push(tokio::spawn(async move {
            stream_slot(slot, &args, &totals, deadline).await
        }));
    }
    let mut last = 0;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    while Instant::now() < deadline {
        ticker.tick().await;
        let tokens = totals.tokens.load(Ordering::Relaxed);
        println!(
            "load: {:>3}s {:>8} tokens/s",
            started.elapsed().as_secs(),
            tokens - last
        );
        last = tokens;
    }
    let elapsed = started.elapsed().as_secs_f64();
    for worker in workers {
        worker.abort();
    }
    let tokens = totals.tokens.load(Ordering::Relaxed);
    let requests = totals.requests.load(Ordering::Relaxed).max(1);
    let itl_samples = totals.itl_samples.load(Ordering::Relaxed).max(1);
    println!(
        "load: summary concurrency={} tokens={} seconds={:.1} tokens_per_s={:.0} requests={} errors={} mean_ttft_ms={:.1} mean_itl_ms={:.2} driver_cpu_ticks={}",
        args.concurrency,
        tokens,
        elapsed,
        tokens as f64 / elapsed,
        totals.requests.load(Ordering::Relaxed),
        totals.errors.load(Ordering::Relaxed),
        totals.ttft_micros.load(Ordering::Relaxed) as f64 / requests as f64 / 1000.0,
        totals.itl_micros.load(Ordering::Relaxed) as f64 / itl_samples as f64 / 1000.0,
        own_cpu_ticks(),
    );
}

async fn stream_slot(slot: usize, args: &Args, totals: &Totals, deadline: Instant) {
    tokio::time::sleep(Duration::from_secs_f64(
        args.ramp_up * slot as f64 / args.concurrency as f64,
    ))
    .await;
    let target = args.targets[slot % args.targets.len()];
    // Letters-only words of at most 5 letters are one token each for the simulator's tokenizer.
    let group = slot % args.groups;
    let shared: String = (0..args.prompt_words * 3 / 4)
        .map(|i| word(group * 100_000 + i))
        .collect();
    let mut sequence = 0u64;
    while Instant::now() < deadline {
        let Ok(stream) = TcpStream::connect(target).await else {
            totals.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok((mut sender, connection)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            totals.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        tokio::spawn(connection);
        while Instant::now() < deadline {
            sequence += 1;
            let unique = (slot * 1_000 + sequence as usize % 1_000) * 1_000;
            let tail: String = (0..args.prompt_words / 4)
                .map(|i| word(unique + i))
                .collect();
            let body = serde_json::json!({
                "prompt": format!("{shared}{tail}"),
                "max_tokens": args.max_tokens,
                "stream": true,
            });
            let request = hyper::Request::post("/v1/completions")
                .header("host", target.to_string())
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap();
            let sent = Instant::now();
            let Ok(response) = sender.send_request(request).await else {
                totals.errors.fetch_add(1, Ordering::Relaxed);
                break;
            };
            if !response.status().is_success() {
                totals.errors.fetch_add(1, Ordering::Relaxed);
                let _ = response.into_body().collect().await;
                continue;
            }
            let mut body = response.into_body();
            let mut first: Option<Instant> = None;
            let mut tokens = 0u64;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    totals.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                };
                if let Some(data) = frame.data_ref() {
                    let count = count_tokens(data);
                    if count > 0 {
                        first.get_or_insert_with(Instant::now);
                        tokens += count;
                        totals.tokens.fetch_add(count, Ordering::Relaxed);
                    }
                }
            }
            if let Some(first) = first {
                totals.requests.fetch_add(1, Ordering::Relaxed);
                totals
                    .ttft_micros
                    .fetch_add((first - sent).as_micros() as u64, Ordering::Relaxed);
                if tokens > 1 {
                    totals
                        .itl_micros
                        .fetch_add(first.elapsed().as_micros() as u64, Ordering::Relaxed);
                    totals.itl_samples.fetch_add(tokens - 1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// User + system CPU time of this process in clock ticks (Linux), to show whether the driver
/// itself was the bottleneck.
fn own_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// A distinct lowercase word (base 26, at most 5 letters per token) with a leading space.
fn word(mut n: usize) -> String {
    let mut out = String::from(" ");
    loop {
        out.push((b'a' + (n % 26) as u8) as char);
        n /= 26;
        if n == 0 {
            return out;
        }
    }
}

/// Token chunks in an SSE frame (each carries one `"text":` field).
fn count_tokens(data: &[u8]) -> u64 {
    const NEEDLE: &[u8] = b"\"text\":\"";
    data.windows(NEEDLE.len())
        .filter(|window| *window == NEEDLE)
        .count() as u64
}
