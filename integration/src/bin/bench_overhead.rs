//! `make bench-overhead`: what the module costs inside Envoy.
//!
//! Starts one stand-in backend and two Envoys in front of it — plain Envoy (ROUND_ROBIN, no
//! module) and Envoy with the module's default profile (queue, KV-cache, prefix and
//! LoRA-affinity scorers, pod metrics scraped from the backend) — and measures both in the same
//! run, in `ROUNDS` rounds (default 5). Each round:
//!
//! 1. latency: the same JSON completion request sent alternately to each Envoy, one at a time
//!    over keep-alive connections, `requests` times each (which Envoy goes first alternates
//!    between rounds); p50/p99 of each;
//! 2. saturation: `SATURATION_CLIENTS` keep-alive clients send back to back for
//!    `SATURATION_SECS`, one Envoy at a time (order alternating between rounds); completed
//!    requests per second, and the Envoy process's CPU time per request over the same window
//!    (steadier than throughput on a busy machine: time another process takes from Envoy's core
//!    lowers req/s but not CPU per request).
//!
//! The reported figure of each is the median over the rounds, with the spread (min, max)
//! beside it. With two or more CPUs, both Envoys (one worker thread each) are pinned to one CPU
//! (`ENVOY_CPU`, default the last), so the worker never migrates and the two are measured on
//! the same core; the JSON says how busy Envoy was at saturation (`*_envoy_cpu_percent`: near
//! 100 when Envoy is the bottleneck, lower when the clients or other processes are).
//!
//! Usage: bench_overhead [requests per target per round (default 1000)] [body KiB (default 10)]
//! Writes target/bench/overhead-<KiB>k.json.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration::{Backend, Envoy, EnvoyConfig, SseGate};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// One target's figures in one round.
#[derive(Clone, Copy, Default)]
struct RoundFigures {
    p50_us: f64,
    p99_us: f64,
    max_rps: f64,
    cpu_us_per_request: f64,
    envoy_cpu_percent: f64,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(1000, |a| a.parse().expect("requests per target per round"));
    let body_kib: usize = args.next().map_or(10, |a| a.parse().expect("body KiB"));
    let rounds: usize = env_or("ROUNDS", 5);
    let clients: usize = env_or("SATURATION_CLIENTS", 32);
    let secs: f64 = env_or("SATURATION_SECS", 3.0);
    let load_at_start = load_average();

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
    let envoy_pids = child_pids();
    assert_eq!(envoy_pids.len(), 2, "expected two Envoy children");
    let envoy_cpu = pin_children(&envoy_pids);

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

    // figures[round][target]
    let mut figures = vec![[RoundFigures::default(); 2]; rounds];
    for (round, fig) in figures.iter_mut().enumerate() {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut samples = [Vec::with_capacity(n), Vec::with_capacity(n)];
        for _ in 0..n {
            for &i in &order {
                samples[i].push(send(&targets[i]));
            }
        }
        for (i, s) in samples.iter_mut().enumerate() {
            s.sort();
            fig[i].p50_us = percentile(s, 0.50);
            fig[i].p99_us = percentile(s, 0.99);
        }
        for &i in &order {
            let (rps, requests, elapsed, cpu) =
                saturate(&targets[i], &body, clients, secs, envoy_pids[i]);
            fig[i].max_rps = rps;
            fig[i].cpu_us_per_request = cpu * 1e6 / requests.max(1) as f64;
            fig[i].envoy_cpu_percent = cpu / elapsed * 100.0;
        }
        println!(
            "round {}: p50 {:.0} / {:.0} µs, p99 {:.0} / {:.0} µs, max {:.0} / {:.0} req/s, \
             Envoy CPU {:.0} / {:.0} µs per request ({:.0} / {:.0} % of a core), plain / module",
            round + 1,
            fig[0].p50_us,
            fig[1].p50_us,
            fig[0].p99_us,
            fig[1].p99_us,
            fig[0].max_rps,
            fig[1].max_rps,
            fig[0].cpu_us_per_request,
            fig[1].cpu_us_per_request,
            fig[0].envoy_cpu_percent,
            fig[1].envoy_cpu_percent,
        );
    }

