//! Every built-in scorer, filter and picker on crafted pod states.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use scheduler::framework::{Filter, Picker, Scorer};
use scheduler::plugins::filters::{Health, HotSpotGuard, Saturation, StaleMetrics};
use scheduler::plugins::pickers::{MaxScore, WeightedRandom};
use scheduler::plugins::scorers::{
    InFlight, KvCache, LoraAffinity, Prefix, PrefixMatches, Queue, SessionAffinity,
};
use scheduler::prefix::{PrefixConfig, PrefixIndex};
use scheduler::{PodMetrics, PodView};

fn run(scorer: &dyn Scorer, pods: &[scheduler::PodView<'_>]) -> Vec<Option<f64>> {
    let mut cycle = cycle(facts(&[]));
    let mut scores = vec![None; pods.len()];
    scorer.score(&mut cycle, &candidates(pods), &mut scores);
    scores
}

// ---- scorers ----

#[test]
fn queue_scores_relative_to_the_shortest_queue() {
    // scale 8: (0 + 8) / (q + 8).
    let (a, b, c) = (metrics(0, 0.0), metrics(8, 0.0), metrics(24, 0.0));
    let pods = [
        pod(PODS[0], Some(&a)),
        pod(PODS[1], Some(&b)),
        pod(PODS[2], Some(&c)),
    ];
    assert_eq!(
        run(&Queue::default(), &pods),
        [Some(1.0), Some(0.5), Some(0.25)]
    );
}

#[test]
fn one_queued_request_barely_moves_the_queue_score() {
    let (a, b) = (metrics(0, 0.0), metrics(1, 0.0));
    let pods = [pod(PODS[0], Some(&a)), pod(PODS[1], Some(&b))];
    let scores = run(&Queue::default(), &pods);
    assert_eq!(scores[0], Some(1.0));
    assert!(scores[1].unwrap() > 0.85, "{scores:?}");
}

#[test]
fn queue_ties_all_score_one() {
    let m = metrics(3, 0.0);
    let pods = [pod(PODS[0], Some(&m)), pod(PODS[1], Some(&m))];
    assert_eq!(run(&Queue::default(), &pods), [Some(1.0), Some(1.0)]);
}

#[test]
fn queue_grows_by_what_was_routed_since_the_scrape_to_a_full_pod() {
    // Both scraped with 2 waiting behind a full batch of 4; since then we sent 10 more to the
    // first, which must all wait too.
    let m = PodMetrics {
        running: 4,
        ..metrics(2, 0.0)
    };
    let mut pods = [pod(PODS[0], Some(&m)), pod(PODS[1], Some(&m))];
    pods[0].routed_since_scrape = 10;
    assert_eq!(run(&Queue::default(), &pods), [Some(0.5), Some(1.0)]);
}

#[test]
fn queue_uses_in_flight_for_pods_without_metrics() {
    let mut pods = [pod(PODS[0], None), pod(PODS[1], None)];
    pods[0].in_flight = 8;
    assert_eq!(run(&Queue::default(), &pods), [Some(0.5), Some(1.0)]);
}

#[test]
fn queue_scale_is_a_parameter() {
    use scheduler::plugins::scorers::QueueParameters;
    let q = Queue::from_parameters(QueueParameters { scale: 2.0 }).unwrap();
    let (a, b) = (metrics(0, 0.0), metrics(2, 0.0));
    let pods = [pod(PODS[0], Some(&a)), pod(PODS[1], Some(&b))];
    assert_eq!(run(&q, &pods), [Some(1.0), Some(0.5)]);
    assert!(Queue::from_parameters(QueueParameters { scale: 0.0 }).is_err());
}

#[test]
fn kv_cache_scores_the_free_fraction_and_abstains_without_metrics() {
    let (a, b, nan) = (metrics(0, 0.25), metrics(0, 1.5), metrics(0, f64::NAN));
    let pods = [
        pod(PODS[0], Some(&a)),
        pod(PODS[1], Some(&b)),
        pod(PODS[2], None),
        pod(PODS[3], Some(&nan)),
    ];
    assert_eq!(
        run(&KvCache, &pods),
        [Some(0.75), Some(0.0), None, Some(0.0)]
    );
}

#[test]
fn in_flight_prefers_the_least_busy() {
    let mut pods = [pod(PODS[0], None), pod(PODS[1], None), pod(PODS[2], None)];
    pods[0].in_flight = 10;
    pods[1].in_flight = 0;
    pods[2].in_flight = 5;
    assert_eq!(run(&InFlight, &pods), [Some(0.0), Some(1.0), Some(0.5)]);
}

#[test]
fn prefix_scores_the_held_share_and_publishes_matches() {
    let index = Arc::new(PrefixIndex::new(PrefixConfig::default()));
    let pods = [pod(PODS[0], None), pod(PODS[1], None), pod(PODS[2], None)];
    index.record(&pods[0], &[1, 2, 3, 4]);
    index.record(&pods[1], &[1, 2]);
    let scorer = Prefix::new(index);
    let blocks = [1, 2, 3, 4];
    let mut cycle = cycle(facts(&blocks));
    let mut scores = vec![None; 3];
    scorer.score(&mut cycle, &candidates(&pods), &mut scores);
    assert_eq!(scores, [Some(1.0), Some(0.5), Some(0.0)]);
    assert_eq!(
        cycle.state.get::<PrefixMatches>(),
        Some(&PrefixMatches([4, 2, 0].into_iter().collect()))
    );
}

#[test]
fn prefix_abstains_for_prompts_shorter_than_a_block() {
    let scorer = Prefix::new(Arc::new(PrefixIndex::new(PrefixConfig::default())));
    assert_eq!(run(&scorer, &[pod(PODS[0], None)]), [None]);
}

#[test]
fn lora_affinity_ranks_serving_loading_room_swap() {
    let adapter = |running: &[&str], waiting: &[&str], max: Option<u32>| PodMetrics {
        running_adapters: running.iter().map(|a| (*a).into()).collect(),
        waiting_adapters: waiting.iter().map(|a| (*a).into()).collect(),
        max_lora: max,
        ..PodMetrics::idle()
    };
    let serving = adapter(&["sql"], &[], Some(1));
    let loading = adapter(&["chat"], &["sql"], Some(2));
    let room = adapter(&["chat"], &[], Some(2));
    let unknown_limit = adapter(&["chat"], &[], None);
    let full = adapter(&["chat", "code"], &[], Some(2));
    let pods = [
        pod(PODS[0], Some(&serving)),
        pod(PODS[1], Some(&loading)),
        pod(PODS[2], Some(&room)),
        pod(PODS[3], Some(&full)),
        pod("10.0.0.5:8000", Some(&unknown_limit)),
        pod("10.0.0.6:8000", None),
    ];
    let mut request = facts(&[]);
    request.adapter = Some("sql");
    let mut cycle = cycle(request);
    let mut scores = vec![None; pods.len()];
    LoraAffinity.score(&mut cycle, &candidates(&pods), &mut scores);
    assert_eq!(
        scores,
        [Some(1.0), Some(0.8), Some(0.5), Some(0.0), Some(0.5), None]
    );
    // A base-model request: the scorer abstains everywhere.
    assert_eq!(run(&LoraAffinity, &pods), vec![None; pods.len()]);
}

#[test]
fn session_affinity_sends_a_session_to_one_stable_pod() {
    let pods: Vec<_> = PODS.iter().map(|a| pod(a, None)).collect();
    let score = |session: &str, pods: &[scheduler::PodView<'_>]| {
        let mut request = facts(&[]);
        request.session = Some(session);
        let mut cycle = cycle(request);
        let mut scores = vec![None; pods.len()];
        SessionAffinity.score(&mut cycle, &candidates(pods), &mut scores);
        scores
    };
    let scores = score("alice", &pods);
    assert_eq!(scores.iter().filter(|s| **s == Some(1.0)).count(), 1);
    assert_eq!(scores.iter().filter(|s| **s == Some(0.0)).count(), 3);
    let home = PODS[scores.iter().position(|s| *s == Some(1.0)).unwrap()];
    // Same pod whatever the order of the pods.
    let reversed: Vec<_> = pods.iter().rev().copied().collect();
    let again = score("alice", &reversed);
    assert_eq!(
        reversed[again.iter().position(|s| *s == Some(1.0)).unwrap()].address,
        home
    );
    // Sessions spread over pods.
    let homes: std::collections::HashSet<usize> = (0..64)
        .map(|i| {
            score(&format!("user-{i}"), &pods)
                .iter()
                .position(|s| *s == Some(1.0))
                .unwrap()
        })
        .collect();
    assert_eq!(homes.len(), 4);
    // No session: abstains.
    assert_eq!(run(&SessionAffinity, &pods), vec![None; 4]);
}

// ---- filters ----

fn filtered<'a>(
    filter: &dyn Filter,
    pods: &[scheduler::PodView<'a>],
) -> Vec<scheduler::framework::Candidate<'a>> {
    let mut cycle = cycle(facts(&[]));
    let mut candidates = candidates(pods);
    filter.filter(&mut cycle, &mut candidates);
    candidates.into_vec()
}

