//! The `precise-prefix` scorer through whole decisions: it follows what pods report holding,
//! not what was routed, and falls back to routes pod by pod.
//!
//! The block index here is a table in memory standing in for the `kv-events` crate's index
//! (which needs ZeroMQ streams; it is tested over real sockets there and in `integration/`).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use common::{body, metrics, pod, prompt, PODS};
use scheduler::plugins::scorers::{PreciseBlockIndex, PreciseUse};
use scheduler::prefix::token_blocks::{chain_seed, token_block_keys};
use scheduler::prefix::{PrefixConfig, PrefixIndex};
use scheduler::request::parse;
use scheduler::{ApiKind, Indexes, PodView, Registry, RequestContext, Scheduler, SchedulerConfig};

const BLOCK: usize = 4;

/// Per pod: `None` (no synced stream) or the keys it holds.
#[derive(Default)]
struct Table(RwLock<HashMap<String, Option<Vec<u64>>>>);

impl Table {
    fn set(&self, pod: &str, held: Option<Vec<u64>>) {
        self.0.write().unwrap().insert(pod.into(), held);
    }
}

impl PreciseBlockIndex for Table {
    fn block_size(&self) -> usize {
        BLOCK
    }

    fn precise_matches(&self, pod: &str, keys: &[u64]) -> Option<usize> {
        let table = self.0.read().unwrap();
        let held = table.get(pod)?.as_ref()?;
        Some(keys.iter().take_while(|k| held.contains(k)).count())
    }
}

fn keys(tokens: &[u32]) -> Vec<u64> {
    let mut out = Vec::new();
    token_block_keys(chain_seed(None), tokens, BLOCK, &mut out);
    out
}

const PRECISE: &str = r#"{"default_profile": "precise", "profiles": {"precise": {
    "filters": [],
    "scorers": [{"type": "queue"}, {"type": "precise-prefix"}]}}}"#;

fn scheduler(table: &Arc<Table>) -> Scheduler {
    let config = SchedulerConfig::from_json(PRECISE).unwrap();
    let precise: Arc<dyn PreciseBlockIndex> = table.clone();
    Scheduler::with_indexes(
        &config,
        &Registry::builtin(),
        &Indexes {
            prefix: Arc::new(PrefixIndex::new(PrefixConfig::default())),
            precise: Some(precise),
        },
    )
    .unwrap()
}

#[test]
fn the_pod_whose_events_hold_the_prompt_wins_over_the_pod_it_was_routed_to() {
    let table = Arc::new(Table::default());
    let s = scheduler(&table);
    assert!(s.wants_tokens());
    let m = metrics(0, 0.0);
    let pods: Vec<PodView<'_>> = PODS[..3].iter().map(|a| pod(a, Some(&m))).collect();
    let tokens: Vec<u32> = (0..64).collect();
    let raw = body("m", &prompt(1, 800));
    let request = parse(&raw, ApiKind::Completions).unwrap();
    let context = RequestContext {
        tokens: Some(&tokens),
        ..Default::default()
    };
    for address in &PODS[..3] {
        table.set(address, Some(Vec::new()));
    }

    // Routed once: the route index now believes the chosen pod holds the prompt.
    let first = s.schedule(&request, &pods, &context).unwrap();
    // Its events say it evicted everything; another pod reports holding the whole prompt.
    let other = (first.pod + 1) % 3;
    table.set(PODS[other], Some(keys(&tokens)));
    let second = s.schedule(&request, &pods, &context).unwrap();
    assert_eq!(second.pod, other);
    assert_eq!(
        second.precise,
        Some(PreciseUse::Events {
            hit_blocks: 16,
            blocks: 16
        })
    );
    assert!(second.to_string().contains("precise=16/16"), "{second}");

    // Half of it held by a third pod: the full holder still wins.
    let third = (first.pod + 2) % 3;
    table.set(PODS[third], Some(keys(&tokens[..32])));
    assert_eq!(s.decide(&request, &pods, &context).unwrap().pod, other);
}

