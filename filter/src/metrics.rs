//! The module's own metrics, in Envoy's stats (and so in `/stats/prometheus` on the admin port).
//!
//! Envoy wants every metric defined while the config loads; per-request ones are then recorded
//! by the stream's filter, and pod and index state is reported from Envoy's main thread once a
//! second (`report`). Names are documented in the README.

use kv_events::StreamState;
use scheduler::plugins::scorers::PreciseUse;
use scheduler::Decision;

use crate::envoy::{EnvoyConfigMetrics, EnvoyHttpFilter, MetricKind};
use crate::pools;

/// Ids Envoy gave our metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricIds {
    pub decisions: usize,
    pub decision_latency_us: usize,
    pub prefix_hit_blocks: usize,
    pub request_blocks: usize,
    pub rejected: usize,
    pub shed: usize,
    pub scrapes_succeeded: usize,
    pub scrapes_failed: usize,
    pub in_flight: usize,
    pub pod_stale: usize,
    pub stale_pods: usize,
    pub pods: usize,
    pub index_blocks: usize,
    pub index_bytes: usize,
    pub precise_decisions: usize,
    pub precise_hit_blocks: usize,
    pub precise_request_blocks: usize,
    pub kv_events_synced: usize,
    pub kv_events_blocks: usize,
    pub kv_events_bytes: usize,
}

/// Each metric: name, kind, label names.
const DEFINITIONS: &[(&str, MetricKind, &[&str])] = &[
    ("decisions_total", MetricKind::Counter, &["pod"]),
    ("decision_latency_us", MetricKind::Histogram, &[]),
    ("prefix_hit_blocks_total", MetricKind::Counter, &[]),
    ("request_blocks_total", MetricKind::Counter, &[]),
    ("rejected_total", MetricKind::Counter, &["status"]),
    ("shed_total", MetricKind::Counter, &[]),
    ("scrapes_succeeded_total", MetricKind::Counter, &["pod"]),
    ("scrapes_failed_total", MetricKind::Counter, &["pod"]),
    ("in_flight", MetricKind::Gauge, &["pod"]),
    ("pod_stale", MetricKind::Gauge, &["pod"]),
    ("stale_pods", MetricKind::Gauge, &[]),
    ("pods", MetricKind::Gauge, &[]),
    ("prefix_index_blocks", MetricKind::Gauge, &[]),
    ("prefix_index_bytes", MetricKind::Gauge, &[]),
    ("precise_decisions_total", MetricKind::Counter, &["basis"]),
    ("precise_hit_blocks_total", MetricKind::Counter, &[]),
    ("precise_request_blocks_total", MetricKind::Counter, &[]),
    ("kv_events_synced", MetricKind::Gauge, &["pod"]),
    ("kv_events_blocks", MetricKind::Gauge, &[]),
    ("kv_events_bytes", MetricKind::Gauge, &[]),
];

impl MetricIds {
    /// Defines every metric; only valid while Envoy loads the config.
    pub fn define(envoy: &mut impl EnvoyConfigMetrics) -> Result<Self, String> {
        let mut ids = [0usize; DEFINITIONS.len()];
        for (slot, (name, kind, labels)) in ids.iter_mut().zip(DEFINITIONS) {
            *slot = envoy
                .define(name, *kind, labels)
                .map_err(|e| format!("cannot define metric {name}: {e}"))?;
        }
        let [decisions, decision_latency_us, prefix_hit_blocks, request_blocks, rejected, shed, scrapes_succeeded, scrapes_failed, in_flight, pod_stale, stale_pods, pods, index_blocks, index_bytes, precise_decisions, precise_hit_blocks, precise_request_blocks, kv_events_synced, kv_events_blocks, kv_events_bytes] =
            ids;
        Ok(MetricIds {
            decisions,
            decision_latency_us,
            prefix_hit_blocks,
            request_blocks,
            rejected,
            shed,
            scrapes_succeeded,
            scrapes_failed,
            in_flight,
            pod_stale,
            stale_pods,
            pods,
            index_blocks,
            index_bytes,
            precise_decisions,
            precise_hit_blocks,
            precise_request_blocks,
            kv_events_synced,
            kv_events_blocks,
            kv_events_bytes,
        })
    }
}

