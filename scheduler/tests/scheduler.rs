//! Whole decisions through `Scheduler::schedule`: parsing, filters, scorers, picker, the prefix
//! index learning from routes, fallbacks and replica agreement.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use scheduler::request::{parse, ApiKind};
use scheduler::{
    Basis, Criticality, PodMetrics, PodView, RequestContext, ScheduleError, Scheduler,
};

fn schedule(s: &Scheduler, body: &[u8], pods: &[PodView<'_>]) -> scheduler::Decision {
    let request = parse(body, ApiKind::Completions).unwrap();
    s.schedule(&request, pods, &RequestContext::default())
        .unwrap()
}

#[test]
fn a_shared_prefix_follows_the_pod_that_served_it() {
    let s = Scheduler::default();
    let m = metrics(2, 0.3);
    let pods: Vec<_> = PODS.iter().map(|a| pod(a, Some(&m))).collect();
    let system = prompt(1, 4000);
    let first = schedule(&s, &body("llama", &format!("{system} question one")), &pods);
    assert_eq!(first.prefix_hit_blocks, 0);
    for q in 0..10 {
        let d = schedule(&s, &body("llama", &format!("{system} question {q}")), &pods);
        assert_eq!(d.pod, first.pod, "same system prompt, same pod");
        assert_eq!(d.prefix_hit_blocks, 4000 / 64);
        assert_eq!(d.basis, Basis::Scored);
    }
    // Another model shares no cache with it.
    let other = s
        .decide(
            &parse(
                &body("mistral", &format!("{system} q")),
                ApiKind::Completions,
            )
            .unwrap(),
            &pods,
            &Default::default(),
        )
        .unwrap();
    assert_eq!(other.prefix_hit_blocks, 0);
}

#[test]
fn queue_and_kv_outweigh_a_partial_prefix_match() {
    let s = Scheduler::default();
    let (idle, busy) = (metrics(0, 0.1), metrics(30, 0.9));
    let text = prompt(2, 6400);
    // The busy pod holds the first quarter of the prompt.
    let pods = [pod(PODS[0], Some(&busy)), pod(PODS[1], Some(&idle))];
    let raw = body("m", &text[..1600]);
    let request = parse(&raw, ApiKind::Completions).unwrap();
    let d = s.decide(&request, &pods, &Default::default()).unwrap();
    s.record_route(&d, &pods[0]);
    let d = schedule(&s, &body("m", &text), &pods);
    // busy: (0 + 0.1 + 0.25) / 3; idle: (1 + 0.9 + 0) / 3.
    assert_eq!(d.pod, 1);
    assert!((d.total - 1.9 / 3.0).abs() < 1e-9, "{}", d.total);
}

#[test]
fn all_unhealthy_pods_still_route_to_the_least_in_flight() {
    let s = Scheduler::default();
    let mut pods: Vec<_> = PODS
        .iter()
        .map(|a| PodView {
            healthy: false,
            ..pod(a, None)
        })
        .collect();
    for (i, p) in pods.iter_mut().enumerate() {
        p.in_flight = [5, 3, 1, 4][i];
    }
    let d = schedule(&s, &body("m", &prompt(3, 500)), &pods);
    assert_eq!(d.pod, 2);
    assert_eq!(d.basis, Basis::LeastInFlightFallback);
    assert!(d.to_string().contains("fallback=least-in-flight"), "{d}");
    // Tied in-flight: still a stable choice among the tied ones.
    for p in &mut pods {
        p.in_flight = 0;
    }
    let a = schedule(&s, &body("m", &prompt(3, 500)), &pods).pod;
    let b = schedule(&s, &body("m", &prompt(3, 500)), &pods).pod;
    assert_eq!(a, b);
}

#[test]
fn unhealthy_pods_are_avoided_even_with_the_best_prefix() {
    let s = Scheduler::default();
    let pods: Vec<_> = PODS.iter().map(|a| pod(a, None)).collect();
    let text = prompt(4, 2000);
    let first = schedule(&s, &body("m", &text), &pods).pod;
    let mut pods = pods;
    pods[first].healthy = false;
    let d = schedule(&s, &body("m", &text), &pods);
    assert_ne!(d.pod, first);
    assert_eq!(d.candidates, 3);
}

#[test]
fn no_pods_is_an_error() {
    let s = Scheduler::default();
    let raw = body("m", "hello");
    let request = parse(&raw, ApiKind::Completions).unwrap();
    let err = s.schedule(&request, &[], &Default::default()).unwrap_err();
    assert_eq!(err, ScheduleError::NoPods);
    assert_eq!(err.to_string(), "no inference pods are available");
}

#[test]
fn without_metrics_the_metric_scorers_abstain_and_the_rest_decide() {
    let s = Scheduler::default();
    let mut pods: Vec<_> = PODS.iter().map(|a| pod(a, None)).collect();
    // Far enough apart that only pod 1 is within the prefix scorer's home band.
    pods[0].in_flight = 12;
    pods[1].in_flight = 1;
    pods[2].in_flight = 10;
    pods[3].in_flight = 12;
    let d = schedule(&s, &body("m", &prompt(5, 300)), &pods);
    assert_eq!(d.pod, 1, "queue falls back to in-flight");
    let kv = d.scores.iter().find(|x| x.scorer == "kv-cache").unwrap();
    assert_eq!(kv.score, None);
    let lora = d
        .scores
        .iter()
        .find(|x| x.scorer == "lora-affinity")
        .unwrap();
    assert_eq!(lora.score, None);
}

#[test]
fn stale_metrics_are_not_trusted() {
    let s = Scheduler::default();
    // The stale pod looks idle, but its data is 10 s old.
    let stale = aged(metrics(0, 0.0), Duration::from_secs(10));
    let fresh = metrics(20, 0.8);
    let pods = [pod(PODS[0], Some(&stale)), pod(PODS[1], Some(&fresh))];
    let d = schedule(&s, &body("m", &prompt(6, 300)), &pods);
    assert_eq!(d.pod, 1);
    assert_eq!(d.candidates, 1);
}

#[test]
fn when_every_pod_is_stale_the_scorers_without_metrics_decide() {
    let s = Scheduler::default();
    let (idle, busy) = (
        aged(metrics(0, 0.0), Duration::from_secs(10)),
        aged(metrics(50, 0.9), Duration::from_secs(10)),
    );
    let mut pods = [pod(PODS[0], Some(&idle)), pod(PODS[1], Some(&busy))];
    // Stale data says pod 0 is idle; what we know now says it has 9 requests in flight.
    pods[0].in_flight = 9;
    let d = schedule(&s, &body("m", &prompt(12, 300)), &pods);
    assert_eq!(d.candidates, 2);
    assert_eq!(d.pod, 1);
    let kv = d.scores.iter().find(|x| x.scorer == "kv-cache").unwrap();
    assert_eq!(kv.score, None, "stale KV usage must not be used");
}

#[test]
fn a_faulty_scorer_cannot_poison_the_totals() {
    use scheduler::framework::{Candidate, Cycle, Scorer};
    struct Broken;
    impl Scorer for Broken {
        fn name(&self) -> &'static str {
            "broken"
        }
        fn score(&self, _: &mut Cycle<'_>, _: &[Candidate<'_>], scores: &mut [Option<f64>]) {
            scores.fill(Some(f64::NAN));
        }
    }
    let mut registry = scheduler::Registry::builtin();
    registry.register_scorer("broken", |_| Ok(Box::new(Broken)));
    let s = Scheduler::from_json_with(
        r#"{"profiles": {"default": {"scorers": [{"type": "broken"}, {"type": "in-flight"}]}}}"#,
        &registry,
    )
    .unwrap();
    let mut pods: Vec<_> = PODS.iter().map(|a| pod(a, None)).collect();
    for (i, p) in pods.iter_mut().enumerate() {
        p.in_flight = [4, 4, 0, 4][i];
    }
    let d = schedule(&s, &body("m", "hello"), &pods);
    assert_eq!(d.pod, 2);
    assert!(d.total.is_finite());
}

