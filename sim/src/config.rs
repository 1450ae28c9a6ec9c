//! Everything that describes one simulated pod. The same struct is the command line (clap) and the
//! library's configuration, so the CLI and in-process tests share one set of defaults.
//!
//! Defaults model Llama-3.1-8B-Instruct (bf16) served by vLLM on one H100 80 GB; `sim/README.md`
//! derives each figure.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};

#[derive(Args, Debug, Clone, PartialEq)]
pub struct PodConfig {
    /// Base model name served (requests may name it or any LoRA adapter).
    #[arg(long, default_value = "meta-llama/Llama-3.1-8B-Instruct")]
    pub model: String,

    /// LoRA adapter names served on top of the base model (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub lora_adapters: Vec<String>,

    /// Adapters resident on the GPU at once (vLLM --max-loras).
    #[arg(long, default_value_t = 4)]
    pub max_loras: usize,

    /// Time to load an absent adapter onto the GPU, in milliseconds (before time scaling).
    #[arg(long, default_value_t = 50.0)]
    pub lora_load_ms: f64,

    /// KV cache capacity in blocks (vLLM num_gpu_blocks).
    #[arg(long, default_value_t = 28_160)]
    pub kv_blocks: usize,

    /// Tokens per KV block; the prefix cache works on full blocks.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,

    /// Longest prompt + completion a request may ask for (vLLM max_model_len).
    #[arg(long, default_value_t = 131_072)]
    pub max_model_len: usize,

    /// Sequences in the running batch at most (vLLM max_num_seqs).
    #[arg(long, default_value_t = 256)]
    pub max_running_seqs: usize,

    /// Tokens scheduled per engine step at most (vLLM max_num_batched_tokens; chunked prefill).
    #[arg(long, default_value_t = 8192)]
    pub max_batched_tokens: usize,

    /// Fixed cost of one engine step (scheduling, sampling, kernel launches), in microseconds.
    #[arg(long, default_value_t = 500.0)]
    pub step_overhead_us: f64,

    /// Time to stream the weights once from HBM: the floor of every step, in microseconds.
    #[arg(long, default_value_t = 6000.0)]
    pub weights_read_us: f64,

    /// Compute time per batched token (prefill or decode) at the achievable FLOP rate, in
    /// microseconds; a step costs the larger of this times its tokens and the weights read.
    #[arg(long, default_value_t = 40.0)]
    pub compute_per_token_us: f64,

    /// Time to read one token's KV cache during decode, in nanoseconds.
    #[arg(long, default_value_t = 49.0)]
    pub kv_read_per_token_ns: f64,

    /// Attention compute per (query token, context token) pair during prefill, in nanoseconds.
    #[arg(long, default_value_t = 1.3)]
    pub attention_per_pair_ns: f64,

    /// Multiplies every simulated duration: 0.1 runs ten times faster than the modelled GPU.
    #[arg(long, default_value_t = 1.0, value_parser = parse_time_scale)]
    pub time_scale: f64,

    /// Completion length when a request sets no max_tokens: the model "stops" after a length
    /// drawn deterministically from the prompt, between 1 and this many tokens.
    #[arg(long, default_value_t = 256)]
    pub natural_completion_tokens: u32,

    /// Largest request body accepted, in bytes (larger ones get 413).
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Log every request (pod, method, path, status) to stderr.
    #[arg(long)]
    pub log_requests: bool,

    /// Publish the prefix cache's KV events as vLLM does (`--kv-events-config`): a ZeroMQ PUB
    /// socket on this port (0 picks a free one). Off unless given. With several pods, pod i
    /// publishes on this port + i.
    #[arg(long)]
    pub kv_events_port: Option<u16>,

    /// ROUTER socket serving replays of missed sequence numbers. Default: the port after the
    /// last pod's PUB port (--kv-events-port + number of pods); pod i uses this port + i.
    #[arg(long, requires = "kv_events_port")]
    pub kv_events_replay_port: Option<u16>,

    /// First frame of every event message (vLLM's `topic`, empty by default).
    #[arg(long, default_value = "")]
    pub kv_events_topic: String,

    /// How each event inside a batch is encoded: `array` (msgspec array_like, vLLM up to the
    /// switch to named fields) or `map` (named fields with a `type` tag, later vLLM).
    #[arg(long, value_enum, default_value_t = KvEventsEncoding::Array)]
    pub kv_events_encoding: KvEventsEncoding,

    /// Batches kept for replay (vLLM's `buffer_steps`).
    #[arg(long, default_value_t = 10_000)]
    pub kv_events_buffer_steps: usize,

