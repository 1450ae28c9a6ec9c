//! `make bench-overhead`: latency the module adds to Envoy.
//!
//! Starts one stand-in backend and two Envoys in front of it — plain Envoy (ROUND_ROBIN, no
//! module) and Envoy with the module — then sends the same 10 KB JSON completion request
//! alternately to each, one at a time over keep-alive connections, and reports p50/p99 of both
//! and the difference. Alternating cancels drift in machine load between the two.
//!
//! Then the maximum throughput of each at saturation: `SATURATION_CLIENTS` keep-alive clients
//! (threads) send the same request back to back for `SATURATION_SECS`, one Envoy at a time, and
//! the completed requests per second are reported. The module runs its default profile
//! (queue, KV-cache, prefix and LoRA-affinity scorers, pod metrics scraped from the backend).
//!
//! Usage: bench_overhead [requests per target (default 3000)] [body KiB (default 10)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration::{Backend, Envoy, EnvoyConfig, SseGate};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(3000, |a| a.parse().expect("requests per target"));
    let body_kib: usize = args.next().map_or(10, |a| a.parse().expect("body KiB"));

    let backend = Backend::start(SseGate::default());
    // vLLM-shaped metrics, so the default profile's metric scorers score instead of abstaining.
    backend.set_metrics(
        "vllm:num_requests_waiting{model_name=\"m\"} 0\n\
         vllm:num_requests_running{model_name=\"m\"} 1\n\
         vllm:kv_cache_usage_perc{model_name=\"m\"} 0.25\n",
    );
    let mut plain_config = EnvoyConfig::new(vec![backend.addr.clone()]);
    plain_config.module = false;
    plain_config.concurrency = 1;
    // `{"scheduler": {}}`: the scheduler's default profile, spelled out.
    let mut module_config =
        EnvoyConfig::new(vec![backend.addr.clone()]).filter_config(r#"{"scheduler": {}}"#);
    module_config.concurrency = 1;
    let plain = Envoy::start(&plain_config);
    let module = Envoy::start(&module_config);

    let words = "the quick brown fox jumps over the lazy dog ".repeat(body_kib * 1024 / 44 + 1);
    let body = serde_json::json!({ "model": "m", "prompt": &words[..body_kib * 1024 - 40], "max_tokens": 1 })
        .to_string();
    let agent = ureq::AgentBuilder::new()
        .max_idle_connections_per_host(1)
        .build();
    let send = |url: &str| {
        let start = Instant::now();
        let resp = agent
            .post(url)
            .set("content-type", "application/json")
            .send_string(&body)
            .expect("request");
        let _ = resp.into_string();
        start.elapsed()
    };
    let targets = [
        format!("{}/v1/completions", plain.url),
        format!("{}/v1/completions", module.url),
    ];
    for _ in 0..200 {
        for t in &targets {
            send(t);
        }
    }
    let mut samples = [Vec::with_capacity(n), Vec::with_capacity(n)];
    for _ in 0..n {
        for (i, t) in targets.iter().enumerate() {
            samples[i].push(send(t));
        }
    }
    samples.iter_mut().for_each(|s| s.sort());
    let [plain_s, module_s] = &samples;
    let (p50_plain, p99_plain) = (percentile(plain_s, 0.50), percentile(plain_s, 0.99));
    let (p50_mod, p99_mod) = (percentile(module_s, 0.50), percentile(module_s, 0.99));

    println!(
        "body {} bytes, {n} requests per target, sequential, keep-alive, Envoy --concurrency 1",
        body.len()
    );
    println!("| target | p50 µs | p99 µs |");
    println!("|---|---|---|");
    println!("| plain Envoy | {p50_plain:.0} | {p99_plain:.0} |");
    println!("| Envoy + module | {p50_mod:.0} | {p99_mod:.0} |");
    println!(
        "| added | {:+.0} ({:.2}×) | {:+.0} ({:.2}×) |",
        p50_mod - p50_plain,
        p50_mod / p50_plain,
        p99_mod - p99_plain,
        p99_mod / p99_plain
    );
    let clients: usize = env_or("SATURATION_CLIENTS", 32);
    let secs: f64 = env_or("SATURATION_SECS", 5.0);
    let max_plain = saturate(&targets[0], &body, clients, secs);
    let max_mod = saturate(&targets[1], &body, clients, secs);
    println!(
        "saturation ({clients} keep-alive clients, {secs} s each): plain {max_plain:.0} req/s, \
         with module {max_mod:.0} req/s ({:.2}×)",
        max_mod / max_plain
    );
    let json = serde_json::json!({
        "saturation_clients": clients, "saturation_secs": secs,
        "plain_max_req_per_s": max_plain, "module_max_req_per_s": max_mod,
        "module_profile": "default",
        "load_average_at_end": std::fs::read_to_string("/proc/loadavg").ok()
            .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok()),
        "body_bytes": body.len(), "requests_per_target": n,
        "plain_p50_us": p50_plain, "plain_p99_us": p99_plain,
        "module_p50_us": p50_mod, "module_p99_us": p99_mod,
        "added_p50_us": p50_mod - p50_plain, "added_p99_us": p99_mod - p99_plain,
        "ratio_p50": p50_mod / p50_plain, "ratio_p99": p99_mod / p99_plain,
    });
    let out = integration::paths::repo_root().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let file = out.join(format!("overhead-{body_kib}k.json"));
    std::fs::write(&file, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("wrote {}", file.display());
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Completed requests per second with `clients` threads sending back to back over keep-alive
/// for `secs` (after a one-second warm-up). A failed request stops the run: a saturation figure
/// that counts errors would flatter a gateway that fails fast.
fn saturate(url: &str, body: &str, clients: usize, secs: f64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (url, body) = (url.to_string(), body.to_string());
            let (done, counting, stop) = (done.clone(), counting.clone(), stop.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .max_idle_connections_per_host(1)
                    .build();
                while !stop.load(Ordering::Relaxed) {
                    let resp = agent
                        .post(&url)
                        .set("content-type", "application/json")
                        .send_string(&body)
                        .expect("request at saturation");
                    let _ = resp.into_string();
                    if counting.load(Ordering::Relaxed) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let n = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    threads
        .into_iter()
        .for_each(|t| t.join().expect("client thread"));
    n as f64 / elapsed
}
