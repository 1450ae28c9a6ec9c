//! `inference-bench suite`: one scenario, every target in turn on the same pods (reset to cold
//! before each), the same requests; results to `<out>/<scenario>.json` after every target.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::client::Outcome;
use crate::loadgen::{self, Load};
use crate::pods::Pods;
use crate::scenario::{KvPorts, Scenario, PODS};
use crate::stats::Summary;
use crate::targets::{self, Env};
use crate::workload::{Session, Workload};

pub struct Suite {
    pub scenario: Scenario,
    pub targets: Vec<String>,
    pub out_dir: PathBuf,
    pub sim_bin: PathBuf,
    /// `taskset -c` list for the simulator (None: not pinned).
    pub sim_cpus: Option<String>,
    pub env: Env,
    pub model: String,
    /// The command line, recorded in the results.
    pub command: String,
    /// A `tokenizer.json` for the pods of a KV-events scenario and the precise targets (`None`:
    /// [`crate::tokenizer::trained`]'s, if it makes one, else the simulator's built-in one).
    pub tokenizer: Option<PathBuf>,
}

pub fn run(suite: &Suite) -> Result<PathBuf, String> {
    let s = &suite.scenario;
    std::fs::create_dir_all(&suite.out_dir).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&suite.env.log_dir).map_err(|e| e.to_string())?;
    let sim_log = suite.env.log_dir.join(format!("{}-sim.log", s.name));
    let mut env = suite.env.clone();
    let (ports, tokenizer) = if s.kv_events {
        let tokenizer = match &suite.tokenizer {
            Some(path) => Some(path.clone()),
            None => {
                crate::tokenizer::trained(&suite.env.log_dir.join(format!("{}-tokenizer", s.name)))?
            }
        };
        (Some(KvPorts::free(PODS)?), tokenizer)
    } else {
        (None, None)
    };
    env.precise_pool = match &ports {
        Some(p) => Ok(p.pool_config(tokenizer.as_deref())),
        None => Err(format!(
            "the {} scenario's pods publish no KV events",
            s.name
        )),
    };
    let sim_args = s.sim_args(ports.as_ref(), tokenizer.as_deref());
    let pods = Pods::start(
        &suite.sim_bin,
        &sim_args,
        suite.sim_cpus.as_deref(),
        &sim_log,
    )?;
    eprintln!("{}: pods {}", s.name, pods.addrs.join(" "));
    let mut workload = s.workload.clone();
    if let Workload::PrefixBursts(w) = &mut workload {
        // Lengths are in tokens: ask the pods what a word of our text costs.
        w.tokens_per_word = pods.tokens_per_word(&suite.model)?;
        eprintln!("{}: {:.3} tokens per word", s.name, w.tokens_per_word);
    }
    let mut described = s.clone();
    described.workload = workload.clone();
    let sessions = workload.sessions(s.seed);
    let out = suite.out_dir.join(format!("{}.json", s.name));
    let mut header = json!({
        "scenario": s.name,
        "command": suite.command,
        "started_at_unix": unix_now(),
        "load_average_at_start": load_average(),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "model": suite.model,
        "setup": described.describe(),
        "sim_args": sim_args,
        "tokenizer": tokenizer.as_ref().map(|p| p.display().to_string()),
        "precise_pool_config": env.precise_pool.as_ref().ok(),
        "results": [],
    });
    for target in &suite.targets {
        let entry = run_target(suite, &env, &pods, target, &sessions);
        eprintln!("{}", line(&entry));
        header["results"]
            .as_array_mut()
            .expect("results array")
            .push(entry);
        header["finished_at_unix"] = json!(unix_now());
        std::fs::write(&out, serde_json::to_string_pretty(&header).expect("json"))
            .map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(out)
}

