//! The module's metrics in Envoy's Prometheus output, under the documented names.

#![allow(clippy::result_large_err)] // ureq 2 errors carry the response; fine in tests

use std::time::Duration;

use integration::client::{eventually, sample};
use integration::{Backend, Envoy, EnvoyConfig, SseGate};

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

#[test]
fn sheddable_requests_get_429_with_retry_after_when_every_pod_is_saturated() {
    let pods: Vec<Backend> = (0..2).map(|_| Backend::start(SseGate::default())).collect();
    for p in &pods {
        p.set_metrics("vllm:num_requests_waiting 40\nvllm:num_requests_running 256\nvllm:kv_cache_usage_perc 0.97\n");
    }
    let config = EnvoyConfig::new(pods.iter().map(|p| p.addr.clone()).collect())
        .filter_config(r#"{"saturation": {"retry_after_s": 3}}"#);
    let envoy = Envoy::start(&config);
    let url = format!("{}/v1/completions", envoy.url);
    let body = r#"{"model":"m","prompt":"can wait"}"#;
    let shed = || {
        ureq::post(&url)
            .set("x-gateway-inference-criticality", "sheddable")
            .send_string(body)
    };
    // Until the first scrape the pods' state is unknown, and unknown is not full.
    eventually("shedding starts", Duration::from_secs(5), || {
        matches!(shed(), Err(ureq::Error::Status(429, _)))
    });
    let Err(ureq::Error::Status(429, resp)) = shed() else {
        panic!("expected 429")
    };
    assert_eq!(resp.header("retry-after"), Some("3"));
    let v: serde_json::Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("saturated"),
        "{v}"
    );
    // Everyone else is still served.
    let served = ureq::post(&url)
        .set("x-gateway-inference-criticality", "critical")
        .send_string(body)
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(ureq::post(&url).send_string(body).unwrap().status(), 200);
}
