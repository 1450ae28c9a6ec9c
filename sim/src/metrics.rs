//! The pod's Prometheus metrics under vLLM's names, so routers and dashboards built for vLLM
//! read the simulator unchanged. Every series carries vLLM's `model_name` and `engine` labels.
//! Latency histograms hold real (time-scaled) seconds: what a client of the pod observes.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::PodConfig;
use crate::progress::Finish;

type FloatGauge = Gauge<f64, AtomicU64>;
type LoraLabels = [(&'static str, String); 3];

pub struct Metrics {
    registry: Registry,
    pub num_requests_running: Gauge,
    pub num_requests_waiting: Gauge,
    kv_cache_usage: FloatGauge,
    gpu_cache_usage: FloatGauge,
    pub prefix_cache_queries: Counter,
    pub prefix_cache_hits: Counter,
    pub prompt_tokens: Counter,
    pub generation_tokens: Counter,
    pub num_preemptions: Counter,
    request_success: Family<[(&'static str, &'static str); 1], Counter>,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub e2e_request_latency: Histogram,
    pub request_queue_time: Histogram,
    /// Present only when adapters are configured, as in vLLM.
    lora_requests_info: Option<Family<LoraLabels, FloatGauge>>,
    max_lora: String,
}

const TTFT_BUCKETS: [f64; 24] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
    5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const ITL_BUCKETS: [f64; 22] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
    0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const REQUEST_BUCKETS: [f64; 20] = [
    0.01, 0.025, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
    50.0, 60.0, 120.0,
];

impl Metrics {
    pub fn new(config: &PodConfig) -> Self {
        let labels = [
            (
                Cow::Borrowed("model_name"),
                Cow::Owned(config.model.clone()),
            ),
            (Cow::Borrowed("engine"), Cow::Borrowed("0")),
        ];
        let mut registry = Registry::with_labels(labels.into_iter());
        let metrics = Self {
            num_requests_running: Gauge::default(),
            num_requests_waiting: Gauge::default(),
            kv_cache_usage: FloatGauge::default(),
            gpu_cache_usage: FloatGauge::default(),
            prefix_cache_queries: Counter::default(),
            prefix_cache_hits: Counter::default(),
            prompt_tokens: Counter::default(),
            generation_tokens: Counter::default(),
            num_preemptions: Counter::default(),
            request_success: Family::default(),
            time_to_first_token: Histogram::new(TTFT_BUCKETS),
            inter_token_latency: Histogram::new(ITL_BUCKETS),
            e2e_request_latency: Histogram::new(REQUEST_BUCKETS),
            request_queue_time: Histogram::new(REQUEST_BUCKETS),
            lora_requests_info: (!config.lora_adapters.is_empty()).then(Family::default),
            max_lora: config.max_loras.to_string(),
            registry: Registry::default(),
        };
        let m = &metrics;
        registry.register(
            "vllm:num_requests_running",
            "Number of requests in the running batch",
            m.num_requests_running.clone(),
        );
        registry.register(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be scheduled",
            m.num_requests_waiting.clone(),
        );
        registry.register(
            "vllm:kv_cache_usage_perc",
            "KV cache usage; 1 means 100 percent",
            m.kv_cache_usage.clone(),
        );
        registry.register(
            "vllm:gpu_cache_usage_perc",
            "GPU KV cache usage; 1 means 100 percent (older name of kv_cache_usage_perc)",
            m.gpu_cache_usage.clone(),
        );
        registry.register(
            "vllm:prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache",
            m.prefix_cache_queries.clone(),
        );
        registry.register(
            "vllm:prefix_cache_hits",
            "Prompt tokens found in the prefix cache",
            m.prefix_cache_hits.clone(),
        );
        registry.register(
            "vllm:prompt_tokens",
            "Prefill tokens processed",
            m.prompt_tokens.clone(),
        );
        registry.register(
            "vllm:generation_tokens",
            "Generation tokens processed",
            m.generation_tokens.clone(),
        );
        registry.register(
            "vllm:num_preemptions",
            "Running requests preempted for lack of KV cache",
            m.num_preemptions.clone(),
        );
        registry.register(
            "vllm:request_success",
            "Finished requests by finish reason",
            m.request_success.clone(),
        );
        registry.register(
            "vllm:time_to_first_token_seconds",
            "Time to first token",
            m.time_to_first_token.clone(),
        );
        registry.register(
            "vllm:inter_token_latency_seconds",
            "Time between consecutive output tokens",
            m.inter_token_latency.clone(),
        );
        registry.register(
            "vllm:e2e_request_latency_seconds",
            "Time from arrival to the last token",
            m.e2e_request_latency.clone(),
        );
        registry.register(
            "vllm:request_queue_time_seconds",
            "Time spent waiting before first being scheduled",
            m.request_queue_time.clone(),
        );
        let cache_config: Family<Vec<(&'static str, String)>, Gauge> = Family::default();
        cache_config
            .get_or_create(&vec![
                ("block_size", config.block_size.to_string()),
                ("num_gpu_blocks", config.kv_blocks.to_string()),
                ("enable_prefix_caching", "True".to_string()),
                ("cache_dtype", "auto".to_string()),
                ("gpu_memory_utilization", "0.9".to_string()),
            ])
            .set(1);
        registry.register(
            "vllm:cache_config_info",
            "Information of the KV cache config",
            cache_config,
        );
        if let Some(lora) = &m.lora_requests_info {
            registry.register(
                "vllm:lora_requests_info",
                "Running and waiting LoRA adapters; the value is the time of the last change",
                lora.clone(),
            );
        }
        Self {
            registry,
            ..metrics
        }
    }

    pub fn set_kv_cache_usage(&self, usage: f64) {
        self.kv_cache_usage.set(usage);
        self.gpu_cache_usage.set(usage);
    }

    pub fn kv_cache_usage(&self) -> f64 {
        self.kv_cache_usage.get()
    }

    pub fn count_success(&self, finish: Finish) {
        self.request_success
            .get_or_create(&[("finished_reason", finish.as_str())])
            .inc();
    }

    /// Publishes the adapters of the running and waiting requests (comma-separated names).
    pub fn set_lora_requests(&self, running: String, waiting: String) {
        let Some(family) = &self.lora_requests_info else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        // One series: the current state (vLLM keeps old label sets; readers take the newest).
        family.clear();
        family
            .get_or_create(&[
                ("running_lora_adapters", running),
                ("waiting_lora_adapters", waiting),
                ("max_lora", self.max_lora.clone()),
            ])
            .set(now);
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        encode_registry(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
