//! A pod's Prometheus text exposition turned into `scheduler::PodMetrics`.

use std::time::Instant;

use prom_text_format_parser::{Metric, Scrape};
use scheduler::{CacheGeometry, PodMetrics};

use crate::metric_names::MetricNames;

/// Parses `text` scraped at `scraped_at`. Signals absent from the scrape keep their neutral
/// value (0 queued, 0 running, empty cache, no adapters); text that is not Prometheus
/// exposition, or that has none of the queue/KV signals, is an error.
pub fn parse(text: &str, names: &MetricNames, scraped_at: Instant) -> Result<PodMetrics, String> {
    // Only the samples of the series we read go to the parser: a vLLM scrape is mostly
    // histograms we ignore, and skipping them cuts the parse cost several-fold. Comments go
    // too: Python's Prometheus client (vLLM, SGLang) declares a counter `x` in `# TYPE` but
    // writes `x_total` samples, which the parser rejects as a typed metric without samples.
    let wanted = |line: &&str| {
        names.all().any(|name| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ', '\t']))
        })
    };
    let samples: String = text
        .lines()
        .filter(wanted)
        .flat_map(|l| [l, "\n"])
        .collect();
    let scrape = match samples.is_empty() {
        true => Scrape {
            metrics: Vec::new(),
        },
        false => Scrape::parse(&samples).map_err(|e| format!("not Prometheus text: {e:?}"))?,
    };
    let find = |candidates: &[String]| -> Option<&Metric> {
        candidates
            .iter()
            .find_map(|name| scrape.metrics.iter().find(|m| &m.name == name))
    };
    let waiting = find(&names.waiting);
    let running = find(&names.running);
    let kv = find(&names.kv_usage);
    if waiting.is_none() && running.is_none() && kv.is_none() {
        return Err(format!(
            "none of the expected series is present (waiting {:?}, running {:?}, kv usage {:?})",
            names.waiting, names.running, names.kv_usage
        ));
    }
    let mut metrics = PodMetrics::idle();
    metrics.scraped_at = scraped_at;
    metrics.waiting = waiting.map_or(0.0, sum).max(0.0).round() as u32;
    metrics.running = running.map_or(0.0, sum).max(0.0).round() as u32;
    metrics.kv_usage = kv.map_or(0.0, max).clamp(0.0, 1.0);

    if let Some(info) = find(&names.lora_info).and_then(latest_sample_labels) {
        metrics.running_adapters = adapter_list(info.get("running_lora_adapters"));
        metrics.waiting_adapters = adapter_list(info.get("waiting_lora_adapters"));
        metrics.max_lora = info.get("max_lora").and_then(|v| v.parse().ok());
    }
    if let Some(info) = find(&names.cache_config).and_then(latest_sample_labels) {
        let blocks = info.get("num_gpu_blocks").and_then(|v| v.parse().ok());
        let size = info.get("block_size").and_then(|v| v.parse().ok());
        if let (Some(num_gpu_blocks), Some(block_size)) = (blocks, size) {
            metrics.cache = Some(CacheGeometry {
                num_gpu_blocks,
                block_size,
            });
        }
    }
    if metrics.cache.is_none() {
        if let Some(tokens) = find(&names.cache_tokens).map(max).filter(|t| *t >= 1.0) {
            metrics.cache = Some(CacheGeometry {
                num_gpu_blocks: tokens as u64,
                block_size: 1,
            });
        }
    }
    Ok(metrics)
}

fn values(metric: &Metric) -> impl Iterator<Item = f64> + '_ {
    metric
        .samples
        .iter()
        .map(|s| s.value.value.parse::<f64>().unwrap_or(0.0))
        .filter(|v| v.is_finite())
}

fn sum(metric: &Metric) -> f64 {
    values(metric).sum()
}

fn max(metric: &Metric) -> f64 {
    values(metric).fold(0.0, f64::max)
}

/// Labels of an info-style series' newest sample (vLLM sets the value to a timestamp).
fn latest_sample_labels(metric: &Metric) -> Option<Labels<'_>> {
    metric
        .samples
        .iter()
        .max_by(|a, b| {
            let (a, b) = (
                a.value.value.parse::<f64>().unwrap_or(0.0),
                b.value.value.parse::<f64>().unwrap_or(0.0),
            );
            a.total_cmp(&b)
        })
        .map(|s| {
            Labels(
                s.labels
                    .iter()
                    .map(|l| (l.key.as_str(), l.value.as_str()))
                    .collect(),
            )
        })
}

struct Labels<'a>(Vec<(&'a str, &'a str)>);

impl Labels<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