    let stat = |target: usize, f: fn(&RoundFigures) -> f64| {
        Spread::of(figures.iter().map(|r| f(&r[target])).collect())
    };
    let per_round = |f: fn(&[RoundFigures; 2]) -> f64| Spread::of(figures.iter().map(f).collect());
    let (plain_p50, module_p50) = (stat(0, |f| f.p50_us), stat(1, |f| f.p50_us));
    let (plain_p99, module_p99) = (stat(0, |f| f.p99_us), stat(1, |f| f.p99_us));
    let (plain_rps, module_rps) = (stat(0, |f| f.max_rps), stat(1, |f| f.max_rps));
    let (plain_cpu, module_cpu) = (
        stat(0, |f| f.cpu_us_per_request),
        stat(1, |f| f.cpu_us_per_request),
    );
    // Differences and ratios within each round, then their median: the pairing cancels load
    // that changed between rounds.
    let added_p50 = per_round(|r| r[1].p50_us - r[0].p50_us);
    let added_p99 = per_round(|r| r[1].p99_us - r[0].p99_us);
    let rps_ratio = per_round(|r| r[1].max_rps / r[0].max_rps);
    let added_cpu = per_round(|r| r[1].cpu_us_per_request - r[0].cpu_us_per_request);
    let load_at_end = load_average();

    println!(
        "\nbody {} bytes; {rounds} rounds of {n} sequential requests per target (keep-alive) and \
         {secs} s at saturation ({clients} keep-alive clients); Envoy --concurrency 1 {}; \
         load average {load_at_start:.2} at start, {load_at_end:.2} at end",
        body.len(),
        match envoy_cpu {
            Some(cpu) => format!("pinned to CPU {cpu}"),
            None => "unpinned (one CPU)".into(),
        }
    );
    println!("median over rounds [min–max]:\n");
    println!("| figure | plain Envoy | Envoy + module | module − plain (per round) |");
    println!("|---|---|---|---|");
    println!(
        "| p50 µs | {} | {} | {} |",
        plain_p50.show(0),
        module_p50.show(0),
        added_p50.show_signed(0)
    );
    println!(
        "| p99 µs | {} | {} | {} |",
        plain_p99.show(0),
        module_p99.show(0),
        added_p99.show_signed(0)
    );
    println!(
        "| max req/s | {} | {} | ratio {} |",
        plain_rps.show(0),
        module_rps.show(0),
        rps_ratio.show(3)
    );
    println!(
        "| Envoy CPU µs per request at saturation | {} | {} | {} |",
        plain_cpu.show(1),
        module_cpu.show(1),
        added_cpu.show_signed(1)
    );

    let per_round_json: Vec<_> = figures
        .iter()
        .map(|r| {
            serde_json::json!({
                "plain_p50_us": r[0].p50_us, "module_p50_us": r[1].p50_us,
                "plain_p99_us": r[0].p99_us, "module_p99_us": r[1].p99_us,
                "plain_max_rps": r[0].max_rps, "module_max_rps": r[1].max_rps,
                "plain_cpu_us_per_request": r[0].cpu_us_per_request,
                "module_cpu_us_per_request": r[1].cpu_us_per_request,
            })
        })
        .collect();
    let json = serde_json::json!({
        "body_bytes": body.len(),
        "rounds": rounds,
        "requests_per_target_per_round": n,
        "saturation_clients": clients,
        "saturation_secs": secs,
        "module_profile": "default",
        "envoy_pinned_cpu": envoy_cpu,
        "load_average_at_start": load_at_start,
        "load_average_at_end": load_at_end,
        "plain_p50_us": plain_p50.median, "plain_p50_us_spread": plain_p50.range(),
        "module_p50_us": module_p50.median, "module_p50_us_spread": module_p50.range(),
        "plain_p99_us": plain_p99.median, "plain_p99_us_spread": plain_p99.range(),
        "module_p99_us": module_p99.median, "module_p99_us_spread": module_p99.range(),
        "added_p50_us": added_p50.median, "added_p50_us_spread": added_p50.range(),
        "added_p99_us": added_p99.median, "added_p99_us_spread": added_p99.range(),
        "plain_max_rps": plain_rps.median, "plain_max_rps_spread": plain_rps.range(),
        "module_max_rps": module_rps.median, "module_max_rps_spread": module_rps.range(),
        "max_rps_ratio": rps_ratio.median, "max_rps_ratio_spread": rps_ratio.range(),
        "plain_cpu_us_per_request": plain_cpu.median,
        "plain_cpu_us_per_request_spread": plain_cpu.range(),
        "module_cpu_us_per_request": module_cpu.median,
        "module_cpu_us_per_request_spread": module_cpu.range(),
        "added_cpu_us_per_request": added_cpu.median,
        "added_cpu_us_per_request_spread": added_cpu.range(),
        "plain_envoy_cpu_percent": stat(0, |f| f.envoy_cpu_percent).median,
        "module_envoy_cpu_percent": stat(1, |f| f.envoy_cpu_percent).median,
        "per_round": per_round_json,
    });
    let out = integration::paths::repo_root().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let file = out.join(format!("overhead-{body_kib}k.json"));
    std::fs::write(&file, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("\nwrote {}", file.display());
}

/// Median and range of one figure over the rounds.
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Spread {
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        let median = if values.len() % 2 == 1 {
            values[mid]
        } else {
            (values[mid - 1] + values[mid]) / 2.0
        };
        Spread {
            median,
            min: values[0],
            max: values[values.len() - 1],
        }
    }