#[test]
fn health_drops_unhealthy_pods() {
    let mut pods: Vec<_> = PODS.iter().map(|a| pod(a, None)).collect();
    pods[1].healthy = false;
    pods[3].healthy = false;
    let left: Vec<usize> = filtered(&Health, &pods).iter().map(|c| c.index).collect();
    assert_eq!(left, [0, 2]);
    for p in &mut pods {
        p.healthy = false;
    }
    assert!(filtered(&Health, &pods).is_empty());
}

#[test]
fn stale_metrics_drops_stale_pods_but_keeps_fresh_and_unscraped_ones() {
    let filter = StaleMetrics::new(Duration::from_millis(500));
    let fresh = metrics(1, 0.1);
    let stale = aged(metrics(0, 0.0), Duration::from_secs(5));
    let pods = [
        pod(PODS[0], Some(&stale)),
        pod(PODS[1], Some(&fresh)),
        pod(PODS[2], None),
    ];
    let left: Vec<usize> = filtered(&filter, &pods).iter().map(|c| c.index).collect();
    assert_eq!(left, [1, 2]);
}

#[test]
fn stale_metrics_keeps_every_pod_when_all_are_stale_but_hides_their_metrics() {
    let filter = StaleMetrics::new(Duration::from_millis(500));
    let stale = aged(metrics(0, 0.0), Duration::from_secs(5));
    let pods = [pod(PODS[0], Some(&stale)), pod(PODS[1], Some(&stale))];
    let left = filtered(&filter, &pods);
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|c| c.metrics().is_none()));
}

