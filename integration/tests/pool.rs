//! Live pod state inside real Envoy, with simulated vLLM pods: membership changes, health,
//! queues, dying pods and in-flight accounting.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::time::Duration;

use inference_sim::{spawn_pods, PodConfig, Simulator};
use integration::client::{complete, eventually, prometheus, sample, set_fault, DESTINATION};
use integration::{Envoy, EnvoyConfig};

fn sim(n: usize, time_scale: f64) -> Simulator {
    spawn_pods(
        PodConfig {
            time_scale,
            ..PodConfig::default()
        },
        n,
    )
    .expect("start simulator")
}

fn addrs(sim: &Simulator) -> Vec<String> {
    sim.addrs().iter().map(ToString::to_string).collect()
}

/// Which pod served each of `n` requests with distinct prompts.
fn spread(envoy: &Envoy, n: usize, tag: &str) -> HashMap<String, usize> {
    let mut served = HashMap::new();
    for i in 0..n {
        let (status, pod) = complete(
            &envoy.url,
            &format!("{tag} distinct prompt number {i} {}", "x".repeat(i % 7)),
            1,
        );
        assert_eq!(status, 200);
        *served.entry(pod.expect("destination header")).or_insert(0) += 1;
    }
    served
}

fn gauge(envoy: &Envoy, name: &str) -> Option<f64> {
    sample(
        &prometheus(&envoy.admin_url),
        &format!("envoy_inference_scheduler_{name}"),
    )
}

#[test]
fn pods_added_to_and_removed_from_the_pool_are_followed_without_a_restart() {
    let sim = sim(3, 0.02);
    let [a, b, c] = <[String; 3]>::try_from(addrs(&sim)).unwrap();
    let mut config = EnvoyConfig::new(vec![a.clone(), b.clone()]);
    config.eds = true;
    let envoy = Envoy::start(&config);
    eventually("EDS members loaded", Duration::from_secs(10), || {
        complete(&envoy.url, "warm up", 1).0 == 200
    });
    let before = spread(&envoy, 12, "before");
    assert!(before.keys().all(|p| *p == a || *p == b), "{before:?}");

    envoy.set_endpoints(&[b.clone(), c.clone()]);
    let mut round = 0;
    eventually(
        "the new pod receives traffic",
        Duration::from_secs(15),
        || {
            round += 1;
            spread(&envoy, 4, &format!("probe {round}")).contains_key(&c)
        },
    );
    let after = spread(&envoy, 16, "after");
    assert!(
        !after.contains_key(&a),
        "the removed pod still gets traffic: {after:?}"
    );
    eventually(
        "the registry drops the removed pod",
        Duration::from_secs(5),
        || gauge(&envoy, "pods{") == Some(2.0),
    );
}

