//! `make bench-scrape`: what keeping pod state fresh costs.
//!
//! Starts `inference-sim` with N pods in a separate process (pinned to another core when it
//! can), runs the module's scraper against them for a while at its default 50 ms interval, and
//! reports this process's CPU time (the scraper is all it runs), scrapes per second, and how
//! long one round over all pods takes on average. The CPU share is also taken over each second
//! of the window, and the spread (min, max) of those reported beside it.
//!
//! Usage: bench_scrape [seconds per size (default 10)] [pod counts... (default 16 256)]
//! Writes target/bench/scrape.json (`cpu_percent_<n>_pods` and more for each size).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pods::{PodRegistry, ScrapeConfig, Scraper};

/// CPU seconds (user + system) this process has used, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name (which is in parentheses and may contain spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(10, |a| a.parse().expect("seconds"));
    let mut sizes: Vec<usize> = args.map(|a| a.parse().expect("pod count")).collect();
    if sizes.is_empty() {
        sizes = vec![16, 256];
    }
    let sim_bin = integration::paths::repo_root().join("target/release/inference-sim");
    let load_at_start = load_average();
    let mut json = serde_json::Map::new();
    println!("| pods | scrapes/s (ideal) | round time ms (interval 50) | scraper CPU % of a core [min–max per second] | CPU µs per scrape | failed |");
    println!("|---|---|---|---|---|---|");
    for n in sizes {
        let mut sim = Command::new("taskset")
            .args(["-c", "1"])
            .arg(&sim_bin)
            .args([
                "--pods",
                &n.to_string(),
                "--base-port",
                "0",
                "--time-scale",
                "0.1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start inference-sim (run `make build` first)");
        let mut addrs = Vec::new();
        for line in BufReader::new(sim.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(addr) = line
                .rsplit(' ')
                .next()
                .filter(|_| line.contains("listening on"))
            {
                addrs.push(addr.to_owned());
            }
            if addrs.len() == n {
                break;
            }
        }
        let registry = Arc::new(PodRegistry::new());
        registry.sync(addrs.iter().map(String::as_str));
        let scraper = Scraper::start(Arc::clone(&registry), &ScrapeConfig::default()).unwrap();
        std::thread::sleep(Duration::from_secs(1)); // connections established
        let (ok0, failed0) = (
            scraper.stats().succeeded.load(Ordering::Relaxed),
            scraper.stats().failed.load(Ordering::Relaxed),
        );
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let mut per_second = Vec::new();
        for _ in 0..seconds {
            let (c, t) = (cpu_seconds(), Instant::now());
            std::thread::sleep(Duration::from_secs(1));
            per_second.push((cpu_seconds() - c) / t.elapsed().as_secs_f64() * 100.0);
        }
        per_second.sort_by(f64::total_cmp);
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let ok = scraper.stats().succeeded.load(Ordering::Relaxed) - ok0;
        let failed = scraper.stats().failed.load(Ordering::Relaxed) - failed0;
        drop(scraper);
        let _ = sim.kill();
        let _ = sim.wait();
        let rate = ok as f64 / elapsed;
        let ideal = n as f64 / 0.05;
        let round_ms = elapsed * 1000.0 / (ok as f64 / n as f64);
        let cpu_percent = cpu / elapsed * 100.0;
        let us_per_scrape = cpu * 1e6 / ok.max(1) as f64;
        let (lo, hi) = (per_second[0], per_second[per_second.len() - 1]);
        println!(
            "| {n} | {rate:.0} ({ideal:.0}) | {round_ms:.1} | {cpu_percent:.1} [{lo:.1}–{hi:.1}] | {us_per_scrape:.0} | {failed} |"
        );
        let mut put = |key: String, value: serde_json::Value| json.insert(key, value);
        put(format!("cpu_percent_{n}_pods"), cpu_percent.into());
        put(
            format!("cpu_percent_{n}_pods_spread"),
            serde_json::json!([lo, hi]),
        );
        put(format!("cpu_us_per_scrape_{n}_pods"), us_per_scrape.into());
        put(format!("scrapes_per_s_{n}_pods"), rate.into());
        put(format!("round_ms_{n}_pods"), round_ms.into());
        put(format!("failed_{n}_pods"), failed.into());
    }
    json.insert("seconds_per_size".into(), seconds.into());
    json.insert("interval_ms".into(), 50.into());
    json.insert("load_average_at_start".into(), load_at_start.into());
    json.insert("load_average_at_end".into(), load_average().into());
    let out = integration::paths::repo_root().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let file = out.join("scrape.json");
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(json)).unwrap();
    std::fs::write(&file, text + "\n").unwrap();
    println!("\nwrote {}", file.display());
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