#[test]
fn lora_requests_go_to_pods_serving_the_adapter() {
    let s = Scheduler::default();
    let with = PodMetrics {
        running_adapters: vec!["sql-lora".into()],
        max_lora: Some(1),
        ..metrics(1, 0.2)
    };
    let without = PodMetrics {
        running_adapters: vec!["chat-lora".into()],
        max_lora: Some(1),
        ..metrics(1, 0.2)
    };
    let pods = [
        pod(PODS[0], Some(&without)),
        pod(PODS[1], Some(&with)),
        pod(PODS[2], Some(&without)),
    ];
    for i in 0..8 {
        let d = schedule(&s, &body("sql-lora", &prompt(100 + i, 300)), &pods);
        assert_eq!(d.pod, 1);
    }
    // A configured adapter nobody serves yet: pods with room win over pods that must swap.
    let s = Scheduler::from_json(r#"{"lora_adapters": ["new-lora"]}"#).unwrap();
    let room = PodMetrics {
        max_lora: Some(2),
        ..without.clone()
    };
    let pods = [pod(PODS[0], Some(&without)), pod(PODS[1], Some(&room))];
    let d = schedule(&s, &body("new-lora", &prompt(7, 300)), &pods);
    assert_eq!(d.pod, 1);
    assert_eq!(
        d.scores
            .iter()
            .find(|x| x.scorer == "lora-affinity")
            .unwrap()
            .score,
        Some(0.5)
    );
}

#[test]
fn hot_spot_guard_makes_prefix_affinity_yield_to_load() {
    let s = Scheduler::from_json(
        r#"{"profiles": {"default": {
            "filters": [{"type": "health"}, {"type": "hot-spot-guard", "parameters": {"abs_threshold": 10}}],
            "scorers": [{"type": "prefix", "weight": 10}, {"type": "in-flight"}]}}}"#,
    )
    .unwrap();
    let mut pods: Vec<_> = PODS.iter().map(|a| pod(a, None)).collect();
    let text = prompt(8, 3000);
    let home = schedule(&s, &body("m", &text), &pods).pod;
    pods[home].in_flight = 5;
    assert_eq!(
        schedule(&s, &body("m", &text), &pods).pod,
        home,
        "mild load: prefix still wins"
    );
    pods[home].in_flight = 50;
    let d = schedule(&s, &body("m", &text), &pods);
    assert_ne!(d.pod, home, "hot spot: load wins");
    assert_eq!(d.candidates, 3);
}

