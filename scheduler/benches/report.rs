//! The numbers `make bench-scheduler` publishes: percentiles of single decisions (body parsing
//! included), under contention, index memory, and decision time against pod count and prompt
//! size. Writes `target/bench/scheduler.json` (path overridable with `SCHEDULER_BENCH_JSON`)
//! and prints a markdown table. `SCHEDULER_BENCH_QUICK=1` takes a tenth of the samples.
//!
//! Latencies are measured per decision twice: wall clock (the `*_us` keys) and the deciding
//! thread's CPU time (the `*_cpu_us` keys). On a machine shared with other busy processes the
//! wall-clock tails include preemption (a 4 ms scheduler tick), which the CPU time leaves out;
//! the JSON records the load average at the start so readers can tell.

mod workload;

use std::time::Instant;

use scheduler::{PodView, Scheduler};
use workload::counting_alloc::CountingAllocator;
use workload::*;

/// Counts heap allocations, for `allocations_per_decision`.
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const SEED_PODS: usize = 16;
const WARM_BLOCKS: usize = 1_000_000;
/// Headline percentiles are the median over this many rounds, so a burst of load from another
/// process during one round does not decide the figure.
const ROUNDS: usize = 5;

struct Percentiles {
    p50: f64,
    p99: f64,
    cpu_p50: f64,
    cpu_p99: f64,
}

impl Percentiles {
    fn of(mut t: Timings) -> Self {
        Percentiles {
            p50: quantile(&mut t.wall, 0.5),
            p99: quantile(&mut t.wall, 0.99),
            cpu_p50: quantile(&mut t.cpu, 0.5),
            cpu_p99: quantile(&mut t.cpu, 0.99),
        }
    }
}

/// Each percentile as the median of its values over `ROUNDS` rounds of `round`.
fn in_rounds(mut round: impl FnMut(usize) -> Timings) -> Percentiles {
    let rounds: Vec<Percentiles> = (0..ROUNDS).map(|r| Percentiles::of(round(r))).collect();
    let med = |f: fn(&Percentiles) -> f64| median(&mut rounds.iter().map(f).collect::<Vec<_>>());
    Percentiles {
        p50: med(|p| p.p50),
        p99: med(|p| p.p99),
        cpu_p50: med(|p| p.cpu_p50),
        cpu_p99: med(|p| p.cpu_p99),
    }
}

fn median(values: &mut [f64]) -> f64 {
    quantile(values, 0.5)
}

