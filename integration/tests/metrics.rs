//! The module's metrics in Envoy's Prometheus output, under the documented names.

use std::time::Duration;

use integration::{Backend, Envoy, EnvoyConfig, SseGate};

/// The value of the sample whose name and labels start with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[test]
fn module_metrics_appear_in_envoys_prometheus_output() {
    let pods: Vec<Backend> = (0..2).map(|_| Backend::start(SseGate::default())).collect();
    pods[0].set_metrics(
        "vllm:num_requests_waiting 1\nvllm:num_requests_running 0\nvllm:kv_cache_usage_perc 0.5\n",
    );
    pods[1].set_metrics("not metrics at all");
    let envoy = Envoy::start(&EnvoyConfig::new(
        pods.iter().map(|p| p.addr.clone()).collect(),
    ));
    for i in 0..5 {
        let body =
            serde_json::json!({"model": "m", "prompt": format!("{} {i}", "shared ".repeat(40))})
                .to_string();
        ureq::post(&format!("{}/v1/completions", envoy.url))
            .send_string(&body)
            .unwrap();
    }
    let _ = ureq::post(&format!("{}/v1/completions", envoy.url)).send_string("{bad");

    // Pod state is reported once a second, histograms at Envoy's 1 s stats flush.
    let mut text = String::new();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        text = ureq::get(&format!("{}/stats/prometheus", envoy.admin_url))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        let latency_count = sample(&text, "envoy_inference_scheduler_decision_latency_us_count");
        if latency_count == Some(5.0) && sample(&text, "envoy_inference_scheduler_pods{").is_some()
        {
            break;
        }
    }
    let m = |prefix: &str| sample(&text, &format!("envoy_inference_scheduler_{prefix}"));
    let decisions: f64 = pods
        .iter()
        .filter_map(|p| m(&format!("decisions_total{{pod=\"{}\"}}", p.addr)))
        .sum();
    assert_eq!(decisions, 5.0, "{text}");
    assert_eq!(m("decision_latency_us_count"), Some(5.0));
    assert_eq!(m("rejected_total{status=\"400\"}"), Some(1.0));
    assert_eq!(m("pods{"), Some(2.0));
    assert_eq!(
        m(&format!("in_flight{{pod=\"{}\"}}", pods[0].addr)),
        Some(0.0),
        "counts return to zero"
    );
    assert!(
        m(&format!(
            "scrapes_succeeded_total{{pod=\"{}\"}}",
            pods[0].addr
        ))
        .unwrap()
            >= 1.0
    );
    assert!(m(&format!("scrapes_failed_total{{pod=\"{}\"}}", pods[1].addr)).unwrap() >= 1.0);
    assert_eq!(
        m(&format!("pod_stale{{pod=\"{}\"}}", pods[1].addr)),
        Some(1.0),
        "never scraped: stale"
    );
    assert_eq!(
        m(&format!("pod_stale{{pod=\"{}\"}}", pods[0].addr)),
        Some(0.0)
    );
    assert_eq!(m("stale_pods{"), Some(1.0));
    assert!(
        m("prefix_index_blocks{").unwrap() >= 4.0,
        "routes were recorded in the prefix index"
    );
    assert!(m("prefix_index_bytes{").unwrap() > 0.0);
    // Four requests after the first share its leading blocks.
    assert!(m("prefix_hit_blocks_total{").unwrap() >= 4.0 * 4.0);
    assert!(m("request_blocks_total{").unwrap() >= m("prefix_hit_blocks_total{").unwrap());
}
