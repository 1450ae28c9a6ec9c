//! The named scenarios of `make bench`: the reference's workloads scaled to a 2-core machine
//! (bench/README.md explains the scale).

use std::path::Path;

use serde_json::{json, Value};

use crate::workload::{MultiTurn, PrefixBursts, ShareGptLike, SharedPrefix, Workload};

pub const NAMES: [&str; 9] = [
    "shared-prefix-high",
    "shared-prefix-low",
    "sharegpt",
    "multi-turn",
    "chat-bursty",
    "overload",
    "replicas",
    "seed-scale",
    "kv-events",
];

/// `overload`'s pods: so few batch slots that 3 pods drain far less than is offered.
pub const OVERLOAD_BATCH: usize = 8;

/// Lengths are the reference's divided by this by default (2048 + 256 → 512 + 64, 256 output →
/// 64), and so is each pod's KV cache, so prompts fill the same share of a pod's memory as on an
/// H100.
pub const LENGTH_DIVISOR: usize = 4;

/// The reference's pods: one simulated H100 each.
pub const PODS: usize = 3;

/// vLLM's KV blocks for Llama-3.1-8B on an H100 80 GB; a pod gets this ÷ the length divisor.
pub const H100_KV_BLOCKS: usize = 28_160;

/// `kv-events`' KV blocks per pod at the reference's lengths (÷ the length divisor like them): the
/// 128 system prompts (2048 tokens, 128 blocks each: 16,384 blocks) do not fit in the 3 pods
/// together (15,360 blocks), let alone beside the questions and answers, so pods evict groups
/// between their bursts.
pub const KV_EVENTS_KV_BLOCKS: usize = 5_120;

/// `kv-events`' pods: batch slots (vLLM max_num_seqs) few enough that overlapping bursts queue on
/// a pod, so load-aware routers split bursts and a group lands on several pods.
pub const KV_EVENTS_BATCH: usize = 24;

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub workload: Workload,
    /// Session arrivals per second.
    pub rate: f64,
    pub concurrency: usize,
    pub time_scale: f64,
    pub seed: u64,
    pub length_divisor: usize,
    /// The targets run by default (all eight unless the scenario is about something else).
    pub targets: Vec<String>,
    /// `--max-running-seqs` of the pods (the simulator's default 256 when `None`).
    pub max_running_seqs: Option<usize>,
    /// Arrival rate of the `-below-saturation` targets (the same workload, calm).
    pub calm_rate: Option<f64>,
    /// KV blocks per pod when not [`H100_KV_BLOCKS`] ÷ the length divisor.
    pub kv_blocks: Option<usize>,
    /// Whether the pods publish KV-cache events (on fixed ports, see [`KvPorts`]).
    pub kv_events: bool,
}

/// Fixed ports for pods that publish KV events: pod i serves HTTP on `http + i`, publishes on
/// `publish + i` and replays on `replay + i`, so one offset from the HTTP port finds each
/// pod's event sockets (the pool setting `publish_port_offset` / `replay_port_offset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvPorts {
    pub http: u16,
    pub publish: u16,
    pub replay: u16,
}

impl KvPorts {
    /// Three runs of `pods` consecutive ports that are free now (HTTP, publish, replay).
    pub fn free(pods: usize) -> Result<KvPorts, String> {
        let span = 3 * pods as u16;
        let mut rng = fastrand::Rng::new();
        for _ in 0..200 {
            let base = rng.u16(20_000..60_000);
            let free =
                (base..base + span).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
            if free {
                return Ok(KvPorts {
                    http: base,
                    publish: base + pods as u16,
                    replay: base + 2 * pods as u16,
                });
            }
        }
        Err(format!("no {span} consecutive free ports"))
    }

    /// The pool's settings (the cluster's `lb_policy_config`) for the precise targets: where
    /// each pod's events are, and the tokenizer the pods use, when there is one.
    pub fn pool_config(&self, tokenizer: Option<&Path>) -> String {
        let offset = |port: u16| i32::from(port) - i32::from(self.http);
        let mut pool = json!({"kv_events": {
            "publish_port_offset": offset(self.publish),
            "replay_port_offset": offset(self.replay),
            "block_size": 16,
        }});
        if let Some(path) = tokenizer {
            pool["tokenizer"] = json!({"path": path.display().to_string()});
        }
        pool.to_string()
    }
}

