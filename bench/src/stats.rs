//! Percentiles and the summary of one run.

use serde::Serialize;

use crate::client::Outcome;

/// The `p`-th percentile (0..=100) of sorted values, interpolating linearly between closest ranks
/// (numpy's default), so P50 of an even count is the mean of the middle two. `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// What a run measured, from the client's side. Latencies in ms, rates per second.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub requests: usize,
    pub completed: usize,
    pub errors: usize,
    /// First send to last answer, seconds.
    pub duration_s: f64,
    pub req_per_s: f64,
    pub input_tok_per_s: f64,
    pub output_tok_per_s: f64,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p95_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    pub itl_p50_ms: Option<f64>,
    pub itl_p95_ms: Option<f64>,
    pub e2e_p50_ms: Option<f64>,
    pub e2e_p95_ms: Option<f64>,
    /// Cached prompt tokens ÷ prompt tokens, from the servers' `usage` (a cross-check of the
    /// pods' own hit ratio).
    pub usage_cached_ratio: Option<f64>,
    /// TTFT at every percentile 0, 1, ..., 100 (for CDF plots).
    pub ttft_cdf_ms: Vec<f64>,
    /// The first few error messages.
    pub error_samples: Vec<String>,
    /// Share of the turns of multi-turn sessions served by their session's pod (the pod that
    /// served most of its turns); `None` without multi-turn sessions.
    pub turns_on_session_pod: Option<f64>,
    /// Multi-turn only: the hit ratio if every turn found the whole previous turn (prompt and
    /// answer, in full 16-token blocks) cached, from the servers' `usage`.
    pub multi_turn_hit_ceiling: Option<f64>,
}

/// (turns on their session's pod ÷ turns, hit-ratio ceiling) over sessions of several turns.
fn session_stats(outcomes: &[&Outcome]) -> (Option<f64>, Option<f64>) {
    let mut by_session: std::collections::BTreeMap<usize, Vec<&Outcome>> = Default::default();
    for o in outcomes {
        by_session.entry(o.session).or_default().push(o);
    }
    let (mut turns, mut home, mut prompt, mut cacheable) = (0usize, 0usize, 0u64, 0u64);
    for session in by_session.values().filter(|s| s.len() > 1) {
        let mut counts = std::collections::HashMap::new();
        for o in session.iter().filter_map(|o| o.pod) {
            *counts.entry(o).or_insert(0usize) += 1;
        }
        turns += session.len();
        home += counts.values().copied().max().unwrap_or(0);
        for pair in session.windows(2) {
            let previous = pair[0].prompt_tokens + pair[0].output_tokens;
            cacheable += (previous / 16 * 16).min(pair[1].prompt_tokens.saturating_sub(1));
        }
        prompt += session.iter().map(|o| o.prompt_tokens).sum::<u64>();
    }
    if turns == 0 {
        return (None, None);
    }
    (
        Some(home as f64 / turns as f64),
        (prompt > 0).then(|| cacheable as f64 / prompt as f64),
    )
}

