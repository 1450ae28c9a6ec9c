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
    /// Where a scheduled session sits in its burst (`None`: arrivals are Poisson at the rate).
    pub burst: Option<Burst>,
}

/// A session of a [`PrefixBursts`] workload: which burst it belongs to and when it is sent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Burst {
    /// Seconds after the start of the run.
    pub at_s: f64,
    /// The burst's number among its group's bursts (0: the group's first appearance).
    pub round: usize,
    /// The session's place in its burst (0: the burst's first request).
    pub position: usize,
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

/// Prefix groups that come and go: each of `groups` system prompts appears in `bursts_per_group`
/// bursts of `burst_len` requests (system prompt + a fresh question each). Within a burst the
/// requests follow each other at `burst_rate` per second (Poisson); a group's k-th burst starts
/// at a uniform time in [k, k + 1) × `mean_return_s`, so its quiet times spread from 0 to twice
/// the mean: some groups return while a pod still holds them, others after every pod evicted them.
/// Lengths are in tokens and turned into words with `tokens_per_word` (1 for the simulator's
/// built-in tokenizer; measured on the pods for any other).
#[derive(Clone, Debug)]
pub struct PrefixBursts {
    pub groups: usize,
    pub bursts_per_group: usize,
    pub burst_len: usize,
    pub system_len: usize,
    pub question_len: usize,
    pub output_len: u32,
    pub burst_rate: f64,
    pub mean_return_s: f64,
    pub tokens_per_word: f64,
}

impl PrefixBursts {
    /// Words for `tokens` tokens (at least one).
    pub fn words_for(&self, tokens: usize) -> usize {
        ((tokens as f64 / self.tokens_per_word).round() as usize).max(1)
    }

    pub fn requests(&self) -> usize {
        self.groups * self.bursts_per_group * self.burst_len
    }
}

#[derive(Clone, Debug)]
pub enum Workload {
    SharedPrefix(SharedPrefix),
    ShareGptLike(ShareGptLike),
    MultiTurn(MultiTurn),
    PrefixBursts(PrefixBursts),
}

impl Workload {
    /// The sessions, deterministic in `seed`.
    pub fn sessions(&self, seed: u64) -> Vec<Session> {
        let mut rng = Rng::with_seed(seed);
        match self {
            Workload::SharedPrefix(w) => shared_prefix(w, &mut rng),
            Workload::ShareGptLike(w) => sharegpt_like(w, &mut rng),
            Workload::MultiTurn(w) => multi_turn(w, &mut rng),
            Workload::PrefixBursts(w) => prefix_bursts(w, &mut rng),
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
                burst: None,
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
                burst: None,
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
            burst: None,
        })
        .collect()
}

fn prefix_bursts(w: &PrefixBursts, rng: &mut Rng) -> Vec<Session> {
    let system_words = w.words_for(w.system_len);
    let question_words = w.words_for(w.question_len);
    // Burst k of every group starts at a uniform time in [k, k + 1) × the mean return: the rate
    // stays even over the run, and a group's quiet times spread from 0 to twice the mean.
    let mut bursts = Vec::with_capacity(w.groups * w.bursts_per_group);
    for group in 0..w.groups {
        let system = words(rng, system_words);
        for round in 0..w.bursts_per_group {
            let at = (round as f64 + rng.f64()) * w.mean_return_s;
            bursts.push((at, group, round, system.clone()));
        }
    }
    bursts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut sessions = Vec::with_capacity(w.requests());
    for (start, group, round, system) in bursts {
        let mut at = start;
        for position in 0..w.burst_len {
            if position > 0 {
                at += -(1.0 - rng.f64()).ln() / w.burst_rate;
            }
            sessions.push(Session {
                api: Api::Completions,
                turns: vec![Turn {
                    text: format!("{system}\n{}", words(rng, question_words)),
                    max_tokens: w.output_len,
                }],
                group: Some(group),
                burst: Some(Burst {
                    at_s: at,
                    round,
                    position,
                }),
            });
        }
    }
    // Bursts overlap: send in time order.
    sessions.sort_by(|a, b| {
        let at = |s: &Session| s.burst.map_or(0.0, |b| b.at_s);
        at(a).total_cmp(&at(b))
    });
    sessions
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
    fn prefix_bursts_come_back_in_bursts_in_time_order() {
        let w = PrefixBursts {
            groups: 20,
            bursts_per_group: 3,
            burst_len: 4,
            system_len: 64,
            question_len: 8,
            output_len: 5,
            burst_rate: 100.0,
            mean_return_s: 2.0,
            tokens_per_word: 2.0,
        };
        let sessions = Workload::PrefixBursts(w.clone()).sessions(4);
        assert_eq!(sessions.len(), w.requests());
        assert_eq!(sessions, Workload::PrefixBursts(w.clone()).sessions(4));
        let times: Vec<f64> = sessions.iter().map(|s| s.burst.unwrap().at_s).collect();
        assert!(
            times.windows(2).all(|p| p[0] <= p[1]),
            "sorted by send time"
        );
        for group in 0..20 {
            let members: Vec<&Session> =
                sessions.iter().filter(|s| s.group == Some(group)).collect();
            assert_eq!(members.len(), 12);
            let system = members[0].turns[0].text.split('\n').next().unwrap();
            // 64 tokens at 2 tokens a word.
            assert_eq!(system.split(' ').count() - 1, 32);
            assert!(members
                .iter()
                .all(|m| m.turns[0].text.split('\n').next() == Some(system)));
            for round in 0..3 {
                let burst: Vec<Burst> = members
                    .iter()
                    .map(|m| m.burst.unwrap())
                    .filter(|b| b.round == round)
                    .collect();
                let mut positions: Vec<usize> = burst.iter().map(|b| b.position).collect();
                positions.sort();
                assert_eq!(positions, [0, 1, 2, 3]);
            }
        }
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