    /// A model's Hugging Face `tokenizer.json`: prompt token ids (and so the prefix cache and
    /// the KV events) come from it, as vLLM computes them (`prompt-tokenizer`): completions with
    /// special tokens, chat rendered with the chat template of the `tokenizer_config.json`
    /// beside it (else the built-in Llama-3 format) and encoded without. Generated words get
    /// the tokenizer's ids. Off by default: the built-in stand-in tokenizer.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,

    #[command(flatten)]
    pub faults: FaultConfig,
}

/// Encoding of the events inside a `KVEventBatch` (the batch itself is always an array).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvEventsEncoding {
    /// `["BlockStored", block_hashes, parent_block_hash, ...]`
    Array,
    /// `{"type": "BlockStored", "block_hashes": ..., ...}`
    Map,
}

/// Faults a pod starts with; `POST /admin/fault` changes them at run time.
#[derive(Args, Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Extra delay before each inference response starts, in milliseconds (not time scaled).
    #[arg(long = "fault-latency-ms", default_value_t = 0)]
    pub latency_ms: u64,

    /// Fraction (0..=1) of inference requests answered with 500.
    #[arg(long = "fault-error-rate", default_value_t = 0.0, value_parser = parse_fraction)]
    pub error_rate: f64,

    /// Accept requests but never answer them (admin endpoints still answer).
    #[arg(long = "fault-hang")]
    pub hang: bool,

    /// Close the connection instead of answering, and cut streams in flight.
    #[arg(long = "fault-close-connections")]
    pub close_connections: bool,

    /// Stop listening and drop every connection; the pod's port then refuses connections.
    #[arg(skip)]
    pub die: bool,
}

impl PodConfig {
    /// A simulated duration in real time.
    pub fn scaled(&self, simulated: Duration) -> Duration {
        simulated.mul_f64(self.time_scale)
    }

    /// Checks what clap cannot: relations between fields. The error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("kv-blocks", self.kv_blocks),
            ("block-size", self.block_size),
            ("max-model-len", self.max_model_len),
            ("max-running-seqs", self.max_running_seqs),
            ("max-batched-tokens", self.max_batched_tokens),
            ("max-body-bytes", self.max_body_bytes),
            ("kv-events-buffer-steps", self.kv_events_buffer_steps),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("--{name} must be positive"));
            }
        }
        if self.natural_completion_tokens == 0 {
            return Err("--natural-completion-tokens must be positive".into());
        }
        let durations = [
            ("lora-load-ms", self.lora_load_ms),
            ("step-overhead-us", self.step_overhead_us),
            ("weights-read-us", self.weights_read_us),
            ("compute-per-token-us", self.compute_per_token_us),
            ("kv-read-per-token-ns", self.kv_read_per_token_ns),
            ("attention-per-pair-ns", self.attention_per_pair_ns),
        ];
        for (name, value) in durations {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("--{name} must be a non-negative number"));
            }
        }
        if self.max_model_len > self.kv_blocks * self.block_size {
            return Err(format!(
                "--max-model-len {} exceeds the KV cache ({} blocks of {} tokens); raise --kv-blocks \
                 or lower --max-model-len",
                self.max_model_len, self.kv_blocks, self.block_size
            ));
        }
        if !self.lora_adapters.is_empty() && self.max_loras == 0 {
            return Err("--max-loras must be positive when --lora-adapters are given".into());
        }
        for name in &self.lora_adapters {
            if name.is_empty() || *name == self.model {
                return Err(format!("--lora-adapters: invalid adapter name {name:?}"));
            }
        }
        let mut names = self.lora_adapters.clone();
        names.sort();
        names.dedup();
        if names.len() != self.lora_adapters.len() {
            return Err("--lora-adapters: names must be unique".into());
        }
        parse_time_scale(&self.time_scale.to_string())?;
        parse_fraction(&self.faults.error_rate.to_string())?;
        Ok(())
    }
}

impl Default for PodConfig {
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            config: PodConfig,
        }
        Defaults::parse_from(["inference-sim"]).config
    }
}

fn parse_time_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "time scale must be a positive number, got {text:?}"
        )),
    }
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("must be a fraction between 0 and 1, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_h100_calibration() {
        let config = PodConfig::default();
        config.validate().unwrap();
        assert_eq!(config.block_size, 16);
        assert_eq!(config.kv_blocks, 28_160);
        assert_eq!(config.time_scale, 1.0);
    }

    #[test]
    fn validation_names_the_bad_field() {
        let config = PodConfig {
            block_size: 0,
            ..PodConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("--block-size"));
        let config = PodConfig {
            lora_adapters: vec!["a".into(), "a".into()],
            ..PodConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("--lora-adapters"));
    }
}