/// Per-request metrics, recorded through the stream. Without ids (unit tests) nothing happens.
pub fn record_decision(
    ids: Option<&MetricIds>,
    envoy: &mut impl EnvoyHttpFilter,
    pod: &str,
    latency_us: u64,
    decision: &Decision,
) {
    let Some(ids) = ids else { return };
    envoy.increment_counter(ids.decisions, &[pod], 1);
    envoy.record_histogram(ids.decision_latency_us, &[], latency_us);
    envoy.increment_counter(
        ids.prefix_hit_blocks,
        &[],
        u64::from(decision.prefix_hit_blocks),
    );
    envoy.increment_counter(ids.request_blocks, &[], u64::from(decision.request_blocks));
    if let Some(precise) = decision.precise {
        envoy.increment_counter(ids.precise_decisions, &[precise.label()], 1);
        if let PreciseUse::Events { hit_blocks, blocks } = precise {
            envoy.increment_counter(ids.precise_hit_blocks, &[], u64::from(hit_blocks));
            envoy.increment_counter(ids.precise_request_blocks, &[], u64::from(blocks));
        }
    }
}

pub fn record_rejection(ids: Option<&MetricIds>, envoy: &mut impl EnvoyHttpFilter, status: u32) {
    let Some(ids) = ids else { return };
    envoy.increment_counter(ids.rejected, &[status.to_string().as_str()], 1);
    if status == 429 {
        envoy.increment_counter(ids.shed, &[], 1);
    }
}

/// Reports the state of every pool: pods, their staleness and scrapes, and index size. Runs on
/// Envoy's main thread once a second, for each filter config (gauges are simply set again;
/// scrape counters grow by what no report has counted yet, see `Pool::unreported_scrapes`).
pub fn report(ids: &MetricIds, envoy: &mut impl EnvoyConfigMetrics) {
    let now = std::time::Instant::now();
    let (mut pods, mut stale, mut blocks, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let (mut event_blocks, mut event_bytes) = (0u64, 0u64);
    for pool in pools::all() {
        pool.log_condition_changes(now);
        let max_age = pool.stale_after();
        let members = pool.pods().all();
        for (address, pod) in members.iter() {
            let labels = [&**address];
            envoy.set_gauge(ids.in_flight, &labels, u64::from(pod.in_flight()));
            let is_stale = pod.metrics().as_ref().is_none_or(|m| m.age(now) > max_age);
            stale += u64::from(is_stale);
            envoy.set_gauge(ids.pod_stale, &labels, u64::from(is_stale));
            let (ok, failed) = pool.unreported_scrapes(address, pod);
            envoy.increment_counter(ids.scrapes_succeeded, &labels, ok);
            envoy.increment_counter(ids.scrapes_failed, &labels, failed);
        }
        if let Some(kv_events) = pool.kv_events() {
            for address in members.keys() {
                let synced = kv_events.stream_state(address) == Some(StreamState::Synced);
                envoy.set_gauge(ids.kv_events_synced, &[&**address], u64::from(synced));
            }
            event_blocks += kv_events.blocks() as u64;
            event_bytes += kv_events.bytes() as u64;
        }
        pods += members.len() as u64;
        blocks += pool.index().blocks() as u64;
        bytes += pool.index().bytes() as u64;
    }
    envoy.set_gauge(ids.stale_pods, &[], stale);
    envoy.set_gauge(ids.pods, &[], pods);
    envoy.set_gauge(ids.index_blocks, &[], blocks);
    envoy.set_gauge(ids.index_bytes, &[], bytes);
    envoy.set_gauge(ids.kv_events_blocks, &[], event_blocks);
    envoy.set_gauge(ids.kv_events_bytes, &[], event_bytes);
}
