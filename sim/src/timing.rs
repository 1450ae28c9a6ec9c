//! How long one engine step takes on the modelled GPU: a roofline. A step streams the weights
//! once (memory bound) or computes its batched tokens (compute bound), whichever is slower, then
//! reads the KV cache of every decoding sequence and does prefill attention over the context.

use std::time::Duration;

use crate::config::PodConfig;

/// The work of one step, as the scheduler planned it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepWork {
    /// Prompt (or recomputed) tokens prefilled this step.
    pub prefill_tokens: usize,
    /// (query token, context token) pairs of prefill attention.
    pub prefill_attention_pairs: f64,
    /// Sequences producing one token each.
    pub decode_seqs: usize,
    /// Tokens of KV cache those sequences attend over.
    pub decode_context_tokens: usize,
    /// LoRA adapters loaded onto the GPU before the step can run.
    pub adapter_loads: usize,
}

impl StepWork {
    pub fn is_empty(&self) -> bool {
        self.prefill_tokens == 0 && self.decode_seqs == 0
    }
}

/// Simulated (unscaled) duration of a step.
pub fn step_duration(config: &PodConfig, work: &StepWork) -> Duration {
    let batched = (work.prefill_tokens + work.decode_seqs) as f64;
    let linear_us = (batched * config.compute_per_token_us).max(config.weights_read_us);
    let micros = config.step_overhead_us
        + linear_us
        + work.decode_context_tokens as f64 * config.kv_read_per_token_ns / 1000.0
        + work.prefill_attention_pairs * config.attention_per_pair_ns / 1000.0
        + work.adapter_loads as f64 * config.lora_load_ms * 1000.0;
    Duration::from_secs_f64(micros / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(work: StepWork) -> f64 {
        step_duration(&PodConfig::default(), &work).as_secs_f64() * 1000.0
    }

    #[test]
    fn decode_itl_is_calibrated_for_batch_1_and_256() {
        let single = ms(StepWork {
            decode_seqs: 1,
            decode_context_tokens: 1024,
            ..Default::default()
        });
        assert!((6.0..8.0).contains(&single), "batch 1: {single} ms");
        let full = ms(StepWork {
            decode_seqs: 256,
            decode_context_tokens: 256 * 1024,
            ..Default::default()
        });
        assert!((20.0..30.0).contains(&full), "batch 256: {full} ms");
    }

    #[test]
    fn prefill_runs_at_about_25k_tokens_per_second() {
        let tokens = 8192;
        let pairs = tokens as f64 * tokens as f64 / 2.0;
        let step = ms(StepWork {
            prefill_tokens: tokens,
            prefill_attention_pairs: pairs,
            ..Default::default()
        });
        let rate = tokens as f64 / step * 1000.0;
        assert!((18_000.0..26_000.0).contains(&rate), "{rate} tokens/s");
    }

    #[test]
    fn adapter_loads_add_their_cost() {
        let base = StepWork {
            decode_seqs: 1,
            ..Default::default()
        };
        let loading = StepWork {
            adapter_loads: 1,
            ..base
        };
        assert!((ms(loading) - ms(base) - 50.0).abs() < 1e-6);
    }
}
