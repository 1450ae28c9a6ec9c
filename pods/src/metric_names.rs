//! Which Prometheus series carry which pod signal. Each signal lists candidate names; the first
//! one present in a scrape wins (vLLM renamed `gpu_cache_usage_perc` to `kv_cache_usage_perc`).

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricNames {
    /// Requests queued, not yet running (gauge; summed over label sets).
    pub waiting: Vec<String>,
    /// Requests running (gauge; summed over label sets).
    pub running: Vec<String>,
    /// KV-cache usage as a fraction 0..1 (gauge; the largest over label sets).
    pub kv_usage: Vec<String>,
    /// vLLM-style LoRA info: labels `running_lora_adapters`, `waiting_lora_adapters`, `max_lora`.
    pub lora_info: Vec<String>,
    /// vLLM-style cache config: labels `num_gpu_blocks`, `block_size`.
    pub cache_config: Vec<String>,
    /// KV capacity in tokens as a value (SGLang's `max_total_num_tokens`).
    pub cache_tokens: Vec<String>,
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

impl MetricNames {
    /// vLLM's metric names (also what `inference-sim` serves).
    pub fn vllm() -> Self {
        MetricNames {
            waiting: names(&["vllm:num_requests_waiting"]),
            running: names(&["vllm:num_requests_running"]),
            kv_usage: names(&["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"]),
            lora_info: names(&["vllm:lora_requests_info"]),
            cache_config: names(&["vllm:cache_config_info"]),
            cache_tokens: Vec::new(),
        }
    }

    /// SGLang's metric names.
    pub fn sglang() -> Self {
        MetricNames {
            waiting: names(&["sglang:num_queue_reqs"]),
            running: names(&["sglang:num_running_reqs"]),
            kv_usage: names(&["sglang:token_usage"]),
            lora_info: Vec::new(),
            cache_config: Vec::new(),
            cache_tokens: names(&["sglang:max_total_num_tokens"]),
        }
    }

    /// Every series name this mapping reads.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        [
            &self.waiting,
            &self.running,
            &self.kv_usage,
            &self.lora_info,
            &self.cache_config,
            &self.cache_tokens,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
    }

    /// A preset by name.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "vllm" => Some(Self::vllm()),
            "sglang" => Some(Self::sglang()),
            _ => None,
        }
    }
}