impl Summary {
    /// Summarises outcomes; `time_scale` converts measured latencies and rates to the modelled
    /// GPU's (the simulator at time scale *s* runs 1/*s* times faster).
    pub fn new(outcomes: &[Outcome], duration_s: f64, time_scale: f64) -> Summary {
        let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_none()).collect();
        let ms = |d: f64| d * 1000.0 / time_scale;
        let ttft = sorted(ok.iter().filter_map(|o| o.ttft_s).map(ms).collect());
        let itl = sorted(
            ok.iter()
                .flat_map(|o| o.itl_s.iter().copied())
                .map(ms)
                .collect(),
        );
        let e2e = sorted(ok.iter().map(|o| ms(o.e2e_s)).collect());
        let prompt: u64 = ok.iter().map(|o| o.prompt_tokens).sum();
        let cached: u64 = ok.iter().map(|o| o.cached_tokens).sum();
        let output: u64 = ok.iter().map(|o| o.output_tokens).sum();
        let modelled_s = duration_s / time_scale;
        let rate = |n: f64| {
            if modelled_s > 0.0 {
                n / modelled_s
            } else {
                0.0
            }
        };
        let errors: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_some()).collect();
        let (turns_on_session_pod, multi_turn_hit_ceiling) = session_stats(&ok);
        Summary {
            requests: outcomes.len(),
            completed: ok.len(),
            errors: errors.len(),
            duration_s,
            req_per_s: rate(ok.len() as f64),
            input_tok_per_s: rate(prompt as f64),
            output_tok_per_s: rate(output as f64),
            ttft_p50_ms: percentile(&ttft, 50.0),
            ttft_p95_ms: percentile(&ttft, 95.0),
            ttft_p99_ms: percentile(&ttft, 99.0),
            itl_p50_ms: percentile(&itl, 50.0),
            itl_p95_ms: percentile(&itl, 95.0),
            e2e_p50_ms: percentile(&e2e, 50.0),
            e2e_p95_ms: percentile(&e2e, 95.0),
            usage_cached_ratio: (prompt > 0).then(|| cached as f64 / prompt as f64),
            ttft_cdf_ms: (0..=100)
                .filter_map(|p| percentile(&ttft, p as f64))
                .collect(),
            error_samples: errors
                .iter()
                .take(5)
                .filter_map(|o| o.error.clone())
                .collect(),
            turns_on_session_pod,
            multi_turn_hit_ceiling,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_between_closest_ranks() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(4.0));
        assert_eq!(percentile(&v, 50.0), Some(2.5));
        assert!((percentile(&v, 95.0).unwrap() - 3.85).abs() < 1e-12);
        let hundred: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 99.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    fn outcome(ttft: f64, itl: &[f64], prompt: u64, cached: u64, error: Option<&str>) -> Outcome {
        Outcome {
            ttft_s: Some(ttft),
            itl_s: itl.to_vec(),
            e2e_s: ttft + itl.iter().sum::<f64>(),
            prompt_tokens: prompt,
            cached_tokens: cached,
            output_tokens: itl.len() as u64 + 1,
            output_text: String::new(),
            error: error.map(String::from),
            pod: None,
            session: 0,
        }
    }

    #[test]
    fn turns_stay_on_their_sessions_pod_and_the_ceiling_counts_the_previous_turn() {
        let turn = |session, pod, prompt, output| Outcome {
            pod: Some(pod),
            session,
            prompt_tokens: prompt,
            output_tokens: output,
            ..outcome(0.1, &[], prompt, 0, None)
        };
        let outcomes = [
            turn(0, 1, 40, 24),
            turn(0, 1, 100, 24),
            turn(0, 2, 160, 24),
            turn(1, 0, 50, 10),
        ];
        let refs: Vec<&Outcome> = outcomes.iter().collect();
        let (on_pod, ceiling) = session_stats(&refs);
        assert_eq!(on_pod, Some(2.0 / 3.0), "single-turn sessions do not count");
        // Cacheable: 64 of turn 2, 112 of turn 3 (124 → 7 blocks), of 300 prompt tokens.
        assert!((ceiling.unwrap() - 176.0 / 300.0).abs() < 1e-9);
    }

    #[test]
    fn summary_counts_only_successes_and_scales_time() {
        let outcomes = vec![
            outcome(0.010, &[0.002, 0.004], 100, 50, None),
            outcome(0.030, &[0.006], 300, 0, None),
            outcome(9.0, &[], 1000, 1000, Some("HTTP 500")),
        ];
        let s = Summary::new(&outcomes, 2.0, 1.0);
        assert_eq!((s.requests, s.completed, s.errors), (3, 2, 1));
        assert_eq!(s.ttft_p50_ms, Some(20.0));
        assert_eq!(s.itl_p50_ms, Some(4.0));
        assert_eq!(s.req_per_s, 1.0);
        assert_eq!(s.input_tok_per_s, 200.0);
        assert_eq!(s.output_tok_per_s, 2.5);
        assert_eq!(s.usage_cached_ratio, Some(0.125));
        assert_eq!(s.ttft_cdf_ms.len(), 101);
        assert_eq!(s.error_samples, vec!["HTTP 500".to_string()]);
        // At time scale 0.5 the simulator ran twice as fast: modelled latencies double, rates halve.
        let half = Summary::new(&outcomes, 2.0, 0.5);
        assert_eq!(half.ttft_p50_ms, Some(40.0));
        assert_eq!(half.req_per_s, 0.5);
    }
}
