//! A listener replaced at run time (file-based LDS, as a control plane pushes one on every route
//! change) keeps the pool's learned state: the prefix index, and so where each prefix goes.

use std::time::Duration;

use integration::client::{complete, eventually, prometheus, sample, DESTINATION};
use integration::pods::fast_pods;
use integration::{Envoy, EnvoyConfig};

/// A prompt of `group`: a long shared system part and a short question.
fn prompt(group: usize, question: usize) -> String {
    format!(
        "{} question {question}",
        format!("system prompt of group {group}: you are a careful assistant. ").repeat(12)
    )
}

/// The model `client::complete` names (block hashes are per model).
const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

fn index_blocks(envoy: &Envoy) -> f64 {
    sample(
        &prometheus(&envoy.admin_url),
        "envoy_inference_scheduler_prefix_index_blocks",
    )
    .unwrap_or(0.0)
}

#[test]
fn a_new_listener_config_keeps_the_prefix_index_and_the_routes_learned() {
    let (_sim, pods) = fast_pods(4);
    let mut config = EnvoyConfig::new(pods);
    config.lds = true;
    let mut envoy = Envoy::start(&config);

    let groups = 8;
    let mut home = Vec::new();
    for g in 0..groups {
        let (status, pod) = complete(&envoy.url, &prompt(g, 0), 1);
        assert_eq!(status, 200);
        home.push(pod.expect("destination header"));
    }
    eventually(
        "the index gauge is reported",
        Duration::from_secs(5),
        || index_blocks(&envoy) > 0.0,
    );
    let learned = index_blocks(&envoy);

    // A changed filter setting: Envoy builds a new filter config and drains the old listener.
    config.filter_config = r#"{"decision_header": true}"#.into();
    envoy.reload_listener(&config);
    let after = index_blocks(&envoy);
    assert!(
        after >= learned,
        "the prefix index lost blocks over the reload: {learned} -> {after}"
    );
    // The new filter config serves (its decision header is on), and predicts hits for every
    // group on the pod that served it before: the routes learned before the reload are known.
    for (g, pod) in home.iter().enumerate() {
        let body = serde_json::json!({"model": MODEL, "prompt": prompt(g, 1), "max_tokens": 1})
            .to_string();
        let response = ureq::post(&format!("{}/v1/completions", envoy.url))
            .send_string(&body)
            .expect("a completion after the reload");
        let decision = response
            .header("x-inference-scheduler-decision")
            .expect("the new filter config's decision header")
            .to_owned();
        assert_eq!(
            response.header(DESTINATION),
            Some(pod.as_str()),
            "group {g} moved after the reload: {decision}"
        );
        let hits: u32 = decision
            .rsplit_once(" prefix=")
            .and_then(|(_, p)| p.split_once('/'))
            .and_then(|(hits, _)| hits.parse().ok())
            .expect("prefix hits in the decision header");
        assert!(
            hits > 0,
            "group {g}: no learned prefix after the reload: {decision}"
        );
    }
}
