//! Drives a workload at a target: Poisson session arrivals at a rate (or each session at its own
//! time, for scheduled workloads such as bursts), at most `concurrency`
//! requests in flight (a request that arrives when the cap is reached waits, and its latencies
//! count from when it is sent, as in SGLang's `bench_serving`).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::client::{self, Outcome};
use crate::workload::{poisson_gaps, Api, Session};

pub struct Load {
    /// Base URLs of the target, e.g. `http://127.0.0.1:10000`; with several (gateway
    /// replicas), each session goes to one of them at random (seeded).
    pub urls: Vec<String>,
    pub model: String,
    /// Session arrivals per second (infinite: all at once).
    pub rate: f64,
    pub concurrency: usize,
    pub seed: u64,
    /// Label of the progress bar.
    pub label: String,
}

/// Runs every session; returns each request's outcome and the wall time from the first send to
/// the last answer. Runs on the calling thread (a current-thread runtime).
pub fn run(load: &Load, sessions: &[Session]) -> (Vec<Outcome>, f64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(drive(load, sessions))
}

async fn drive(load: &Load, sessions: &[Session]) -> (Vec<Outcome>, f64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(load.concurrency)
        .tcp_nodelay(true)
        .build()
        .expect("http client");
    let total: usize = sessions.iter().map(|s| s.turns.len()).sum();
    let bar = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} {per_sec} {msg}")
            .expect("progress template")
            .progress_chars("=> "),
    );
    bar.set_prefix(load.label.clone());
    let gaps = poisson_gaps(
        &mut fastrand::Rng::with_seed(load.seed),
        load.rate,
        sessions.len(),
    );
    let permits = Arc::new(Semaphore::new(load.concurrency.max(1)));
    let endpoint = Rc::new((
        load.urls
            .iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect::<Vec<_>>(),
        load.model.clone(),
    ));
    let mut pick = fastrand::Rng::with_seed(load.seed ^ 0x5eed);
    let start = Instant::now();
    let local = tokio::task::LocalSet::new();
    let mut handles = Vec::with_capacity(sessions.len());
    let mut due = 0.0;
    for (index, (session, gap)) in sessions.iter().zip(gaps).enumerate() {
        due += gap;
        // A scheduled session (a burst's) is sent at its own time instead.
        let due = session.burst.map_or(due, |b| b.at_s);
        let replica = pick.usize(..endpoint.0.len().max(1));
        let wait = Duration::from_secs_f64(due).saturating_sub(start.elapsed());
        let (client, permits, endpoint, bar, session) = (
            client.clone(),
            permits.clone(),
            endpoint.clone(),
            bar.clone(),
            session.clone(),
        );
        handles.push(local.spawn_local(async move {
            tokio::time::sleep(wait).await;
            let base = &endpoint.0[replica];
            let mut outcomes =
                run_session(&client, &permits, base, &endpoint.1, &session, &bar).await;
            outcomes.iter_mut().for_each(|o| o.session = index);
            outcomes
        }));
    }
    let outcomes = local
        .run_until(async {
            let mut all = Vec::with_capacity(total);
            for h in handles {
                all.extend(h.await.expect("session task"));
            }
            all
        })
        .await;
    let duration = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    (outcomes, duration)
}

