//! Faults on one pod cost no request, with the shipped resilience settings (envoy.yaml, mirrored
//! by the generated test config): a pod dying under concurrent load, a pod answering 500, a pod
//! that hangs. Real Envoy, real simulated pods, faults injected through the simulator.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use inference_sim::{spawn_pods, PodConfig, Simulator};
use integration::client::{prometheus, sample, set_fault, DESTINATION};
use integration::{Envoy, EnvoyConfig};

fn sim(n: usize) -> Simulator {
    spawn_pods(
        PodConfig {
            time_scale: 0.02,
            ..PodConfig::default()
        },
        n,
    )
    .expect("start simulator")
}

fn addrs(sim: &Simulator) -> Vec<String> {
    sim.addrs().iter().map(ToString::to_string).collect()
}

/// One request's outcome: status (0 for a transport error), the pod that served, the time.
struct Outcome {
    status: u16,
    pod: Option<String>,
    elapsed: Duration,
}

fn send(gateway: &str, prompt: &str) -> Outcome {
    let body = serde_json::json!({"model": "meta-llama/Llama-3.1-8B-Instruct", "prompt": prompt, "max_tokens": 4}).to_string();
    let started = Instant::now();
    let (status, pod) = match ureq::post(&format!("{gateway}/v1/completions"))
        .timeout(Duration::from_secs(30))
        .send_string(&body)
    {
        Ok(r) => (r.status(), r.header(DESTINATION).map(str::to_owned)),
        Err(ureq::Error::Status(code, r)) => (code, r.header(DESTINATION).map(str::to_owned)),
        Err(_) => (0, None),
    };
    Outcome {
        status,
        pod,
        elapsed: started.elapsed(),
    }
}

/// Sends `total` requests from `clients` concurrent clients (distinct prompts, so they spread
/// over every pod); `during(n)` runs on one client after its `n`-th request.
fn load(
    gateway: &str,
    clients: usize,
    total: usize,
    during: impl Fn(usize) + Send + Sync + 'static,
) -> Vec<Outcome> {
    let next = Arc::new(AtomicUsize::new(0));
    let during = Arc::new(during);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (gateway, next, during) = (gateway.to_owned(), next.clone(), during.clone());
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= total {
                        return outcomes;
                    }
                    outcomes.push((n, send(&gateway, &format!("request {n} of a load test"))));
                    during(n);
                }
            })
        })
        .collect();
    let mut all: Vec<(usize, Outcome)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_by_key(|(n, _)| *n);
    all.into_iter().map(|(_, o)| o).collect()
}

fn failed(outcomes: &[Outcome]) -> usize {
    outcomes.iter().filter(|o| o.status != 200).count()
}

#[test]
fn a_pod_dying_under_concurrent_load_fails_no_request() {
    let sim = sim(4);
    let envoy = Envoy::start(&EnvoyConfig::new(addrs(&sim)));
    let victim = sim.pods()[2].url();
    let outcomes = load(&envoy.url, 32, 600, move |n| {
        if n == 150 {
            set_fault(&victim, r#"{"die": true}"#);
        }
    });
    let overflow = envoy.stat("cluster.inference_pool.upstream_rq_retry_overflow");
    let retries = envoy.stat("cluster.inference_pool.upstream_rq_retry");
    eprintln!(
        "dying pod, 32 clients: {} of {} failed, {retries} retries, {overflow} retry overflows",
        failed(&outcomes),
        outcomes.len()
    );
    assert_eq!(failed(&outcomes), 0, "requests failed when a pod died");
    assert_eq!(overflow, 0, "the retry budget ran out");
    assert!(
        retries > 0,
        "the dying pod never cost a retry: was it ever chosen?"
    );
}

#[test]
fn a_pod_answering_500_costs_no_request_and_is_avoided_within_seconds() {
    let sim = sim(4);
    let pods = addrs(&sim);
    let bad = pods[1].clone();
    set_fault(&sim.pods()[1].url(), r#"{"error_rate": 1.0}"#);
    let envoy = Envoy::start(&EnvoyConfig::new(pods));
    let outcomes = load(&envoy.url, 8, 1000, |_| {});
    eprintln!(
        "pod answering 500: {} of {} failed, {} retries, {} ejections",
        failed(&outcomes),
        outcomes.len(),
        envoy.stat("cluster.inference_pool.upstream_rq_retry"),
        envoy.stat("cluster.inference_pool.outlier_detection.ejections_enforced_total"),
    );
    assert_eq!(failed(&outcomes), 0, "a 500 reached the client");
    assert!(
        outcomes
            .iter()
            .all(|o| o.pod.as_deref() != Some(bad.as_str())),
        "the erroring pod served a request"
    );
    // Once avoided (5 failures in a row), the pod is no longer chosen: count the decisions.
    let decisions = |text: &str| {
        sample(
            text,
            &format!("envoy_inference_scheduler_decisions_total{{pod=\"{bad}\"}}"),
        )
        .unwrap_or(0.0)
    };
    std::thread::sleep(Duration::from_millis(1200)); // one stats report
    let chosen_before = decisions(&prometheus(&envoy.admin_url));
    let later = load(&envoy.url, 8, 200, |_| {});
    std::thread::sleep(Duration::from_millis(1200));
    let chosen_after = decisions(&prometheus(&envoy.admin_url));
    assert_eq!(failed(&later), 0);
    assert!(
        chosen_before <= 20.0,
        "the erroring pod was chosen {chosen_before} times before it was avoided"
    );
    assert_eq!(
        chosen_after, chosen_before,
        "the erroring pod is still chosen after it was avoided"
    );
    let log = envoy.log();
    let erroring = format!("pod {bad} of inference_pool: erroring");
    assert_eq!(log.matches(&erroring).count(), 1, "logged once:\n{log}");
}

#[test]
fn a_hung_pod_is_found_by_the_first_byte_timeout_and_avoided() {
    let sim = sim(4);
    let pods = addrs(&sim);
    let hung = pods[3].clone();
    set_fault(&sim.pods()[3].url(), r#"{"hang": true}"#);
    let mut config = EnvoyConfig::new(pods);
    config.first_byte_timeout = "0.5s".into();
    let envoy = Envoy::start(&config);
    let outcomes = load(&envoy.url, 4, 200, |_| {});
    let slow = outcomes
        .iter()
        .filter(|o| o.elapsed >= Duration::from_millis(500))
        .count();
    eprintln!(
        "hung pod: {} of {} failed, {slow} waited for the first-byte timeout",
        failed(&outcomes),
        outcomes.len()
    );
    assert_eq!(failed(&outcomes), 0, "a request to the hung pod failed");
    assert!(
        outcomes
            .iter()
            .all(|o| o.pod.as_deref() != Some(hung.as_str())),
        "the hung pod answered?"
    );
    assert!(
        slow > 0,
        "no request ever waited for the hung pod: was it chosen?"
    );
    // Avoided: the last half of the run never waited for the timeout.
    let late_slow = outcomes[100..]
        .iter()
        .filter(|o| o.elapsed >= Duration::from_millis(500))
        .count();
    assert_eq!(
        late_slow, 0,
        "requests still wait for the hung pod late in the run"
    );
}
