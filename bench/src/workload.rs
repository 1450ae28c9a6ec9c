//! Workloads: what is sent, decided up front from a seed so every target gets the same requests
//! in the same order.
//!
//! Text is made of random lower-case words of 2–5 letters, each preceded by a space. The
//! simulator's tokenizer (like Llama-3's BPE on English) makes each such word exactly one token,
//! so lengths given in tokens are lengths in words.

use fastrand::Rng;

/// Which OpenAI API a session uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Completions,
    Chat,
}

impl Api {
    pub fn path(self) -> &'static str {
        match self {
            Api::Completions => "/v1/completions",
            Api::Chat => "/v1/chat/completions",
        }
    }
}

/// One user turn: the text the user sends and how many tokens to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    pub text: String,
    pub max_tokens: u32,
}

/// Requests that depend on each other: a completions session has one turn (the prompt); a chat
/// session sends each turn with the whole conversation so far, answers included, so turn *k* waits
/// for the answer to turn *k − 1*.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub api: Api,
    pub turns: Vec<Turn>,
    /// Shared-prefix group, for reports (`None` for workloads without groups).
    pub group: Option<usize>,
}

/// SGLang's `generated-shared-prefix`: `groups` system prompts of `system_len` tokens, each
/// followed by `prompts_per_group` different questions of `question_len` tokens; every request
/// asks for `output_len` tokens. Requests are shuffled, as SGLang's bench does.
#[derive(Clone, Debug)]
pub struct SharedPrefix {
    pub groups: usize,
    pub prompts_per_group: usize,
    pub system_len: usize,
    pub question_len: usize,
    pub output_len: u32,
}

/// ShareGPT-like: independent prompts (no shared prefix) with long-tailed (log-normal) prompt
/// and output lengths, medians and caps in tokens.
#[derive(Clone, Debug)]
pub struct ShareGptLike {
    pub requests: usize,
    pub input_median: f64,
    pub output_median: f64,
    /// Spread of the log-normal (σ of the log); ShareGPT's lengths span about two decades.
    pub sigma: f64,
    pub max_input: usize,
    pub max_output: u32,
}

/// Multi-turn chat: `conversations` sessions of `turns` user messages (log-normal lengths around
/// `message_median` tokens), each answered with `output_len` tokens.
#[derive(Clone, Debug)]
pub struct MultiTurn {
    pub conversations: usize,
    pub turns: usize,
    pub message_median: f64,
    pub output_len: u32,
}

#[derive(Clone, Debug)]
pub enum Workload {
    SharedPrefix(SharedPrefix),
    ShareGptLike(ShareGptLike),
    MultiTurn(MultiTurn),
}

impl Workload {
    /// The sessions, deterministic in `seed`.
    pub fn sessions(&self, seed: u64) -> Vec<Session> {
        let mut rng = Rng::with_seed(seed);
        match self {
            Workload::SharedPrefix(w) => shared_prefix(w, &mut rng),
            Workload::ShareGptLike(w) => sharegpt_like(w, &mut rng),
            Workload::MultiTurn(w) => multi_turn(w, &mut rng),
        }
    }
}

fn shared_prefix(w: &SharedPrefix, rng: &mut Rng) -> Vec<Session> {
    let mut sessions = Vec::with_capacity(w.groups * w.prompts_per_group);
    for group in 0..w.groups {
        let system = words(rng, w.system_len);
        for _ in 0..w.prompts_per_group {
            let text = format!("{system}\n{}", words(rng, w.question_len));
            sessions.push(Session {
                api: Api::Completions,
                turns: vec![Turn {
                    text,
                    max_tokens: w.output_len,
                }],
                group: Some(group),
            });
        }
    }
    rng.shuffle(&mut sessions);
    sessions
}

fn sharegpt_like(w: &ShareGptLike, rng: &mut Rng) -> Vec<Session> {
    (0..w.requests)
        .map(|_| {
            let input = log_normal(rng, w.input_median, w.sigma).clamp(4.0, w.max_input as f64);
            let output = log_normal(rng, w.output_median, w.sigma).clamp(1.0, w.max_output as f64);
            Session {
                api: Api::Completions,
                turns: vec![Turn {
                    text: words(rng, input as usize),
                    max_tokens: output as u32,
                }],
                group: None,
            }
        })
        .collect()
}

fn multi_turn(w: &MultiTurn, rng: &mut Rng) -> Vec<Session> {
    (0..w.conversations)
        .map(|_| Session {
            api: Api::Chat,
            turns: (0..w.turns)
                .map(|_| {
                    let len = log_normal(rng, w.message_median, 0.8).clamp(2.0, 4096.0) as usize;
                    Turn {
                        text: words(rng, len),
                        max_tokens: w.output_len,
                    }
                })
                .collect(),
            group: None,
        })
        .collect()
}

/// `n` random words, each one token for a Llama-3-like tokenizer: " abc", " wxyz", ...
pub fn words(rng: &mut Rng, n: usize) -> String {
    let mut s = String::with_capacity(n * 5);
    for _ in 0..n {
        s.push(' ');
        for _ in 0..rng.usize(2..=5) {
            s.push(rng.lowercase());
        }
    }
    s
}

