//! Routing quality inside real Envoy with simulated vLLM pods: prefix groups stay together.

use std::collections::{HashMap, HashSet};

use integration::client::complete;
use integration::pods::fast_pods;
use integration::{Envoy, EnvoyConfig};

/// Four idle pods, 60 prefix groups that each send 4 requests one after the other: every group
/// must stay on one pod. The pods are fast and scraped every 250 ms, so dozens of requests are
/// routed and finish between two scrapes: this checks that they are not taken for a queue
/// (before the load model they were, every pod looked saturated, the least loaded pod was
/// chosen instead of the one holding the prefix, and groups split).
#[test]
fn idle_pods_never_split_a_new_prefix_group() {
    let (_sim, addrs) = fast_pods(4);
    let envoy = Envoy::start(
        &EnvoyConfig::new(addrs.clone()).pool_config(r#"{"pod_metrics": {"interval_ms": 250}}"#),
    );

    let mut split = Vec::new();
    let mut homes: HashMap<String, usize> = HashMap::new();
    for group in 0..60 {
        let system = format!("You are support agent {group} of team {}. ", group * 7).repeat(12);
        let pods: HashSet<String> = (0..4)
            .map(|i| {
                let prompt = format!("{system}\nQuestion {i}: how do I reset my password?");
                let (status, pod) = complete(&envoy.url, &prompt, 4);
                assert_eq!(status, 200);
                pod.expect("destination header")
            })
            .collect();
        if pods.len() > 1 {
            split.push((group, pods.clone()));
        }
        for p in pods {
            *homes.entry(p).or_default() += 1;
        }
    }
    assert!(
        split.is_empty(),
        "{} of 60 groups split: {split:?}",
        split.len()
    );
    assert!(
        homes.len() >= 3,
        "new groups should still spread over the pods: {homes:?}"
    );
}