impl Scenario {
    #[cfg(test)]
    pub fn named(name: &str) -> Option<Scenario> {
        Self::scaled(name, None)
    }

    /// The scenario with lengths and KV cache divided by `d` (1: the reference's own sizes;
    /// `None`: the scenario's own, [`LENGTH_DIVISOR`] except for `seed-scale`, which is 1).
    pub fn scaled(name: &str, d: Option<usize>) -> Option<Scenario> {
        let d = d
            .unwrap_or(if name == "seed-scale" {
                1
            } else {
                LENGTH_DIVISOR
            })
            .max(1);
        let shared = |system: usize, question: usize| {
            Workload::SharedPrefix(SharedPrefix {
                groups: 256,
                prompts_per_group: 16,
                system_len: system / d,
                question_len: question / d,
                output_len: (256 / d) as u32,
            })
        };
        let all = || crate::targets::ALL.map(String::from).to_vec();
        let some = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (mut rate, mut concurrency, mut targets) = (800.0, 300, all());
        let (mut max_running_seqs, mut calm_rate) = (None, None);
        let (mut kv_blocks, mut kv_events) = (None, false);
        let workload = match name {
            "shared-prefix-high" | "seed-scale" => shared(2048, 256),
            // 128 conversations that all start at once, 6 turns each.
            "chat-bursty" => {
                rate = f64::INFINITY;
                targets = some(&[
                    "envoy-round-robin",
                    "module-default",
                    "sglang-cache-aware",
                    "vllm-router",
                ]);
                Workload::MultiTurn(MultiTurn {
                    conversations: 128,
                    turns: 6,
                    message_median: 256.0 / d as f64,
                    output_len: (256 / d) as u32,
                })
            }
            // High sharing on pods with 8 batch slots each: 3 pods drain far less than 800/s.
            "overload" => {
                max_running_seqs = Some(OVERLOAD_BATCH);
                calm_rate = Some(20.0);
                targets = some(&[
                    "envoy-round-robin",
                    "envoy-least-request",
                    "module-default",
                    "sglang-cache-aware",
                    "module-default-below-saturation",
                ]);
                Workload::SharedPrefix(SharedPrefix {
                    groups: 64,
                    prompts_per_group: 16,
                    system_len: 2048 / d,
                    question_len: 256 / d,
                    output_len: (256 / d) as u32,
                })
            }
            // The default profile through 1, 2 and 4 Envoy replicas on the same pods.
            "replicas" => {
                targets = some(&[
                    "module-default-x1",
                    "module-default-x2",
                    "module-default-x4",
                ]);
                shared(2048, 256)
            }
            // Prefix groups that come and go in bursts on pods too small to keep them all: the
            // pods' caches and any gateway's routing history part ways (bench/README.md).
            "kv-events" => {
                kv_events = true;
                kv_blocks = Some(KV_EVENTS_KV_BLOCKS / d);
                max_running_seqs = Some(KV_EVENTS_BATCH);
                concurrency = 256;
                targets = some(&[
                    "envoy-round-robin",
                    "module-default-x1",
                    "module-precise-x1",
                    "module-default-x4",
                    "module-precise-x4",
                    "sglang-cache-aware",
                    "vllm-router",
                ]);
                let w = PrefixBursts {
                    groups: 128,
                    bursts_per_group: 4,
                    burst_len: 8,
                    system_len: 2048 / d,
                    question_len: 128 / d,
                    output_len: (256 / d) as u32,
                    burst_rate: 50.0,
                    mean_return_s: 10.24,
                    tokens_per_word: 1.0,
                };
                // Mean arrivals: 128 groups × 8 requests every 10.24 s = 100 requests/s, about
                // two thirds of what the 3 pods with 24 batch slots drain.
                rate = (w.groups * w.burst_len) as f64 / w.mean_return_s;
                Workload::PrefixBursts(w)
            }
            "shared-prefix-low" => shared(256, 2048),
            "sharegpt" => Workload::ShareGptLike(ShareGptLike {
                requests: 4096,
                input_median: 256.0 / d as f64,
                output_median: 192.0 / d as f64,
                sigma: 1.0,
                max_input: 8192 / d,
                max_output: (2048 / d) as u32,
            }),
            "multi-turn" => Workload::MultiTurn(MultiTurn {
                conversations: 512,
                turns: 6,
                message_median: 256.0 / d as f64,
                output_len: (256 / d) as u32,
            }),
            _ => return None,
        };
        concurrency = concurrency.max(1);
        Some(Scenario {
            name: name.to_string(),
            workload,
            rate,
            concurrency,
            time_scale: 1.0,
            seed: 1,
            length_divisor: d,
            targets,
            max_running_seqs,
            calm_rate,
            kv_blocks,
            kv_events,
        })
    }