fn main() {
    let quick = std::env::var("SCHEDULER_BENCH_QUICK").is_ok_and(|v| v == "1");
    let samples = if quick { 5_000 } else { 50_000 };
    let load_average = std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| {
        s.split_whitespace()
            .next()
            .and_then(|l| l.parse::<f64>().ok())
    });

    // --- Index memory at the reference's configuration: 31,250 blocks per pod, 6 pods. First,
    // while the heap is fresh, so the resident-memory growth is a fair cross-check. ---
    let (reference_bytes, reference_blocks, rss_delta) = reference_index_memory();

    // --- Seed-like decisions: ~10 KB prompt (8 KB shared system prompt + 2 KB question). ---
    let addresses = addresses(SEED_PODS);
    let metrics = metrics(SEED_PODS);
    let pods = views(&addresses, &metrics);
    let scheduler =
        Scheduler::from_json(r#"{"prefix_index": {"capacity_per_pod": 62500}}"#).unwrap();
    let seed_bodies = bodies(64, 8, 8_000, 2_000);
    let body_bytes = seed_bodies.iter().map(Vec::len).sum::<usize>() / seed_bodies.len();
    warm(&scheduler, &pods, WARM_BLOCKS, &seed_bodies);
    let warm_blocks = scheduler.prefix_index().blocks();
    let warm_bytes = scheduler.prefix_index().bytes();
    time_decisions(&scheduler, &addresses, &seed_bodies, 2_000, 0); // warm caches
    let (allocations, allocated_bytes) =
        allocations_per_decision(&scheduler, &pods, &seed_bodies, 10_000);
    let seed = in_rounds(|round| {
        time_decisions(
            &scheduler,
            &addresses,
            &seed_bodies,
            samples / ROUNDS,
            round * 997,
        )
    });
    let (predicted_hits, request_blocks) = {
        let request =
            scheduler::request::parse(&seed_bodies[3], scheduler::ApiKind::Completions).unwrap();
        let d = scheduler
            .decide(&request, &pods, &Default::default())
            .unwrap();
        (d.prefix_hit_blocks, d.request_blocks)
    };

    // --- Long prompts: 220 KB (200 KB shared + 20 KB own). ---
    let long_bodies = bodies(8, 4, 200_000, 20_000);
    warm(&scheduler, &pods, 0, &long_bodies);
    let (long_allocations, long_allocated_bytes) =
        allocations_per_decision(&scheduler, &pods, &long_bodies, 1_000);
    let long = in_rounds(|round| {
        time_decisions(
            &scheduler,
            &addresses,
            &long_bodies,
            samples / 10 / ROUNDS,
            round * 7,
        )
    });

    // --- Contended: 8 threads deciding at once on the shared scheduler and index, then as many
    // threads as CPUs (the 8-thread wall clock includes waiting for a CPU). ---
    let threads = 8;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut throughputs = Vec::new();
    let contended = in_rounds(|_| {
        let (timings, throughput) = contend(
            &scheduler,
            &addresses,
            &seed_bodies,
            threads,
            samples / ROUNDS,
        );
        throughputs.push(throughput);
        timings
    });
    let contended_throughput = median(&mut throughputs);
    let per_cpu =
        in_rounds(|_| contend(&scheduler, &addresses, &seed_bodies, cpus, samples / ROUNDS).0);

    // --- Decision time against pod count and prompt size. ---
    let pod_counts = [4usize, 16, 64, 256];
    let sizes = [1_000usize, 10_000, 100_000, 1_000_000];
    let mut table = Vec::new();
    for &n in &pod_counts {
        let addresses = workload::addresses(n);
        let metrics = workload::metrics(n);
        let pods = views(&addresses, &metrics);
        let capacity = WARM_BLOCKS.div_ceil(n);
        let scheduler = Scheduler::from_json(&format!(
            r#"{{"prefix_index": {{"capacity_per_pod": {capacity}}}}}"#
        ))
        .unwrap();
        warm(
            &scheduler,
            &pods,
            if quick { WARM_BLOCKS / 10 } else { WARM_BLOCKS },
            &[],
        );
        let mut row = Vec::new();
        for &size in &sizes {
            let system = size * 4 / 5;
            let bodies = bodies(16, 4, system, size - system);
            warm(&scheduler, &pods, 0, &bodies);
            let budget = if quick { 200_000_000 } else { 1_000_000_000 };
            let count = (budget / size.max(50_000)).clamp(200 * ROUNDS, 20_000);
            row.push(in_rounds(|round| {
                time_decisions(&scheduler, &addresses, &bodies, count / ROUNDS, round * 13)
            }));
        }
        table.push((n, row));
    }

    let json = serde_json::json!({
        "decision_p50_us": round(seed.p50),
        "decision_p99_us": round(seed.p99),
        "decision_cpu_p50_us": round(seed.cpu_p50),
        "decision_cpu_p99_us": round(seed.cpu_p99),
        "allocations_per_decision": round(allocations),
        "allocated_bytes_per_decision": round(allocated_bytes),
        "long_prompt_allocations_per_decision": round(long_allocations),
        "long_prompt_allocated_bytes_per_decision": round(long_allocated_bytes),
        "long_prompt_p50_us": round(long.p50),
        "long_prompt_p99_us": round(long.p99),
        "long_prompt_cpu_p50_us": round(long.cpu_p50),
        "long_prompt_cpu_p99_us": round(long.cpu_p99),
        "contended_p50_us": round(contended.p50),
        "contended_p99_us": round(contended.p99),
        "contended_cpu_p50_us": round(contended.cpu_p50),
        "contended_cpu_p99_us": round(contended.cpu_p99),
        "contended_threads": threads,
        "contended_one_thread_per_cpu_p50_us": round(per_cpu.p50),
        "contended_one_thread_per_cpu_p99_us": round(per_cpu.p99),
        "contended_decisions_per_second": contended_throughput.round(),
        "index_bytes_per_block": round(reference_bytes as f64 / reference_blocks as f64),
        "index_bytes_reference_config": reference_bytes,
        "index_blocks_reference_config": reference_blocks,
        "index_rss_growth_bytes_reference_config": rss_delta,
        "warm_index_blocks": warm_blocks,
        "warm_index_bytes": warm_bytes,
        "seed_body_bytes": body_bytes,
        "seed_predicted_prefix_hit_blocks": predicted_hits,
        "seed_request_blocks": request_blocks,
        "pods": SEED_PODS,
        "samples": samples,
        "rounds": ROUNDS,
        "cpus": cpus,
        "load_average_at_start": load_average,
        "decision_us_by_pods_and_prompt": table.iter().map(|(n, row)| {
            let cells = sizes.iter().zip(row).map(|(s, p)| {
                (label(*s), serde_json::json!({
                    "p50": round(p.p50), "p99": round(p.p99),
                    "cpu_p50": round(p.cpu_p50), "cpu_p99": round(p.cpu_p99),
                }))
            });
            (n.to_string(), serde_json::Value::Object(cells.collect()))
        }).collect::<serde_json::Map<_, _>>(),
    });
    // Cargo runs benches from the package directory; the default is the workspace's target/.
    let path = std::env::var("SCHEDULER_BENCH_JSON").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/bench/scheduler.json"
        )
        .into()
    });
    if let Some(dir) = std::path::Path::new(&path).parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap() + "\n").unwrap();

    println!("{}", serde_json::to_string_pretty(&json).unwrap());
    println!("\nwrote {path}\n");
    println!(
        "Decision time in µs, wall-clock p50 / p99 (thread CPU time p99 in brackets); body \
         parsing, scheduling and recording included; index warmed with {WARM_BLOCKS} blocks:\n"
    );
    print!("| pods |");
    for s in sizes {
        print!(" {} prompt |", label(s));
    }
    println!();
    println!("|---:|{}", "---:|".repeat(sizes.len()));
    for (n, row) in &table {
        print!("| {n} |");
        for p in row {
            print!(" {} / {} ({}) |", fmt(p.p50), fmt(p.p99), fmt(p.cpu_p99));
        }
        println!();
    }
}