#[test]
fn sessions_stick_to_one_pod_under_session_affinity() {
    let s = Scheduler::from_json(
        r#"{"profiles": {"default": {"scorers": [{"type": "session-affinity", "weight": 3}, {"type": "in-flight"}]}}}"#,
    )
    .unwrap();
    let pods: Vec<_> = PODS.iter().map(|a| pod(a, None)).collect();
    let context = RequestContext {
        session: Some("user-17"),
        ..Default::default()
    };
    let picks: Vec<usize> = (0..10)
        .map(|i| {
            let raw = body("m", &prompt(200 + i, 400));
            let request = parse(&raw, ApiKind::Completions).unwrap();
            s.schedule(&request, &pods, &context).unwrap().pod
        })
        .collect();
    assert!(picks.windows(2).all(|w| w[0] == w[1]), "{picks:?}");
}

#[test]
fn profiles_are_selected_per_request() {
    let s = Scheduler::from_json(
        r#"{"profiles": {
            "default": {"scorers": [{"type": "queue"}]},
            "least-busy": {"scorers": [{"type": "in-flight"}]}}}"#,
    )
    .unwrap();
    let (a, b) = (metrics(0, 0.0), metrics(9, 0.0));
    let mut pods = [pod(PODS[0], Some(&a)), pod(PODS[1], Some(&b))];
    pods[0].in_flight = 9;
    let raw = body("m", "hi");
    let request = parse(&raw, ApiKind::Completions).unwrap();
    let by_queue = s.decide(&request, &pods, &Default::default()).unwrap();
    assert_eq!((by_queue.pod, &*by_queue.profile), (0, "default"));
    let context = RequestContext {
        profile: Some("least-busy"),
        ..Default::default()
    };
    let by_in_flight = s.decide(&request, &pods, &context).unwrap();
    assert_eq!(
        (by_in_flight.pod, &*by_in_flight.profile),
        (1, "least-busy")
    );
    let context = RequestContext {
        profile: Some("nope"),
        ..Default::default()
    };
    let err = s.decide(&request, &pods, &context).unwrap_err();
    assert!(
        err.to_string().contains("\"nope\"") && err.to_string().contains("least-busy"),
        "{err}"
    );
}

#[test]
fn decisions_report_what_they_were_based_on() {
    let s = Scheduler::default();
    let m = metrics(0, 0.5);
    let pods = [pod(PODS[0], Some(&m))];
    let raw = body("m", &prompt(9, 640));
    let request = parse(&raw, ApiKind::Completions).unwrap();
    let context = RequestContext {
        criticality: Criticality::Sheddable,
        ..Default::default()
    };
    let d = s.schedule(&request, &pods, &context).unwrap();
    assert_eq!(d.request_blocks, 10);
    assert_eq!(d.blocks().len(), 10);
    assert_eq!(d.criticality, Criticality::Sheddable);
    assert_eq!(
        d.to_string(),
        "profile=default total=0.667 queue=1.000 kv-cache=0.500 prefix=0.500 lora-affinity=- prefix=0/10"
    );
    let d = s.schedule(&request, &pods, &context).unwrap();
    assert_eq!(d.prefix_hit_blocks, 10);
}