/// A log-normal sample with the given median and σ of the log (Box–Muller).
pub fn log_normal(rng: &mut Rng, median: f64, sigma: f64) -> f64 {
    let u1 = 1.0 - rng.f64(); // (0, 1]: ln is finite
    let u2 = rng.f64();
    let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    median * (sigma * normal).exp()
}

/// Gaps between Poisson arrivals at `rate` per second (exponential), in seconds; `rate` ≤ 0 or
/// infinite means all at once.
pub fn poisson_gaps(rng: &mut Rng, rate: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            if rate.is_finite() && rate > 0.0 {
                -(1.0 - rng.f64()).ln() / rate
            } else {
                0.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> SharedPrefix {
        SharedPrefix {
            groups: 8,
            prompts_per_group: 4,
            system_len: 100,
            question_len: 10,
            output_len: 7,
        }
    }

    #[test]
    fn words_have_the_requested_count_and_shape() {
        let text = words(&mut Rng::with_seed(1), 250);
        let parts: Vec<&str> = text.split(' ').skip(1).collect();
        assert_eq!(parts.len(), 250);
        assert!(parts
            .iter()
            .all(|w| (2..=5).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase())));
    }

    #[test]
    fn shared_prefix_groups_share_exactly_their_system_prompt() {
        let sessions = Workload::SharedPrefix(shape()).sessions(7);
        assert_eq!(sessions.len(), 32);
        for group in 0..8 {
            let members: Vec<&Session> =
                sessions.iter().filter(|s| s.group == Some(group)).collect();
            assert_eq!(members.len(), 4);
            let system = members[0].turns[0].text.split('\n').next().unwrap();
            assert_eq!(system.split(' ').count() - 1, 100);
            for m in &members {
                let (sys, question) = m.turns[0].text.split_once('\n').unwrap();
                assert_eq!(sys, system);
                assert_eq!(question.split(' ').count() - 1, 10);
                assert_eq!(m.turns[0].max_tokens, 7);
                assert_eq!(m.api, Api::Completions);
            }
            // Questions differ within the group.
            let questions: std::collections::HashSet<&str> = members
                .iter()
                .map(|m| m.turns[0].text.split_once('\n').unwrap().1)
                .collect();
            assert_eq!(questions.len(), 4);
        }
        // Other groups start differently.
        let systems: std::collections::HashSet<&str> = sessions
            .iter()
            .map(|s| s.turns[0].text.split('\n').next().unwrap())
            .collect();
        assert_eq!(systems.len(), 8);
    }

    #[test]
    fn shared_prefix_is_shuffled_and_deterministic() {
        let a = Workload::SharedPrefix(shape()).sessions(7);
        let b = Workload::SharedPrefix(shape()).sessions(7);
        let c = Workload::SharedPrefix(shape()).sessions(8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let order: Vec<usize> = a.iter().map(|s| s.group.unwrap()).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_ne!(order, sorted, "requests are interleaved across groups");
    }

    #[test]
    fn sharegpt_like_lengths_are_long_tailed_within_caps() {
        let w = ShareGptLike {
            requests: 2000,
            input_median: 200.0,
            output_median: 100.0,
            sigma: 1.0,
            max_input: 2000,
            max_output: 500,
        };
        let sessions = Workload::ShareGptLike(w).sessions(3);
        let mut inputs: Vec<usize> = sessions
            .iter()
            .map(|s| s.turns[0].text.split(' ').count() - 1)
            .collect();
        inputs.sort();
        let median = inputs[inputs.len() / 2] as f64;
        assert!((160.0..250.0).contains(&median), "median {median}");
        let mean = inputs.iter().sum::<usize>() as f64 / inputs.len() as f64;
        assert!(
            mean > median * 1.3,
            "long tail: mean {mean} vs median {median}"
        );
        assert!(*inputs.first().unwrap() >= 4 && *inputs.last().unwrap() <= 2000);
        assert!(sessions
            .iter()
            .all(|s| (1..=500).contains(&s.turns[0].max_tokens)));
        // Little sharing: first 20 characters are almost all distinct.
        let starts: std::collections::HashSet<String> = sessions
            .iter()
            .map(|s| s.turns[0].text.chars().take(20).collect())
            .collect();
        assert!(starts.len() > 1990);
    }

    #[test]
    fn multi_turn_sessions_are_chat_with_all_turns() {
        let w = MultiTurn {
            conversations: 5,
            turns: 3,
            message_median: 50.0,
            output_len: 9,
        };
        let sessions = Workload::MultiTurn(w).sessions(1);
        assert_eq!(sessions.len(), 5);
        assert!(sessions.iter().all(|s| s.api == Api::Chat
            && s.turns.len() == 3
            && s.turns.iter().all(|t| t.max_tokens == 9)));
    }

    #[test]
    fn poisson_gaps_average_one_over_rate() {
        let gaps = poisson_gaps(&mut Rng::with_seed(5), 100.0, 20_000);
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        assert!((0.0095..0.0105).contains(&mean), "mean gap {mean}");
        assert!(gaps.iter().all(|g| *g >= 0.0));
        assert!(poisson_gaps(&mut Rng::with_seed(5), f64::INFINITY, 3)
            .iter()
            .all(|g| *g == 0.0));
    }
}