    fn range(&self) -> [f64; 2] {
        [self.min, self.max]
    }

    fn show(&self, digits: usize) -> String {
        format!(
            "{:.d$} [{:.d$}–{:.d$}]",
            self.median,
            self.min,
            self.max,
            d = digits
        )
    }

    fn show_signed(&self, digits: usize) -> String {
        format!(
            "{:+.d$} [{:+.d$} to {:+.d$}]",
            self.median,
            self.min,
            self.max,
            d = digits
        )
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Fields of /proc/<pid>/stat after the command name (which may contain spaces).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// User + system CPU seconds of process `pid`, all its threads.
fn process_cpu_seconds(pid: u32) -> f64 {
    let f = stat_fields(pid).expect("Envoy process stat");
    // utime and stime are fields 14 and 15 of stat; index 11 and 12 after the name.
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0 // USER_HZ
}

/// Our child processes (the two Envoys), oldest first.
fn child_pids() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat_fields(pid).is_some_and(|f| f[1] == me))
        .collect();
    pids.sort();
    pids
}

/// Pins every thread of `pids` to one CPU (`ENVOY_CPU`, default the last online CPU) when
/// there is more than one; returns that CPU. The clients and the backend stay on whatever CPUs
/// the caller gave this process: on a 2-CPU machine, pinning them to the other CPU alone makes
/// them the bottleneck (they do twice Envoy's work per request), and the saturation figure
/// would measure them instead of Envoy.
fn pin_children(pids: &[u32]) -> Option<usize> {
    // Online CPUs, e.g. "0-1" (`available_parallelism` would count only the ones we may use).
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    let online = cpu_list(online.trim());
    let cpu = env_or("ENVOY_CPU", *online.last()?);
    if online.len() < 2 || !online.contains(&cpu) {
        return None;
    }
    for pid in pids {
        let status = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("taskset");
        assert!(status.success(), "taskset -a -p -c {cpu} {pid} failed");
    }
    Some(cpu)
}

/// The CPUs of a list such as "0", "0-1" or "0,2-3".
fn cpu_list(list: &str) -> Vec<usize> {
    list.split(',')
        .filter_map(|part| match part.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?..=b.parse().ok()?).collect::<Vec<_>>()),
            None => Some(vec![part.parse().ok()?]),
        })
        .flatten()
        .collect()
}

/// Completed requests per second with `clients` threads sending back to back over keep-alive
/// for `secs` (after a half-second warm-up), with the requests counted, the seconds they took
/// and the CPU seconds Envoy (`envoy_pid`) used meanwhile. A failed request stops the run: a saturation figure that counts errors would flatter
/// a gateway that fails fast.
fn saturate(
    url: &str,
    body: &str,
    clients: usize,
    secs: f64,
    envoy_pid: u32,
) -> (f64, u64, f64, f64) {
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
    std::thread::sleep(Duration::from_millis(500));
    let cpu0 = process_cpu_seconds(envoy_pid);
    counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let n = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds(envoy_pid) - cpu0;
    stop.store(true, Ordering::Relaxed);
    threads
        .into_iter()
        .for_each(|t| t.join().expect("client thread"));
    (n as f64 / elapsed, n, elapsed, cpu)
}