#[test]
fn hot_spot_guard_drops_overloaded_pods_only_when_unbalanced() {
    let guard = HotSpotGuard::from_parameters(
        serde_json::from_str(r#"{"abs_threshold": 8, "rel_threshold": 1.5}"#).unwrap(),
    )
    .unwrap();
    let (idle, busy, hot) = (metrics(0, 0.0), metrics(6, 0.0), metrics(40, 0.0));
    let pods = [
        pod(PODS[0], Some(&hot)),
        pod(PODS[1], Some(&idle)),
        pod(PODS[2], Some(&busy)),
    ];
    let left: Vec<usize> = filtered(&guard, &pods).iter().map(|c| c.index).collect();
    assert_eq!(left, [1, 2], "the hot pod goes, the merely busy one stays");

    // Balanced within the absolute threshold: nobody is dropped.
    let pods = [pod(PODS[0], Some(&busy)), pod(PODS[1], Some(&idle))];
    assert_eq!(filtered(&guard, &pods).len(), 2);

    // Large but proportionally similar loads (100 vs 120 < 1.5×): nobody is dropped.
    let (a, b) = (metrics(100, 0.0), metrics(120, 0.0));
    let pods = [pod(PODS[0], Some(&a)), pod(PODS[1], Some(&b))];
    assert_eq!(filtered(&guard, &pods).len(), 2);
}

#[test]
fn hot_spot_guard_counts_in_flight_when_metrics_are_unknown_or_lag() {
    let guard =
        HotSpotGuard::from_parameters(serde_json::from_str(r#"{"abs_threshold": 8}"#).unwrap())
            .unwrap();
    let mut pods = [pod(PODS[0], None), pod(PODS[1], None)];
    pods[0].in_flight = 30;
    let left: Vec<usize> = filtered(&guard, &pods).iter().map(|c| c.index).collect();
    assert_eq!(left, [1]);
    // Everyone equally hot: the least loaded is never dropped, so nothing is.
    pods[1].in_flight = 30;
    assert_eq!(filtered(&guard, &pods).len(), 2);
}

// ---- pickers ----

#[test]
fn max_score_takes_the_highest_total() {
    let pods: Vec<_> = PODS.iter().map(|a| pod(a, None)).collect();
    let cycle = cycle(facts(&[42]));
    assert_eq!(
        MaxScore.pick(&cycle, &candidates(&pods), &[0.2, 0.9, 0.5, 0.89]),
        1
    );
}

#[test]
fn max_score_breaks_ties_by_rendezvous_on_the_first_block_whatever_the_order() {
    let pods: Vec<_> = PODS.iter().map(|a| pod(a, None)).collect();
    let reversed: Vec<_> = pods.iter().rev().copied().collect();
    let mut winners = std::collections::HashSet::new();
    for first_block in 0..200u64 {
        let blocks = [first_block];
        let cycle = cycle(facts(&blocks));
        let a = MaxScore.pick(&cycle, &candidates(&pods), &[0.5; 4]);
        let b = MaxScore.pick(&cycle, &candidates(&reversed), &[0.5; 4]);
        assert_eq!(
            pods[a].address, reversed[b].address,
            "replicas disagree on block {first_block}"
        );
        winners.insert(a);
        // Only tied pods compete: a lower total never wins the tie-break.
        let c = MaxScore.pick(&cycle, &candidates(&pods), &[0.5, 0.5, 0.1, 0.5]);
        assert_ne!(c, 2);
    }
    assert_eq!(
        winners.len(),
        4,
        "ties should spread over pods by first block"
    );
}

#[test]
fn weighted_random_follows_the_scores() {
    let pods: Vec<_> = PODS[..3].iter().map(|a| pod(a, None)).collect();
    let cycle = cycle(facts(&[1]));
    let mut counts = [0usize; 3];
    for _ in 0..20_000 {
        counts[WeightedRandom.pick(&cycle, &candidates(&pods), &[0.25, 0.0, 0.75])] += 1;
    }
    assert_eq!(counts[1], 0, "a zero score is never picked");
    let share = counts[0] as f64 / 20_000.0;
    assert!(
        (0.2..0.3).contains(&share),
        "share of the 0.25 pod: {share}"
    );
    // All zero: uniform, every pod reachable.
    let mut seen = [false; 3];
    for _ in 0..1000 {
        seen[WeightedRandom.pick(&cycle, &candidates(&pods), &[0.0; 3])] = true;
    }
    assert_eq!(seen, [true; 3]);
}

fn saturation_filter(index: &Arc<PrefixIndex>) -> Saturation {
    Saturation::new(
        Arc::clone(index),
        serde_json::from_str("{}").expect("default parameters"),
    )
    .unwrap()
}

fn survivors(filter: &dyn Filter, pods: &[PodView<'_>], blocks: &[u64]) -> Vec<usize> {
    let mut cands = candidates(pods);
    filter.filter(&mut cycle(facts(blocks)), &mut cands);
    cands.iter().map(|c| c.index).collect()
}

#[test]
fn saturation_keeps_affinity_among_the_pods_with_room() {
    let index = Arc::new(PrefixIndex::new(PrefixConfig::default()));
    let blocks = [1, 2, 3, 4];
    let m = metrics(0, 0.1);
    let mut pods = [
        pod(PODS[0], Some(&m)),
        pod(PODS[1], Some(&m)),
        pod(PODS[2], Some(&m)),
    ];
    index.record(&pods[1], &blocks);
    pods[0].full = true;
    let filter = saturation_filter(&index);
    assert_eq!(
        survivors(&filter, &pods, &blocks),
        [1, 2],
        "the full pod goes, the rest (with the prefix holder) are scored"
    );
}

#[test]
fn when_every_pod_is_full_the_cached_prefix_outweighs_a_slightly_longer_queue() {
    let index = Arc::new(PrefixIndex::new(PrefixConfig::default()));
    let blocks: Vec<u64> = (1..=10).collect();
    // Batches of 4 full; the prefix holder has 7 waiting, the others 5 and 6.
    let (holder, short, mid) = (
        PodMetrics {
            running: 4,
            ..metrics(7, 0.5)
        },
        PodMetrics {
            running: 4,
            ..metrics(5, 0.5)
        },
        PodMetrics {
            running: 4,
            ..metrics(6, 0.5)
        },
    );
    let mut pods = [
        pod(PODS[0], Some(&short)),
        pod(PODS[1], Some(&holder)),
        pod(PODS[2], Some(&mid)),
    ];
    index.record(&pods[1], &blocks[..9]);
    for p in &mut pods {
        p.full = true;
    }
    let filter = saturation_filter(&index);
    // Costs: 0 + 8, 8 × 2/13 + 8 × 0.1, 8 × 1/13 + 8: the holder.
    assert_eq!(survivors(&filter, &pods, &blocks), [1]);

    // Behind queues of 90, twenty more waiting are little: 8 × 20/98 + 0.8 against 8.
    let (deep, deeper) = (
        PodMetrics {
            running: 4,
            ..metrics(90, 0.5)
        },
        PodMetrics {
            running: 4,
            ..metrics(110, 0.5)
        },
    );
    let deep_pods = [
        scheduler::PodView {
            full: true,
            ..pod(PODS[0], Some(&deep))
        },
        scheduler::PodView {
            full: true,
            ..pod(PODS[1], Some(&deeper))
        },
    ];
    assert_eq!(survivors(&filter, &deep_pods, &blocks), [1]);

    // A queue far longer than the prefill saved loses it: 8 × 15/13 + 0.8 against 8.
    let swamped = PodMetrics {
        running: 4,
        ..metrics(20, 0.5)
    };
    pods[1].metrics = Some(&swamped);
    assert_eq!(survivors(&filter, &pods, &blocks), [0]);

    // Nobody holds anything: the shortest queue; equal costs all stay for the tie-break.
    assert_eq!(survivors(&filter, &pods, &[99, 98]), [0]);
    let same = [pods[0], pods[0]];
    assert_eq!(survivors(&filter, &same, &[99]), [0, 1]);
}

#[test]
fn saturation_prefill_weight_is_a_parameter() {
    let index = Arc::new(PrefixIndex::new(PrefixConfig::default()));
    let bad = Saturation::new(
        Arc::clone(&index),
        serde_json::from_str(r#"{"prefill_weight": -1}"#).unwrap(),
    );
    assert!(bad.is_err());
    let zero = Saturation::new(
        Arc::clone(&index),
        serde_json::from_str(r#"{"prefill_weight": 0}"#).unwrap(),
    )
    .unwrap();
    let (a, b) = (metrics(3, 0.9), metrics(2, 0.9));
    let mut pods = [pod(PODS[0], Some(&a)), pod(PODS[1], Some(&b))];
    index.record(&pods[0], &[5, 6]);
    pods.iter_mut().for_each(|p| p.full = true);
    assert_eq!(
        survivors(&zero, &pods, &[5, 6]),
        [1],
        "weight 0: queue only, the cache is ignored"
    );
}
