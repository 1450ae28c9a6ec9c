//! The named scenarios of `make bench`: the reference's workloads scaled to a 2-core machine
//! (bench/README.md explains the scale).

use serde_json::{json, Value};

use crate::workload::{MultiTurn, ShareGptLike, SharedPrefix, Workload};

pub const NAMES: [&str; 8] = [
    "shared-prefix-high",
    "shared-prefix-low",
    "sharegpt",
    "multi-turn",
    "chat-bursty",
    "overload",
    "replicas",
    "seed-scale",
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
        })
    }

    /// The simulator's command line for this scenario (pods on free ports).
    pub fn sim_args(&self) -> Vec<String> {
        [
            "--pods".to_string(),
            PODS.to_string(),
            "--base-port".into(),
            "0".into(),
            "--time-scale".into(),
            self.time_scale.to_string(),
            "--kv-blocks".into(),
            self.kv_blocks().to_string(),
            // Must fit the smaller KV cache; far above any prompt here.
            "--max-model-len".into(),
            "32768".into(),
        ]
        .into_iter()
        .chain(
            self.max_running_seqs
                .map(|n| ["--max-running-seqs".to_string(), n.to_string()])
                .into_iter()
                .flatten(),
        )
        .collect()
    }

    pub fn kv_blocks(&self) -> usize {
        H100_KV_BLOCKS / self.length_divisor
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