fn run_target(suite: &Suite, env: &Env, pods: &Pods, target: &str, sessions: &[Session]) -> Value {
    let s = &suite.scenario;
    let skipped = |reason: String| {
        eprintln!("{}: {target} skipped: {reason}", s.name);
        json!({"target": target, "skipped": reason})
    };
    if let Err(e) = pods.reset() {
        return skipped(e);
    }
    let running = match targets::start(target, &pods.addrs, env, &s.name) {
        Ok(r) => r,
        Err(reason) => return skipped(reason),
    };
    let before = match pods.counters() {
        Ok(c) => c,
        Err(e) => return skipped(e),
    };
    let calm = target.ends_with("-below-saturation");
    let load = Load {
        urls: running.urls.clone(),
        model: suite.model.clone(),
        rate: if calm {
            s.calm_rate.unwrap_or(s.rate)
        } else {
            s.rate
        },
        concurrency: s.concurrency,
        seed: s.seed,
        label: format!("{} {target}", s.name),
    };
    let (outcomes, duration) = loadgen::run(&load, sessions);
    let after = pods.counters().unwrap_or(before);
    let per_pod = pods.requests_per_pod();
    let online = running.online_attempts();
    let running_replicas = running.urls.len();
    drop(running);
    let summary = Summary::new(&outcomes, duration, s.time_scale);
    let queries = after.prefix_queries - before.prefix_queries;
    let hits = after.prefix_hits - before.prefix_hits;
    let mut entry = json!({
        "target": target,
        "skipped": null,
        "hit_ratio": if queries > 0.0 { hits / queries } else { 0.0 },
        "ttft_p50_ms": summary.ttft_p50_ms,
        "ttft_p95_ms": summary.ttft_p95_ms,
        "itl_p50_ms": summary.itl_p50_ms,
        "itl_p95_ms": summary.itl_p95_ms,
        "req_per_s": summary.req_per_s,
        "input_tok_per_s": summary.input_tok_per_s,
        "errors": summary.errors,
        "requests_per_pod": per_pod,
        "preemptions": after.preemptions - before.preemptions,
        "online_attempts_in_log": online,
        "gateway_replicas": running_replicas,
        "rate": load.rate,
    });
    if let Some(Value::Object(bursts)) = burst_stats(sessions, &outcomes) {
        entry.as_object_mut().expect("object").extend(bursts);
    }
    let extra = serde_json::to_value(&summary).expect("summary json");
    for (k, v) in extra.as_object().expect("object") {
        entry
            .as_object_mut()
            .expect("object")
            .entry(k.clone())
            .or_insert(v.clone());
    }
    entry
}

/// For burst workloads: how the first request of a group's returning burst fared (cached ÷
/// prompt tokens: it can only hit if the pod it went to still held the group), how many bursts
/// stayed on one pod, and the prompt lengths the pods counted.
fn burst_stats(sessions: &[Session], outcomes: &[Outcome]) -> Option<Value> {
    let mut returns = (0u64, 0u64, 0usize);
    let mut pods_of_burst: std::collections::HashMap<(usize, usize), Vec<usize>> =
        Default::default();
    let (mut prompt, mut requests) = (0u64, 0u64);
    for o in outcomes.iter().filter(|o| o.error.is_none()) {
        let session = &sessions[o.session];
        let (Some(burst), Some(group)) = (session.burst, session.group) else {
            continue;
        };
        prompt += o.prompt_tokens;
        requests += 1;
        if burst.round > 0 && burst.position == 0 {
            returns.0 += o.cached_tokens;
            returns.1 += o.prompt_tokens;
            returns.2 += 1;
        }
        if let Some(pod) = o.pod {
            pods_of_burst
                .entry((group, burst.round))
                .or_default()
                .push(pod);
        }
    }
    if requests == 0 {
        return None;
    }
    let one_pod = pods_of_burst
        .values()
        .filter(|pods| pods.iter().all(|p| *p == pods[0]))
        .count();
    Some(json!({
        "returning_first_requests": returns.2,
        "returning_first_hit_ratio": if returns.1 > 0 { returns.0 as f64 / returns.1 as f64 } else { 0.0 },
        "bursts_on_one_pod": one_pod as f64 / pods_of_burst.len().max(1) as f64,
        "prompt_tokens_mean": prompt as f64 / requests as f64,
    }))
}

/// One line per target for the console.
fn line(e: &Value) -> String {
    if let Some(reason) = e["skipped"].as_str() {
        return format!(
            "{:<22} skipped: {reason}",
            e["target"].as_str().unwrap_or("?")
        );
    }
    let f = |k: &str| e[k].as_f64().map_or("-".to_string(), |v| format!("{v:.1}"));
    format!(
        "{:<22} hit {:.3}  TTFT p50 {} p95 {} ms  ITL p50 {} p95 {} ms  {} req/s  {} in tok/s  errors {}  per pod {}",
        e["target"].as_str().unwrap_or("?"),
        e["hit_ratio"].as_f64().unwrap_or(0.0),
        f("ttft_p50_ms"),
        f("ttft_p95_ms"),
        f("itl_p50_ms"),
        f("itl_p95_ms"),
        f("req_per_s"),
        f("input_tok_per_s"),
        e["errors"],
        e["requests_per_pod"],
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string(Path::new("/proc/loadavg"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
