//! Gateway replicas that share no state must agree: two schedulers, each fed a different half
//! of one trace of prefix groups, place every group on the same pod.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use scheduler::request::{parse, ApiKind};
use scheduler::{PodMetrics, RequestContext, Scheduler};

/// One replica: its scheduler and what it routed to each pod since the last "scrape".
struct Replica {
    scheduler: Scheduler,
    routed: [u32; 4],
}

#[test]
fn two_replicas_fed_different_halves_of_a_trace_choose_the_same_pods() {
    // Scraped state, the same for both replicas: each pod runs a batch of 24, the KV caches are
    // a little differently full, so the KV-cache scorer alone would rank the pods; what each
    // replica routed since its last scrape moves its own estimate of them.
    let scraped: Vec<PodMetrics> = [0.30, 0.32, 0.35, 0.31]
        .iter()
        .map(|&kv| PodMetrics {
            running: 24,
            ..metrics(0, kv)
        })
        .collect();
    let mut replicas = [0, 1].map(|_| Replica {
        scheduler: Scheduler::default(),
        routed: [0; 4],
    });
    // 64 groups × 8 prompts sharing a 600-character system prompt per group, in a shuffled
    // order; even positions go to replica 0, odd ones to replica 1 (clients spread at random).
    let mut trace: Vec<(usize, usize)> =
        (0..64).flat_map(|g| (0..8).map(move |q| (g, q))).collect();
    fastrand::Rng::with_seed(7).shuffle(&mut trace);

    let mut homes: HashMap<usize, HashSet<&str>> = HashMap::new();
    for (n, &(group, question)) in trace.iter().enumerate() {
        let replica = &mut replicas[n % 2];
        let pods: Vec<_> = PODS
            .iter()
            .zip(&scraped)
            .zip(replica.routed)
            .map(|((address, m), routed)| scheduler::PodView {
                routed_since_scrape: routed,
                ..pod(address, Some(m))
            })
            .collect();
        let text = format!(
            "{}\nquestion {question}: {}",
            prompt(group as u64, 600),
            prompt(1000 + question as u64, 80)
        );
        let raw = body("m", &text);
        let request = parse(&raw, ApiKind::Completions).unwrap();
        let d = replica
            .scheduler
            .schedule(&request, &pods, &RequestContext::default())
            .unwrap();
        replica.routed[d.pod] += 1;
        homes.entry(group).or_default().insert(PODS[d.pod]);
        // Each replica's scrapes land at its own moments.
        if n % 24 == 11 || n % 24 == 18 {
            replicas[n % 2].routed = [0; 4];
        }
    }
    let split: Vec<_> = homes.iter().filter(|(_, pods)| pods.len() > 1).collect();
    assert!(
        split.is_empty(),
        "{} of 64 groups split between replicas: {split:?}",
        split.len()
    );
    let mut per_pod: HashMap<&str, usize> = HashMap::new();
    for pods in homes.values() {
        *per_pod.entry(pods.iter().next().unwrap()).or_default() += 1;
    }
    assert!(
        per_pod.values().all(|&g| g <= 24),
        "groups must spread over the pods (even share 16): {per_pod:?}"
    );
}
