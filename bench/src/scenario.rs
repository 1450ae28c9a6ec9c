//! The named scenarios of `make bench`: the reference's workloads scaled to a 2-core machine
//! (bench/README.md explains the scale).

use serde_json::{json, Value};

use crate::workload::{MultiTurn, ShareGptLike, SharedPrefix, Workload};

pub const NAMES: [&str; 4] = [
    "shared-prefix-high",
    "shared-prefix-low",
    "sharegpt",
    "multi-turn",
];

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
}

impl Scenario {
    #[cfg(test)]
    pub fn named(name: &str) -> Option<Scenario> {
        Self::scaled(name, LENGTH_DIVISOR)
    }

    /// The scenario with lengths and KV cache divided by `d` (1: the reference's own sizes).
    pub fn scaled(name: &str, d: usize) -> Option<Scenario> {
        let d = d.max(1);
        let shared = |system: usize, question: usize| {
            Workload::SharedPrefix(SharedPrefix {
                groups: 256,
                prompts_per_group: 16,
                system_len: system / d,
                question_len: question / d,
                output_len: (256 / d) as u32,
            })
        };
        let workload = match name {
            "shared-prefix-high" => shared(2048, 256),
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
        Some(Scenario {
            name: name.to_string(),
            workload,
            rate: 800.0,
            concurrency: 300,
            time_scale: 1.0,
            seed: 1,
            length_divisor: d,
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
        .to_vec()
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