/// Runs `samples` decisions split over `threads` threads at once on one scheduler; returns
/// their percentiles and the decisions per second achieved.
fn contend(
    scheduler: &Scheduler,
    addresses: &[String],
    bodies: &[Vec<u8>],
    threads: usize,
    samples: usize,
) -> (Timings, f64) {
    let started = Instant::now();
    let mut all = Timings::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    time_decisions(scheduler, addresses, bodies, samples / threads, t * 101)
                })
            })
            .collect();
        for h in handles {
            all.extend(h.join().unwrap());
        }
    });
    let throughput = all.wall.len() as f64 / started.elapsed().as_secs_f64();
    (all, throughput)
}

/// Fills an index the way the reference sized its own (31,250 blocks per pod, 6 pods) and
/// returns its self-reported bytes, its blocks, and the process's resident-memory growth
/// meanwhile (a cross-check of the self-report; 0 where /proc is unavailable).
fn reference_index_memory() -> (usize, usize, i64) {
    let addresses = addresses(6);
    let pods: Vec<PodView<'_>> = addresses.iter().map(|a| PodView::new(a)).collect();
    let rss_before = rss_bytes();
    let scheduler = Scheduler::default();
    warm(&scheduler, &pods, 6 * 31_250, &[]);
    let rss_after = rss_bytes();
    let index = scheduler.prefix_index();
    assert_eq!(index.blocks(), 6 * 31_250);
    let delta = if rss_before > 0 {
        rss_after - rss_before
    } else {
        0
    };
    (index.bytes(), index.blocks(), delta)
}

fn rss_bytes() -> i64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<i64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn fmt(us: f64) -> String {
    if us >= 100.0 {
        format!("{us:.0}")
    } else {
        format!("{us:.1}")
    }
}

fn label(size: usize) -> String {
    if size >= 1_000_000 {
        format!("{} MB", size / 1_000_000)
    } else {
        format!("{} KB", size / 1000)
    }
}
