//! `make bench-overhead`: latency the module adds to Envoy.
//!
//! Starts one stand-in backend and two Envoys in front of it — plain Envoy (ROUND_ROBIN, no
//! module) and Envoy with the module — then sends the same 10 KB JSON completion request
//! alternately to each, one at a time over keep-alive connections, and reports p50/p99 of both
//! and the difference. Alternating cancels drift in machine load between the two.
//!
//! Usage: bench_overhead [requests per target (default 3000)] [body KiB (default 10)]

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
    let mut plain_config = EnvoyConfig::new(vec![backend.addr.clone()]);
    plain_config.module = false;
    plain_config.concurrency = 1;
    let mut module_config = EnvoyConfig::new(vec![backend.addr.clone()]);
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
    let json = serde_json::json!({
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