async fn run_session(
    client: &reqwest::Client,
    permits: &Semaphore,
    base: &str,
    model: &str,
    session: &Session,
    bar: &ProgressBar,
) -> Vec<Outcome> {
    let url = format!("{base}{}", session.api.path());
    let mut messages = Vec::new();
    let mut outcomes = Vec::with_capacity(session.turns.len());
    for turn in &session.turns {
        if session.api == Api::Chat {
            messages.push(json!({"role": "user", "content": turn.text}));
        }
        let body = client::body(session.api, model, &turn.text, &messages, turn.max_tokens);
        let outcome = {
            let _permit = permits.acquire().await.expect("semaphore open");
            client::send(client, &url, body).await
        };
        bar.inc(1);
        let failed = outcome.error.is_some();
        if session.api == Api::Chat {
            messages.push(json!({"role": "assistant", "content": outcome.output_text}));
        }
        outcomes.push(outcome);
        if failed {
            // The conversation cannot go on without the answer; the turns left count as errors.
            let left = session.turns.len() - outcomes.len();
            for _ in 0..left {
                outcomes.push(Outcome {
                    error: Some("earlier turn failed".into()),
                    ..Outcome::default()
                });
            }
            bar.inc(left as u64);
            break;
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{MultiTurn, SharedPrefix, Workload};

    fn load(url: String, concurrency: usize) -> Load {
        Load {
            urls: vec![url],
            model: "meta-llama/Llama-3.1-8B-Instruct".into(),
            rate: 200.0,
            concurrency,
            seed: 3,
            label: "test".into(),
        }
    }

    #[test]
    fn shared_prefix_against_a_simulated_pod() {
        let sim = inference_sim::spawn_pods(
            inference_sim::PodConfig {
                time_scale: 0.05,
                ..Default::default()
            },
            1,
        )
        .unwrap();
        let workload = Workload::SharedPrefix(SharedPrefix {
            groups: 4,
            prompts_per_group: 5,
            system_len: 200,
            question_len: 20,
            output_len: 8,
        });
        // One request at a time: with several in flight, two of a group can both be in prefill
        // before either cached the system prompt, and the count below would depend on timing.
        let (outcomes, duration) = run(&load(sim.pods()[0].url(), 1), &workload.sessions(1));
        assert_eq!(outcomes.len(), 20);
        assert!(duration > 0.0);
        for o in &outcomes {
            assert_eq!(o.error, None);
            assert!(o.ttft_s.unwrap() <= o.e2e_s);
            assert_eq!(o.output_tokens, 8);
            assert_eq!(o.itl_s.len(), 7, "one gap per token after the first");
            // BOS + 200 + "\n" + 20 words, one token each.
            assert_eq!(o.prompt_tokens, 222);
        }
        // One pod: every request after its group's first reuses the system prompt.
        let cached: u64 = outcomes.iter().map(|o| o.cached_tokens).sum();
        assert!(cached >= 4 * 4 * 192, "cached {cached}");
    }

    #[test]
    fn multi_turn_resends_the_conversation_and_hits_the_cache() {
        let sim = inference_sim::spawn_pods(
            inference_sim::PodConfig {
                time_scale: 0.05,
                ..Default::default()
            },
            1,
        )
        .unwrap();
        let workload = Workload::MultiTurn(MultiTurn {
            conversations: 3,
            turns: 3,
            message_median: 40.0,
            output_len: 16,
        });
        let sessions = workload.sessions(2);
        let (outcomes, _) = run(&load(sim.pods()[0].url(), 2), &sessions);
        assert_eq!(outcomes.len(), 9);
        assert!(outcomes
            .iter()
            .all(|o| o.error.is_none() && o.output_tokens == 16));
        // Outcomes come per session in turn order: each turn's prompt holds the last one and its
        // answer, and most of it is cached.
        for turns in outcomes.chunks(3) {
            assert!(turns[1].prompt_tokens > turns[0].prompt_tokens + 16);
            assert!(turns[2].prompt_tokens > turns[1].prompt_tokens + 16);
            assert!(
                turns[2].cached_tokens >= turns[0].prompt_tokens,
                "{:?}",
                turns[2]
            );
        }
    }

    #[test]
    fn a_refused_connection_is_an_error_not_a_hang() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let workload = Workload::MultiTurn(MultiTurn {
            conversations: 2,
            turns: 2,
            message_median: 5.0,
            output_len: 2,
        });
        let (outcomes, _) = run(
            &load(format!("http://127.0.0.1:{port}"), 2),
            &workload.sessions(1),
        );
        assert_eq!(outcomes.len(), 4);
        assert!(outcomes.iter().all(|o| o.error.is_some()));
    }
}
