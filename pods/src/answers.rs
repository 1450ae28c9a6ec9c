//! A pod's answers as the gateway saw them: a pod that keeps failing requests (5xx, resets,
//! timeouts that made Envoy retry elsewhere) is avoided for a while, like Envoy's outlier
//! detection but known to the scheduler, which can then still use the pod's prefix cache
//! elsewhere in its decision. After the pause the pod gets traffic again; one more failure
//! streak sends it back.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use scheduler::ConfigError;
use serde::Deserialize;

/// When failing answers make a pod avoided: the `pod_errors` object of the pool's config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnswerConfig {
    /// Failed answers in a row after which the pod is avoided; 0 disables this.
    pub avoid_after: u32,
    /// How long it is avoided.
    pub avoid_for_ms: u64,
}

impl Default for AnswerConfig {
    fn default() -> Self {
        AnswerConfig {
            avoid_after: 5,
            avoid_for_ms: 10_000,
        }
    }
}

impl AnswerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.avoid_after > 1000 {
            return Err(ConfigError::new(
                "avoid_after",
                "must be at most 1000 (0 disables it)",
            ));
        }
        if !(1..=3_600_000).contains(&self.avoid_for_ms) {
            return Err(ConfigError::new(
                "avoid_for_ms",
                "must be between 1 and 3600000 (one hour)",
            ));
        }
        Ok(())
    }
}

/// Process start, the zero of the millisecond clock below (atomics hold no `Instant`).
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn millis(at: Instant) -> u64 {
    at.saturating_duration_since(*EPOCH).as_millis() as u64
}

#[derive(Debug, Default)]
pub struct Answers {
    failures_in_a_row: AtomicU32,
    /// Milliseconds since `EPOCH` until which the pod is avoided (0: never was).
    avoided_until: AtomicU64,
    failed: AtomicU64,
}

impl Answers {
    /// Records one answer. Returns true when this failure started a pause.
    pub fn record(&self, ok: bool, config: &AnswerConfig, now: Instant) -> bool {
        if ok {
            self.failures_in_a_row.store(0, Ordering::Relaxed);
            return false;
        }
        self.failed.fetch_add(1, Ordering::Relaxed);
        let streak = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if config.avoid_after == 0 || streak < config.avoid_after {
            return false;
        }
        self.failures_in_a_row.store(0, Ordering::Relaxed);
        let until = now + Duration::from_millis(config.avoid_for_ms);
        self.avoided_until.store(millis(until), Ordering::Relaxed);
        true
    }

    /// Whether the pod is in a pause at `now`.
    pub fn avoided(&self, now: Instant) -> bool {
        millis(now) < self.avoided_until.load(Ordering::Relaxed)
    }

    /// Failed answers so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_streak_pauses_the_pod_and_success_resets_it() {
        let config = AnswerConfig {
            avoid_after: 3,
            avoid_for_ms: 1000,
        };
        let answers = Answers::default();
        let t0 = Instant::now();
        assert!(!answers.record(false, &config, t0));
        assert!(!answers.record(false, &config, t0));
        assert!(
            !answers.record(true, &config, t0),
            "a success ends the streak"
        );
        assert!(!answers.record(false, &config, t0));
        assert!(!answers.record(false, &config, t0));
        assert!(!answers.avoided(t0));
        assert!(
            answers.record(false, &config, t0),
            "the third failure in a row"
        );
        assert!(answers.avoided(t0 + Duration::from_millis(999)));
        assert!(!answers.avoided(t0 + Duration::from_millis(1001)));
        assert_eq!(answers.failed(), 5);
    }

    #[test]
    fn zero_disables_it() {
        let config = AnswerConfig {
            avoid_after: 0,
            ..AnswerConfig::default()
        };
        let answers = Answers::default();
        let now = Instant::now();
        for _ in 0..100 {
            assert!(!answers.record(false, &config, now));
        }
        assert!(!answers.avoided(now));
    }
}
