//! `make bench-scrape`: what keeping pod state fresh costs.
//!
//! Starts `inference-sim` with N pods in a separate process (pinned to another core when it
//! can), runs the module's scraper against them for a while at its default 50 ms interval, and
//! reports this process's CPU time (the scraper is all it runs), scrapes per second, and how
//! long one round over all pods takes on average.
//!
//! Usage: bench_scrape [seconds per size (default 10)] [pod counts... (default 16 256)]

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
    println!("| pods | scrapes/s (ideal) | round time ms (interval 50) | scraper CPU % of a core | CPU µs per scrape | failed |");
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
        std::thread::sleep(Duration::from_secs(seconds));
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
        println!(
            "| {n} | {rate:.0} ({ideal:.0}) | {round_ms:.1} | {:.1} | {:.0} | {failed} |",
            cpu / elapsed * 100.0,
            cpu * 1e6 / ok.max(1) as f64
        );
    }
}