fn adapter_list(value: Option<&str>) -> Vec<Box<str>> {
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Into::into)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VLLM: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.42
# HELP vllm:lora_requests_info Running stats on lora requests.
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="2",running_lora_adapters="sql-lora",waiting_lora_adapters=""} 1.7e+09
vllm:lora_requests_info{max_lora="2",running_lora_adapters="sql-lora,chat-lora",waiting_lora_adapters="x"} 1.8e+09
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",num_gpu_blocks="27000"} 1.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{model_name="m"} 1234.0
"#;

    #[test]
    fn vllm_text_becomes_pod_metrics() {
        let now = Instant::now();
        let m = parse(VLLM, &MetricNames::vllm(), now).unwrap();
        assert_eq!((m.waiting, m.running), (7, 3));
        assert!((m.kv_usage - 0.42).abs() < 1e-9);
        assert_eq!(
            m.running_adapters,
            vec!["sql-lora".into(), "chat-lora".into()] as Vec<Box<str>>
        );
        assert_eq!(m.waiting_adapters, vec!["x".into()] as Vec<Box<str>>);
        assert_eq!(m.max_lora, Some(2));
        assert_eq!(
            m.cache,
            Some(CacheGeometry {
                num_gpu_blocks: 27000,
                block_size: 16
            })
        );
        assert_eq!(m.scraped_at, now);
    }

    #[test]
    fn older_vllm_kv_name_is_a_fallback_and_label_sets_add_up() {
        let text = "vllm:gpu_cache_usage_perc 0.9\nvllm:num_requests_waiting{a=\"1\"} 2\nvllm:num_requests_waiting{a=\"2\"} 5\n";
        let m = parse(text, &MetricNames::vllm(), Instant::now()).unwrap();
        assert!((m.kv_usage - 0.9).abs() < 1e-9);
        assert_eq!(m.waiting, 7);
        assert_eq!(m.running, 0);
        assert!(m.cache.is_none() && m.max_lora.is_none());
    }

    #[test]
    fn sglang_names() {
        let text = "# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs{model_name=\"m\"} 4\nsglang:num_running_reqs{model_name=\"m\"} 9\nsglang:token_usage{model_name=\"m\"} 0.25\nsglang:max_total_num_tokens{model_name=\"m\"} 500000\n";
        let m = parse(text, &MetricNames::sglang(), Instant::now()).unwrap();
        assert_eq!((m.waiting, m.running), (4, 9));
        assert!((m.kv_usage - 0.25).abs() < 1e-9);
        assert_eq!(m.cache.unwrap().tokens(), 500_000);
    }

    #[test]
    fn garbage_and_unrelated_metrics_are_errors() {
        assert!(parse("<html>oops</html>", &MetricNames::vllm(), Instant::now()).is_err());
        let e = parse(
            "process_cpu_seconds_total 12\n",
            &MetricNames::vllm(),
            Instant::now(),
        )
        .unwrap_err();
        assert!(e.contains("vllm:num_requests_waiting"), "{e}");
        // A series we read, but broken.
        let e = parse(
            "vllm:num_requests_waiting{model=\"m 3\n",
            &MetricNames::vllm(),
            Instant::now(),
        )
        .unwrap_err();
        assert!(e.starts_with("not Prometheus text"), "{e}");
        // vLLM text read with SGLang's names finds nothing.
        assert!(parse(VLLM, &MetricNames::sglang(), Instant::now()).is_err());
    }

    #[test]
    fn out_of_range_values_are_clamped() {
        let text = "vllm:kv_cache_usage_perc 1.7\nvllm:num_requests_waiting -3\nvllm:num_requests_running NaN\n";
        let m = parse(text, &MetricNames::vllm(), Instant::now()).unwrap();
        assert_eq!(m.kv_usage, 1.0);
        assert_eq!((m.waiting, m.running), (0, 0));
    }
}

#[cfg(test)]
mod simulator_text {
    use super::*;

    /// What `inference-sim` serves on `/metrics` (captured after one request).
    const SIM: &str = include_str!("../tests/vllm_sim_metrics.txt");

    #[test]
    fn the_simulators_metrics_parse() {
        let m = parse(SIM, &MetricNames::vllm(), Instant::now()).unwrap();
        assert_eq!((m.waiting, m.running), (0, 0));
        assert!(
            m.cache
                .is_some_and(|c| c.block_size == 16 && c.num_gpu_blocks > 0),
            "{:?}",
            m.cache
        );
        assert!(
            m.max_lora.is_none(),
            "no LoRA series without adapters, as in vLLM"
        );
    }
}
