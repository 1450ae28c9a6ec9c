//! `inference-bench`: the routing benchmark (see bench/README.md).
//!
//! * `inference-bench run --url URL --scenario NAME`: drive one target with a workload and print
//!   the client-side summary as JSON.
//! * `inference-bench suite --scenario NAME`: start the simulated pods and, in turn, every
//!   target in front of them; write `bench/results/<scenario>.json`.

mod client;
mod loadgen;
mod pods;
mod scenario;
mod stats;
mod suite;
mod targets;
mod tokenizer;
mod workload;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use scenario::Scenario;
use workload::Workload;

#[derive(Parser)]
#[command(
    name = "inference-bench",
    about = "LLM routing benchmark: load generator and scenario runner"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send a scenario's workload to one URL and print the summary (JSON).
    Run {
        /// Base URL of the target, e.g. http://127.0.0.1:10000.
        #[arg(long)]
        url: String,
        #[command(flatten)]
        shape: Shape,
        /// Time scale the pods run at (latencies are divided by it, rates multiplied).
        #[arg(long)]
        time_scale: Option<f64>,
    },
    /// Run every target of a scenario against freshly reset simulated pods.
    Suite {
        #[command(flatten)]
        shape: Shape,
        /// Comma-separated targets (default: all eight).
        #[arg(long, value_delimiter = ',')]
        targets: Option<Vec<String>>,
        /// Simulator time scale (1.0 = modelled H100 speed).
        #[arg(long)]
        time_scale: Option<f64>,
        /// Where `<scenario>.json` goes.
        #[arg(long, default_value = "bench/results")]
        out_dir: PathBuf,
        /// Where the simulator's, Envoy's and the routers' logs go.
        #[arg(long, default_value = "target/bench/logs")]
        log_dir: PathBuf,
        #[arg(long, default_value = "target/release/inference-sim")]
        sim_bin: PathBuf,
        /// CPUs for the simulator (`taskset -c` list); unpinned when absent.
        #[arg(long)]
        sim_cpus: Option<String>,
        /// Virtualenv with sglang-router and vllm-router.
        #[arg(long, default_value = "target/router-venv")]
        router_venv: PathBuf,
        /// Envoy worker threads.
        #[arg(long, default_value_t = 1)]
        envoy_concurrency: usize,
        /// A Hugging Face tokenizer.json for a KV-events scenario's pods and precise targets
        /// (default: the one the bench writes itself, if any; else the simulator's built-in).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
    },
}

/// The workload: a named scenario, optionally resized.
#[derive(Args)]
struct Shape {
    /// One of the named scenarios (`inference-bench suite --scenario nope` lists them).
    #[arg(long, default_value = "shared-prefix-high")]
    scenario: String,
    /// Shared-prefix groups (or ShareGPT requests, or conversations, or burst groups).
    #[arg(long)]
    groups: Option<usize>,
    #[arg(long)]
    prompts_per_group: Option<usize>,
    /// Arrivals per second.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long)]
    concurrency: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Divide the reference's prompt/output lengths and the pods' KV cache by this (default 4;
    /// `seed-scale` is 1).
    #[arg(long)]
    length_divisor: Option<usize>,
    #[arg(long, default_value = "meta-llama/Llama-3.1-8B-Instruct")]
    model: String,
}

impl Shape {
    fn scenario(&self, time_scale: Option<f64>) -> Result<Scenario, String> {
        let mut s = Scenario::scaled(&self.scenario, self.length_divisor).ok_or_else(|| {
            format!(
                "unknown scenario {:?} (known: {})",
                self.scenario,
                scenario::NAMES.join(", ")
            )
        })?;
        match &mut s.workload {
            Workload::SharedPrefix(w) => {
                w.groups = self.groups.unwrap_or(w.groups);
                w.prompts_per_group = self.prompts_per_group.unwrap_or(w.prompts_per_group);
            }
            Workload::ShareGptLike(w) => w.requests = self.groups.unwrap_or(w.requests),
            Workload::MultiTurn(w) => w.conversations = self.groups.unwrap_or(w.conversations),
            Workload::PrefixBursts(w) => {
                // Each group returns as often as before: fewer groups, a lower mean rate.
                w.groups = self.groups.unwrap_or(w.groups);
                w.burst_len = self.prompts_per_group.unwrap_or(w.burst_len);
                s.rate = (w.groups * w.burst_len) as f64 / w.mean_return_s;
            }
        }
        s.rate = self.rate.unwrap_or(s.rate);
        s.concurrency = self.concurrency.unwrap_or(s.concurrency);
        s.seed = self.seed.unwrap_or(s.seed);
        s.time_scale = time_scale.unwrap_or(s.time_scale);
        if s.time_scale.is_nan() || s.time_scale <= 0.0 {
            return Err("--time-scale must be > 0".into());
        }
        Ok(s)
    }
}

fn main() {
    let cli = Cli::parse();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let result = match cli.command {
        Cmd::Run {
            url,
            shape,
            time_scale,
        } => shape.scenario(time_scale).map(|s| {
            let load = loadgen::Load {
                urls: vec![url],
                model: shape.model.clone(),
                rate: s.rate,
                concurrency: s.concurrency,
                seed: s.seed,
                label: s.name.clone(),
            };
            let (outcomes, duration) = loadgen::run(&load, &s.workload.sessions(s.seed));
            let summary = stats::Summary::new(&outcomes, duration, s.time_scale);
            println!("{}", serde_json::to_string_pretty(&summary).expect("json"));
        }),
        Cmd::Suite {
            shape,
            targets,
            time_scale,
            out_dir,
            log_dir,
            sim_bin,
            sim_cpus,
            router_venv,
            envoy_concurrency,
            tokenizer,
        } => shape.scenario(time_scale).and_then(|scenario| {
            let targets = targets.unwrap_or_else(|| scenario.targets.clone());
            if let Some(bad) = targets.iter().find(|t| !targets::known(t)) {
                return Err(format!(
                    "unknown target {bad:?} (known: {}, module-default-x<N>, module-precise-x<N>, <target>-below-saturation)",
                    targets::ALL.join(", ")
                ));
            }
            let suite = suite::Suite {
                scenario,
                targets,
                out_dir,
                sim_bin,
                sim_cpus,
                env: targets::Env {
                    router_venv,
                    log_dir,
                    envoy_concurrency,
                    precise_pool: Err("no KV events".into()),
                },
                model: shape.model.clone(),
                command,
                tokenizer,
            };
            suite::run(&suite).map(|out| eprintln!("wrote {}", out.display()))
        }),
    };
    if let Err(e) = result {
        eprintln!("inference-bench: {e}");
        std::process::exit(2);
    }
}