#[test]
fn a_pod_without_a_synced_stream_is_scored_by_routes() {
    let table = Arc::new(Table::default());
    let s = scheduler(&table);
    let m = metrics(0, 0.0);
    let pods: Vec<PodView<'_>> = PODS[..2].iter().map(|a| pod(a, Some(&m))).collect();
    let tokens: Vec<u32> = (100..164).collect();
    let raw = body("m", &prompt(2, 800));
    let request = parse(&raw, ApiKind::Completions).unwrap();
    let context = RequestContext {
        tokens: Some(&tokens),
        ..Default::default()
    };
    // No stream anywhere: routes decide, and the decision says so.
    let first = s.schedule(&request, &pods, &context).unwrap();
    assert_eq!(first.precise, Some(PreciseUse::NoStream));
    assert!(first.to_string().contains("precise=no-stream"), "{first}");
    // The other pod's stream is synced but empty: the routed pod keeps the request (its
    // route-index score is 1), and it is still reported as scored approximately.
    let other = 1 - first.pod;
    table.set(PODS[other], Some(Vec::new()));
    let second = s.schedule(&request, &pods, &context).unwrap();
    assert_eq!(second.pod, first.pod);
    assert_eq!(second.precise, Some(PreciseUse::NoStream));
}

#[test]
fn without_token_ids_it_is_the_approximate_scorer() {
    let table = Arc::new(Table::default());
    let s = scheduler(&table);
    let m = metrics(0, 0.0);
    let pods: Vec<PodView<'_>> = PODS[..3].iter().map(|a| pod(a, Some(&m))).collect();
    for address in &PODS[..3] {
        table.set(address, Some(Vec::new()));
    }
    let raw = body("m", &prompt(3, 800));
    let request = parse(&raw, ApiKind::Completions).unwrap();
    let first = s.schedule(&request, &pods, &Default::default()).unwrap();
    let again = s.schedule(&request, &pods, &Default::default()).unwrap();
    assert_eq!(again.pod, first.pod, "routes keep the prefix on its pod");
    assert_eq!(again.precise, Some(PreciseUse::NoTokens));
    assert_eq!(again.prefix_hit_blocks, again.request_blocks);
    // A prompt of fewer tokens than one block has no keys either.
    let short = [1u32, 2];
    let context = RequestContext {
        tokens: Some(&short),
        ..Default::default()
    };
    assert_eq!(
        s.decide(&request, &pods, &context).unwrap().precise,
        Some(PreciseUse::NoTokens)
    );
}

#[test]
fn an_unseen_prefix_gets_the_same_home_as_under_the_approximate_scorer() {
    let table = Arc::new(Table::default());
    let precise = scheduler(&table);
    let approximate = Scheduler::from_json(
        r#"{"profiles": {"default": {"filters": [], "scorers": [{"type": "queue"}, {"type": "prefix"}]}}}"#,
    )
    .unwrap();
    let m = metrics(0, 0.0);
    let pods: Vec<PodView<'_>> = PODS.iter().map(|a| pod(a, Some(&m))).collect();
    for address in &PODS {
        table.set(address, Some(Vec::new()));
    }
    let tokens: Vec<u32> = (0..64).collect();
    let context = RequestContext {
        tokens: Some(&tokens),
        ..Default::default()
    };
    let mut homes = Vec::new();
    for seed in 0..24 {
        let raw = body("m", &prompt(100 + seed, 800));
        let request = parse(&raw, ApiKind::Completions).unwrap();
        let by_events = precise.decide(&request, &pods, &context).unwrap();
        let by_routes = approximate
            .decide(&request, &pods, &Default::default())
            .unwrap();
        assert_eq!(by_events.pod, by_routes.pod, "seed {seed}");
        homes.push(by_events.pod);
    }
    homes.sort_unstable();
    homes.dedup();
    assert!(homes.len() > 1, "homes spread over the pods: {homes:?}");
}

#[test]
fn without_a_kv_event_index_every_pod_falls_back() {
    let s = Scheduler::from_json(PRECISE).unwrap();
    let m = metrics(0, 0.0);
    let pods = [pod(PODS[0], Some(&m))];
    let tokens: Vec<u32> = (0..64).collect();
    let raw = body("m", &prompt(4, 800));
    let request = parse(&raw, ApiKind::Completions).unwrap();
    let context = RequestContext {
        tokens: Some(&tokens),
        ..Default::default()
    };
    assert_eq!(
        s.decide(&request, &pods, &context).unwrap().precise,
        Some(PreciseUse::NoStream)
    );
    assert!(!Scheduler::default().wants_tokens());
}