    /// The simulator's command line for this scenario: pods on free ports, or on `ports` with
    /// KV events; `tokenizer` (a `tokenizer.json`) replaces the simulator's built-in one.
    pub fn sim_args(&self, ports: Option<&KvPorts>, tokenizer: Option<&Path>) -> Vec<String> {
        let mut args: Vec<String> = match ports {
            None => vec!["--base-port".into(), "0".into()],
            Some(p) => vec![
                "--base-port".into(),
                p.http.to_string(),
                "--kv-events-port".into(),
                p.publish.to_string(),
                "--kv-events-replay-port".into(),
                p.replay.to_string(),
            ],
        };
        if let Some(path) = tokenizer {
            args.extend(["--tokenizer".into(), path.display().to_string()]);
        }
        [
            "--pods".to_string(),
            PODS.to_string(),
            "--time-scale".into(),
            self.time_scale.to_string(),
            "--kv-blocks".into(),
            self.kv_blocks().to_string(),
            // Must fit the KV cache; far above any prompt here.
            "--max-model-len".into(),
            (self.kv_blocks() * 16).min(32_768).to_string(),
        ]
        .into_iter()
        .chain(
            self.max_running_seqs
                .map(|n| ["--max-running-seqs".to_string(), n.to_string()])
                .into_iter()
                .flatten(),
        )
        .chain(args)
        .collect()
    }

    pub fn kv_blocks(&self) -> usize {
        self.kv_blocks
            .unwrap_or(H100_KV_BLOCKS / self.length_divisor)
    }

    /// A description for the results file.
    pub fn describe(&self) -> Value {
        let workload = match &self.workload {
            Workload::SharedPrefix(w) => json!({
                "kind": "shared-prefix", "groups": w.groups, "prompts_per_group": w.prompts_per_group,
                "system_len": w.system_len, "question_len": w.question_len, "output_len": w.output_len,
                "requests": w.groups * w.prompts_per_group,
                // Hits if every group stayed on one pod and nothing were evicted: all but the
                // first request of a group reuse the system prompt's full 16-token blocks.
                "hit_ratio_ceiling": shared_prefix_ceiling(w),
            }),
            Workload::ShareGptLike(w) => json!({
                "kind": "sharegpt-like", "requests": w.requests, "input_median": w.input_median,
                "output_median": w.output_median, "sigma": w.sigma,
                "max_input": w.max_input, "max_output": w.max_output,
            }),
            Workload::MultiTurn(w) => json!({
                "kind": "multi-turn", "conversations": w.conversations, "turns": w.turns,
                "message_median": w.message_median, "output_len": w.output_len,
            }),
            Workload::PrefixBursts(w) => json!({
                "kind": "prefix-bursts", "groups": w.groups, "bursts_per_group": w.bursts_per_group,
                "burst_len": w.burst_len, "system_len": w.system_len, "question_len": w.question_len,
                "output_len": w.output_len, "burst_rate": w.burst_rate,
                "mean_return_s": w.mean_return_s, "tokens_per_word": w.tokens_per_word,
                "system_words": w.words_for(w.system_len), "question_words": w.words_for(w.question_len),
                "requests": w.requests(),
                // Nothing evicted, every group on one pod: only a group's very first request misses.
                "hit_ratio_ceiling": bursts_ceiling(w, w.bursts_per_group * w.burst_len),
                // Every group evicted everywhere between its bursts: each burst's first misses.
                "hit_ratio_if_every_return_misses": bursts_ceiling(w, w.burst_len),
            }),
        };
        json!({
            "workload": workload,
            "rate": self.rate,
            "max_concurrency": self.concurrency,
            "seed": self.seed,
            "pods": PODS,
            "kv_blocks_per_pod": self.kv_blocks(),
            "time_scale": self.time_scale,
            "length_divisor": self.length_divisor,
            "max_running_seqs": self.max_running_seqs,
            "kv_events": self.kv_events,
            "below_saturation_rate": self.calm_rate,
        })
    }
}