#[test]
fn forgetting_a_pod_drops_its_prefix_entries() {
    let s = Scheduler::default();
    let pods: Vec<_> = PODS.iter().map(|a| pod(a, None)).collect();
    let text = prompt(10, 2000);
    let home = schedule(&s, &body("m", &text), &pods).pod;
    assert!(s.prefix_index().blocks() > 0);
    s.forget_pod(PODS[home]);
    assert_eq!(s.prefix_index().blocks(), 0);
    let d = s
        .decide(
            &parse(&body("m", &text), ApiKind::Completions).unwrap(),
            &pods,
            &Default::default(),
        )
        .unwrap();
    assert_eq!(d.prefix_hit_blocks, 0);
}

#[test]
fn chat_requests_share_prefixes_across_turns() {
    let s = Scheduler::default();
    let pods: Vec<_> = PODS.iter().map(|a| pod(a, None)).collect();
    let system = prompt(11, 3000);
    let turn = |q: &str| {
        serde_json::to_vec(&serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": system}, {"role": "user", "content": q}]}))
        .unwrap()
    };
    let first = s
        .schedule(
            &parse(&turn("hello"), ApiKind::Chat).unwrap(),
            &pods,
            &Default::default(),
        )
        .unwrap();
    let second = s
        .schedule(
            &parse(&turn("and then?"), ApiKind::Chat).unwrap(),
            &pods,
            &Default::default(),
        )
        .unwrap();
    assert_eq!(first.pod, second.pod);
    assert!(second.prefix_hit_blocks >= 3000 / 64);
}

/// Replays one request history against a scheduler, varying pod states along the way.
fn replay(s: &Scheduler) -> Vec<usize> {
    let addresses: Vec<String> = (0..6).map(|i| format!("10.1.0.{i}:8000")).collect();
    (0..400u64)
        .map(|i| {
            let metrics: Vec<PodMetrics> = (0..6u64)
                .map(|j| {
                    metrics(
                        ((i * 7 + j * 3) % 11) as u32,
                        ((i + j * 5) % 10) as f64 / 10.0,
                    )
                })
                .collect();
            let mut pods: Vec<PodView<'_>> = addresses
                .iter()
                .zip(&metrics)
                .map(|(a, m)| pod(a, Some(m)))
                .collect();
            pods[(i % 6) as usize].in_flight = (i % 4) as u32;
            if i % 50 == 0 {
                pods[1].healthy = false;
            }
            let text = format!("{}{}", prompt(i % 13, 1500), prompt(i, 200));
            schedule(s, &body("m", &text), &pods).pod
        })
        .collect()
}

#[test]
fn replicas_with_the_same_config_and_history_agree() {
    let config = r#"{"prefix_index": {"capacity_per_pod": 300}}"#;
    let a = Scheduler::from_json(config).unwrap();
    let b = Scheduler::from_json(config).unwrap();
    let (picks_a, picks_b) = (replay(&a), replay(&b));
    assert_eq!(picks_a, picks_b);
    // The history was not trivial: several pods were used and the index evicted.
    let used: std::collections::HashSet<_> = picks_a.iter().collect();
    assert!(used.len() >= 3, "{used:?}");
    assert!(a.prefix_index().blocks() <= 6 * 300);
}

#[test]
fn retain_pods_follows_membership() {
    let s = Scheduler::default();
    let pods: Vec<_> = PODS.iter().map(|a| pod(a, None)).collect();
    for i in 0..20 {
        schedule(&s, &body("m", &prompt(300 + i, 1000)), &pods);
    }
    assert_eq!(s.prefix_index().pods(), 4);
    s.retain_pods(|address| address == PODS[0] || address == PODS[1]);
    assert_eq!(s.prefix_index().pods(), 2);
}

#[test]
fn scheduler_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Scheduler>();
}

#[test]
fn one_scheduler_serves_many_threads() {
    let s = Arc::new(Scheduler::default());
    let addresses: Vec<String> = (0..16).map(|i| format!("10.2.0.{i}:8000")).collect();
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            let (s, addresses) = (&s, &addresses);
            scope.spawn(move || {
                let pods: Vec<_> = addresses.iter().map(|a| pod(a, None)).collect();
                for i in 0..300 {
                    let text = prompt((t * 1000 + i) % 20, 2000);
                    let d = schedule(s, &body("m", &text), &pods);
                    assert!(d.pod < 16);
                }
            });
        }
    });
    assert!(s.prefix_index().pods() > 0);
}