#[test]
fn a_pod_failing_active_health_checks_is_avoided_until_it_recovers() {
    let sim = sim(2, 0.02);
    let [a, b] = <[String; 2]>::try_from(addrs(&sim)).unwrap();
    let mut config = EnvoyConfig::new(vec![a.clone(), b.clone()]);
    config.cluster_extra = "      health_checks:\n        - timeout: 0.2s\n          interval: 0.1s\n          no_traffic_interval: 0.1s\n          unhealthy_threshold: 1\n          healthy_threshold: 1\n          http_health_check: { path: /health }\n".into();
    let envoy = Envoy::start(&config);
    eventually("both pods serve", Duration::from_secs(10), || {
        spread(&envoy, 8, "warm").len() == 2
    });

    set_fault(&sim.pods()[1].url(), r#"{"close_connections": true}"#);
    eventually(
        "the failing pod is marked unhealthy",
        Duration::from_secs(10),
        || {
            ureq::get(&format!("{}/clusters", envoy.admin_url))
                .call()
                .unwrap()
                .into_string()
                .unwrap()
                .lines()
                .any(|l| l.contains(&b) && l.contains("health_flags::/failed_active_hc"))
        },
    );
    let during = spread(&envoy, 16, "during");
    assert_eq!(during.get(&a), Some(&16), "{during:?}");

    set_fault(&sim.pods()[1].url(), "{}");
    let mut round = 0;
    eventually(
        "the recovered pod gets traffic again",
        Duration::from_secs(10),
        || {
            round += 1;
            spread(&envoy, 6, &format!("after {round}")).contains_key(&b)
        },
    );
}

#[test]
fn a_pod_with_a_long_queue_gets_less_traffic() {
    // Two running sequences at most per pod, real-time decode: a queue builds quickly.
    let sim = spawn_pods(
        PodConfig {
            max_running_seqs: 2,
            time_scale: 1.0,
            ..PodConfig::default()
        },
        2,
    )
    .unwrap();
    let [a, b] = <[String; 2]>::try_from(addrs(&sim)).unwrap();
    let envoy = Envoy::start(
        &EnvoyConfig::new(vec![a.clone(), b.clone()]).filter_config(r#"{"decision_header": true}"#),
    );
    // Load pod b directly (not through the gateway) with long generations.
    let loaders: Vec<_> = (0..12)
        .map(|i| {
            let url = sim.pods()[1].url();
            std::thread::spawn(move || {
                let body = serde_json::json!({"model": "meta-llama/Llama-3.1-8B-Instruct", "prompt": format!("background {i}"), "max_tokens": 400});
                let _ = ureq::post(&format!("{url}/v1/completions")).timeout(Duration::from_secs(60)).send_string(&body.to_string());
            })
        })
        .collect();
    eventually("pod b reports a queue", Duration::from_secs(10), || {
        let text = ureq::get(&format!("{}/metrics", sim.pods()[1].url()))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        sample(&text, "vllm:num_requests_waiting").is_some_and(|w| w >= 8.0)
    });
    std::thread::sleep(Duration::from_millis(200)); // a scrape or two
                                                    // The decision header shows why: the queue scorer ranks the idle pod first.
    let body = serde_json::json!({"model": "meta-llama/Llama-3.1-8B-Instruct", "prompt": "why", "max_tokens": 1});
    let r = ureq::post(&format!("{}/v1/completions", envoy.url))
        .send_string(&body.to_string())
        .unwrap();
    let why = r
        .header("x-inference-scheduler-decision")
        .unwrap_or_default()
        .to_owned();
    assert_eq!(r.header(DESTINATION), Some(a.as_str()), "{why}");
    assert!(why.contains("queue=1.000"), "{why}");
    let served = spread(&envoy, 20, "queued");
    assert!(
        served.get(&a).copied().unwrap_or(0) >= 18,
        "the queued pod kept getting traffic: {served:?}"
    );
    drop(sim); // ends the background generations
    loaders.into_iter().for_each(|l| drop(l.join()));
}

#[test]
fn a_pod_killed_mid_run_costs_no_request_that_could_be_retried() {
    let sim = sim(3, 0.1);
    let envoy = Envoy::start(&EnvoyConfig::new(addrs(&sim)));
    let victim = sim.pods()[2].url();
    let url = envoy.url.clone();
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        complete_with_body(
                            &url,
                            &format!("client {t} request {i} {}", "ctx ".repeat(i)),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    set_fault(&victim, r#"{"die": true}"#);
    let answers: Vec<(u16, String)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    // The simulator answers the requests it is running when it dies with its own 503 ("request
    // aborted by the pod") about half the time, racing the connection drop: those reached the
    // pod and were answered, so no retry policy could save them. Everything else must succeed.
    let failed: Vec<_> = answers
        .iter()
        .filter(|(s, body)| *s != 200 && !body.contains("aborted by the pod"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        statuses.len()
    );
    let retries = sample(
        &prometheus(&envoy.admin_url),
        "envoy_cluster_upstream_rq_retry{",
    )
    .unwrap_or(0.0);
    assert!(
        retries > 0.0,
        "the dead pod never cost a retry: was it ever chosen?"
    );
}

/// A completion of 20 tokens: the status and the body.
fn complete_with_body(gateway: &str, prompt: &str) -> (u16, String) {
    let body = serde_json::json!({"model": "meta-llama/Llama-3.1-8B-Instruct", "prompt": prompt, "max_tokens": 20});
    match ureq::post(&format!("{gateway}/v1/completions")).send_string(&body.to_string()) {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("transport error: {e}"),
    }
}

#[test]
fn in_flight_counts_return_to_zero_however_a_stream_ends() {
    let sim = sim(2, 1.0);
    let envoy = Envoy::start(&EnvoyConfig::new(addrs(&sim)));
    let in_flight_total = || -> f64 {
        let text = prometheus(&envoy.admin_url);
        text.lines()
            .filter(|l| l.starts_with("envoy_inference_scheduler_in_flight{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let stream = |prompt: &str| {
        let body = serde_json::json!({"model": "meta-llama/Llama-3.1-8B-Instruct", "prompt": prompt, "max_tokens": 2000, "stream": true});
        let resp = ureq::post(&format!("{}/v1/completions", envoy.url))
            .send_string(&body.to_string())
            .unwrap();
        let pod = resp.header(DESTINATION).unwrap().to_owned();
        let mut reader = BufReader::new(resp.into_reader());
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        assert!(first.starts_with("data: "), "{first:?}");
        (pod, reader)
    };

    // Two long streams open: both counted.
    let (_pod1, client_disconnects) = stream("a stream the client abandons");
    let (pod2, upstream_resets) = stream("a stream the pod cuts");
    eventually("two requests in flight", Duration::from_secs(5), || {
        in_flight_total() == 2.0
    });

    drop(client_disconnects);
    let victim = sim
        .pods()
        .iter()
        .find(|p| p.addr().to_string() == pod2)
        .unwrap();
    set_fault(&victim.url(), r#"{"close_connections": true}"#);
    let rest: Vec<String> = upstream_resets.lines().map_while(Result::ok).collect();
    assert!(
        !rest.iter().any(|l| l == "data: [DONE]"),
        "the stream was not cut"
    );
    set_fault(&victim.url(), "{}");

    // Local replies and completed requests never leave a count behind either.
    assert_eq!(complete(&envoy.url, "", 1).0, 200);
    let bad = ureq::post(&format!("{}/v1/completions", envoy.url)).send_string("{");
    assert!(matches!(bad, Err(ureq::Error::Status(400, _))));
    eventually("every count back to zero", Duration::from_secs(5), || {
        in_flight_total() == 0.0
    });
}

#[test]
fn when_every_pod_fails_health_checks_requests_are_still_served() {
    let sim = sim(2, 0.02);
    let mut config = EnvoyConfig::new(addrs(&sim));
    // Health checks that can never pass: every member ends up unhealthy while still serving.
    config.cluster_extra = "      health_checks:\n        - timeout: 0.2s\n          interval: 0.1s\n          no_traffic_interval: 0.1s\n          unhealthy_threshold: 1\n          healthy_threshold: 1\n          http_health_check: { path: /no-such-health-endpoint }\n      common_lb_config:\n        override_host_status: { statuses: [UNKNOWN, HEALTHY, DEGRADED, UNHEALTHY] }\n".into();
    let envoy = Envoy::start(&config);
    eventually("both pods unhealthy", Duration::from_secs(10), || {
        let clusters = ureq::get(&format!("{}/clusters", envoy.admin_url))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        clusters
            .lines()
            .filter(|l| l.contains("health_flags::/failed_active_hc"))
            .count()
            == 2
    });
    for i in 0..6 {
        let (status, pod) = complete(&envoy.url, &format!("all unhealthy {i}"), 1);
        assert_eq!(status, 200, "request {i} failed although pods serve");
        assert!(pod.is_some());
    }
}