/// The best prefix-cache hit ratio a shared-prefix workload allows (vLLM caches full 16-token
/// blocks; the prompt starts with one BOS token, and the last prompt token is always computed).
pub fn shared_prefix_ceiling(w: &SharedPrefix) -> f64 {
    let prompt = 1 + w.system_len + 1 + w.question_len; // BOS, system, "\n", question
    let shared_blocks = (1 + w.system_len) / 16;
    let reuses = w.prompts_per_group.saturating_sub(1) as f64;
    reuses * (shared_blocks * 16) as f64 / (w.prompts_per_group * prompt) as f64
}

/// The hit ratio of a [`PrefixBursts`] workload if every `run` consecutive requests of a group
/// found its system prompt cached after the run's first (in full 16-token blocks, lengths in
/// tokens as configured).
pub fn bursts_ceiling(w: &PrefixBursts, run: usize) -> f64 {
    let prompt = 1 + w.system_len + 1 + w.question_len;
    let shared_blocks = (1 + w.system_len) / 16;
    run.saturating_sub(1) as f64 * (shared_blocks * 16) as f64 / (run * prompt) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_scenario_exists_and_unknown_is_none() {
        for name in NAMES {
            assert_eq!(Scenario::named(name).unwrap().name, name);
        }
        assert!(Scenario::named("nope").is_none());
    }

    #[test]
    fn kv_events_pods_publish_on_fixed_ports_the_pool_finds_by_offset() {
        let s = Scenario::named("kv-events").unwrap();
        assert!(s.kv_events);
        let ports = KvPorts {
            http: 30_000,
            publish: 30_003,
            replay: 30_006,
        };
        let args = s.sim_args(Some(&ports), Some(Path::new("/t/tokenizer.json")));
        let after = |flag: &str| {
            let i = args.iter().position(|a| a == flag).expect(flag);
            args[i + 1].as_str()
        };
        assert_eq!(after("--base-port"), "30000");
        assert_eq!(after("--kv-events-port"), "30003");
        assert_eq!(after("--kv-events-replay-port"), "30006");
        assert_eq!(after("--tokenizer"), "/t/tokenizer.json");
        assert_eq!(after("--kv-blocks"), s.kv_blocks().to_string());
        assert_eq!(after("--max-running-seqs"), KV_EVENTS_BATCH.to_string());
        let pool: Value =
            serde_json::from_str(&ports.pool_config(Some(Path::new("/t/tokenizer.json")))).unwrap();
        assert_eq!(
            pool,
            json!({"kv_events": {"publish_port_offset": 3, "replay_port_offset": 6, "block_size": 16},
                   "tokenizer": {"path": "/t/tokenizer.json"}})
        );
        // Without KV events or a tokenizer: free ports, the built-in tokenizer.
        let plain = Scenario::named("shared-prefix-high")
            .unwrap()
            .sim_args(None, None);
        assert!(plain.windows(2).any(|w| w == ["--base-port", "0"]));
        assert!(!plain
            .iter()
            .any(|a| a.starts_with("--kv-events") || a == "--tokenizer"));
        let free = KvPorts::free(3).unwrap();
        assert_eq!((free.publish - free.http, free.replay - free.http), (3, 6));
    }

    #[test]
    fn kv_events_groups_do_not_fit_the_pods_caches() {
        let s = Scenario::named("kv-events").unwrap();
        let Workload::PrefixBursts(w) = &s.workload else {
            panic!("prefix bursts")
        };
        let system_blocks = w.groups * w.system_len / 16;
        assert!(system_blocks > PODS * s.kv_blocks(), "{system_blocks}");
        let (all, every_return_misses) = (
            bursts_ceiling(w, w.bursts_per_group * w.burst_len),
            bursts_ceiling(w, w.burst_len),
        );
        assert!(
            all > every_return_misses + 0.05,
            "{all} {every_return_misses}"
        );
    }

    #[test]
    fn high_sharing_ceiling_is_below_the_reference_target() {
        let Some(Scenario {
            workload: Workload::SharedPrefix(w),
            ..
        }) = Scenario::named("shared-prefix-high")
        else {
            panic!("shared-prefix scenario")
        };
        assert_eq!((w.system_len, w.question_len, w.output_len), (512, 64, 64));
        let c = shared_prefix_ceiling(&w);
        // 15/16 × 512/578 ≈ 0.83: the system prompt is 8/9 of the prompt, so 0.89 is out of reach.
        assert!((0.82..0.84).contains(&c), "{c}");
    }
}
