//! The scheduler: profiles of plugins built from config, one decision per request, and the
//! prefix index it keeps learning from its routes.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use smallvec::{smallvec, SmallVec};

use crate::config::{
    ConfigError, HeaderNames, PluginConfig, ProfileConfig, SchedulerConfig, ScorerConfig,
};
use crate::context::{Criticality, RequestContext};
use crate::framework::{
    Candidate, Candidates, Cycle, CycleState, Filter, Picker, RequestFacts, Scorer, INLINE_PODS,
};
use crate::plugins::scorers::{PreciseMatches, PreciseUse, PrefixMatches};
use crate::pod::PodView;
use crate::prefix::{AnswerBlocks, BlockHasher, ChainEnd, PrefixIndex};
use crate::registry::{Indexes, Registry};
use crate::rendezvous;
use crate::request::InferenceRequest;

/// Picks a pod per request. `Send + Sync`: one instance serves every worker thread.
pub struct Scheduler {
    profiles: Vec<Profile>,
    default_profile: usize,
    index: Arc<PrefixIndex>,
    hasher: BlockHasher,
    adapters: HashSet<Box<str>, foldhash::fast::RandomState>,
    headers: HeaderNames,
    wants_tokens: bool,
}

struct Profile {
    name: Arc<str>,
    filters: Vec<Box<dyn Filter>>,
    scorers: Vec<(Box<dyn Scorer>, f64)>,
    picker: Box<dyn Picker>,
}

/// Why a pod was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// The profile's picker chose it on the weighted scores.
    Scored,
    /// The filters left no candidate (every pod unhealthy, say): the pod with the fewest
    /// requests in flight was taken rather than failing the request.
    LeastInFlightFallback,
}

/// One scorer's part in a decision, for the chosen pod.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreDetail {
    pub scorer: &'static str,
    pub weight: f64,
    /// `None` when the scorer abstained for this pod (unknown metrics, no adapter, ...).
    pub score: Option<f64>,
}

/// The outcome of scheduling one request, and what it was based on.
#[derive(Clone, Debug)]
pub struct Decision {
    /// Index of the chosen pod in the slice given to [`Scheduler::decide`].
    pub pod: usize,
    pub profile: Arc<str>,
    pub basis: Basis,
    /// The chosen pod's weighted score (weighted mean of the scorers that scored it).
    pub total: f64,
    /// The chosen pod's score from each scorer of the profile.
    pub scores: SmallVec<[ScoreDetail; 4]>,
    /// Leading blocks of the prompt the chosen pod probably has cached.
    pub prefix_hit_blocks: u32,
    /// Blocks the prompt was split into (capped by `prefix_index.max_blocks`).
    pub request_blocks: u32,
    /// Whether the chosen pod was scored by its KV events (`None`: no `precise-prefix` scorer
    /// ran).
    pub precise: Option<PreciseUse>,
    /// Pods left after the filters.
    pub candidates: usize,
    pub criticality: Criticality,
    blocks: Vec<u64>,
    /// Where the prompt's chain ended and how an answer continues it, to learn the answer.
    answer_start: Option<(ChainEnd, (&'static str, &'static str))>,
}

impl Decision {
    /// The request's block hashes, as [`Scheduler::record_route`] records them.
    pub fn blocks(&self) -> &[u64] {
        &self.blocks
    }
}

impl fmt::Display for Decision {
    /// A compact line for a debugging header: profile, total, each scorer, prefix hits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "profile={} total={:.3}", self.profile, self.total)?;
        for s in &self.scores {
            match s.score {
                Some(v) => write!(f, " {}={v:.3}", s.scorer)?,
                None => write!(f, " {}=-", s.scorer)?,
            }
        }
        write!(
            f,
            " prefix={}/{}",
            self.prefix_hit_blocks, self.request_blocks
        )?;
        if let Some(precise) = &self.precise {
            write!(f, " precise={precise}")?;
        }
        if self.basis == Basis::LeastInFlightFallback {
            f.write_str(" fallback=least-in-flight")?;
        }
        Ok(())
    }
}

/// Why no pod could be chosen; meant for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduleError {
    /// The pool has no pods at all (503).
    NoPods,
    /// The request asked for a profile that is not configured (400).
    UnknownProfile {
        requested: String,
        known: Vec<String>,
    },
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleError::NoPods => f.write_str("no inference pods are available"),
            ScheduleError::UnknownProfile { requested, known } => {
                write!(
                    f,
                    "unknown scheduling profile {requested:?} (known: {})",
                    known.join(", ")
                )
            }
        }
    }
}

impl std::error::Error for ScheduleError {}

impl Default for Scheduler {
    /// The default configuration: queue 1, KV-cache 1, prefix 1 (and LoRA affinity 1, which
    /// only speaks for adapter requests), behind the health, stale-metrics and hot-spot filters.
    fn default() -> Self {
        Self::from_config(&SchedulerConfig::default(), &Registry::builtin())
            .expect("the default configuration is valid")
    }
}

impl Scheduler {
    /// Builds a scheduler from its JSON config with the built-in plugins.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        Self::from_json_with(json, &Registry::builtin())
    }

    /// Builds a scheduler from its JSON config with the plugins of `registry`.
    pub fn from_json_with(json: &str, registry: &Registry) -> Result<Self, ConfigError> {
        Self::from_config(&SchedulerConfig::from_json(json)?, registry)
    }

    /// Builds a scheduler from an already parsed JSON value with the built-in plugins; `null`
    /// gives the default scheduler.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, ConfigError> {
        Self::from_config(&SchedulerConfig::from_value(value)?, &Registry::builtin())
    }

    /// Builds a scheduler with a prefix index of its own, made from `config.prefix_index`.
    pub fn from_config(config: &SchedulerConfig, registry: &Registry) -> Result<Self, ConfigError> {
        let index = Arc::new(PrefixIndex::new(config.prefix_index.clone()));
        Self::with_index(config, registry, index)
    }

    /// Builds a scheduler that learns into (and hashes prompts the way of) an index owned
    /// elsewhere: the one of the pool it schedules, which outlives any one configuration.
    /// `config.prefix_index` is not used.
    pub fn with_index(
        config: &SchedulerConfig,
        registry: &Registry,
        index: Arc<PrefixIndex>,
    ) -> Result<Self, ConfigError> {
        Self::with_indexes(
            config,
            registry,
            &Indexes {
                prefix: index,
                precise: None,
            },
        )
    }

    /// The same, with every index of the pool: its routes and, if it follows them, its pods'
    /// KV-cache events (for the `precise-prefix` scorer).
    pub fn with_indexes(
        config: &SchedulerConfig,
        registry: &Registry,
        indexes: &Indexes,
    ) -> Result<Self, ConfigError> {
        let default_profiles;
        let profiles = match &config.profiles {
            Some(profiles) => profiles,
            None => {
                default_profiles = [(config.default_profile.clone(), default_profile())].into();
                &default_profiles
            }
        };
        let built = profiles
            .iter()
            .map(|(name, profile)| build_profile(name, profile, registry, indexes))
            .collect::<Result<Vec<_>, _>>()?;
        let default_profile = built
            .iter()
            .position(|p| *p.name == *config.default_profile)
            .ok_or_else(|| {
                ConfigError::new(
                    "default_profile",
                    format!(
                        "profile {:?} is not defined in `profiles` (defined: {})",
                        config.default_profile,
                        profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
            })?;
        let wants_tokens = built
            .iter()
            .any(|p| p.scorers.iter().any(|(s, _)| s.wants_tokens()));
        Ok(Scheduler {
            profiles: built,
            default_profile,
            hasher: indexes.prefix.config().hasher(),
            index: Arc::clone(&indexes.prefix),
            wants_tokens,
            adapters: config
                .lora_adapters
                .iter()
                .map(|a| a.as_str().into())
                .collect(),
            headers: config.headers.clone(),
        })
    }

    /// The request headers the caller should read for [`RequestContext`].
    pub fn headers(&self) -> &HeaderNames {
        &self.headers
    }

    /// Whether some profile scores by token ids: then the caller should tokenize the prompt
    /// and pass the ids in [`RequestContext::tokens`].
    pub fn wants_tokens(&self) -> bool {
        self.wants_tokens
    }

    pub fn profile_names(&self) -> impl Iterator<Item = &str> {
        self.profiles.iter().map(|p| &*p.name)
    }

    pub fn prefix_index(&self) -> &PrefixIndex {
        &self.index
    }

    /// Chooses a pod for `request` among `pods` and records the route in the prefix index.
    pub fn schedule(
        &self,
        request: &InferenceRequest<'_>,
        pods: &[PodView<'_>],
        context: &RequestContext<'_>,
    ) -> Result<Decision, ScheduleError> {
        let decision = self.decide(request, pods, context)?;
        self.record_route(&decision, &pods[decision.pod]);
        Ok(decision)
    }

    /// Records that the request of `decision` went to `pod` (the decided one, or another if the
    /// caller had to retry elsewhere), so later requests sharing its prefix follow it.
    pub fn record_route(&self, decision: &Decision, pod: &PodView<'_>) {
        self.index.record(pod, &decision.blocks);
    }

    /// Hashing of the answer a pod generates for `decision`'s request, so the blocks the next
    /// turn of a conversation shares with this one are known before it arrives. `None` when
    /// the prompt filled `max_blocks` or cannot be continued as text (token ids).
    pub fn learn_answer(&self, decision: &Decision) -> Option<AnswerBlocks> {
        let (end, framing) = decision.answer_start.as_ref()?;
        Some(self.hasher.continue_after(end, *framing))
    }

    /// Records the answer's blocks for the pod that generated it.
    pub fn record_answer(&self, pod: &PodView<'_>, answer: &AnswerBlocks) {
        self.index.record(pod, answer.hashes());
    }

    /// Forgets a pod that left the pool: its prefix-index entries are dropped.
    pub fn forget_pod(&self, address: &str) {
        self.index.forget(address);
    }

    /// Keeps prefix-index entries only for the pods `is_member` accepts; call it when pool
    /// membership changes (it also catches a route recorded while a pod was being forgotten).
    pub fn retain_pods(&self, is_member: impl FnMut(&str) -> bool) {
        self.index.retain(is_member);
    }

    /// Chooses a pod for `request` among `pods` without recording anything.
    pub fn decide(
        &self,
        request: &InferenceRequest<'_>,
        pods: &[PodView<'_>],
        context: &RequestContext<'_>,
    ) -> Result<Decision, ScheduleError> {
        if pods.is_empty() {
            return Err(ScheduleError::NoPods);
        }
        let profile = self.profile(context.profile)?;
        let model: &str = &request.model;
        let blocks = self.hasher.hash_request(model, request);
        let mut cycle = Cycle {
            request: RequestFacts {
                model,
                adapter: self.adapter(model, pods),
                blocks: &blocks.hashes,
                route_key: blocks.route_key,
                criticality: context.criticality,
                session: context.session,
                tokens: context.tokens,
            },
            now: Instant::now(),
            state: CycleState::default(),
        };

        let mut candidates: Candidates<'_> = pods
            .iter()
            .enumerate()
            .map(|(index, pod)| Candidate { index, pod: *pod })
            .collect();
        for filter in &profile.filters {
            filter.filter(&mut cycle, &mut candidates);
            if candidates.is_empty() {
                break;
            }
        }

        let (pod, basis, total, scores, prefix_hit, precise) = if candidates.is_empty() {
            let pod = least_in_flight(pods, blocks.route_key);
            (
                pod,
                Basis::LeastInFlightFallback,
                0.0,
                SmallVec::new(),
                None,
                None,
            )
        } else {
            let (chosen, total, scores) = score_and_pick(profile, &mut cycle, &candidates);
            let prefix_hit = cycle.state.get::<PrefixMatches>().map(|m| m.0[chosen]);
            let precise = cycle
                .state
                .get::<PreciseMatches>()
                .map(|m| m.use_for(chosen));
            (
                candidates[chosen].index,
                Basis::Scored,
                total,
                scores,
                prefix_hit,
                precise,
            )
        };
        let prefix_hit_blocks = prefix_hit.unwrap_or_else(|| {
            if blocks.hashes.is_empty() {
                0
            } else {
                self.index
                    .snapshot()
                    .matched_blocks(pods[pod].address, &blocks.hashes) as u32
            }
        });
        Ok(Decision {
            pod,
            profile: Arc::clone(&profile.name),
            basis,
            total,
            scores,
            prefix_hit_blocks,
            request_blocks: blocks.hashes.len() as u32,
            precise,
            candidates: candidates.len(),
            criticality: context.criticality,
            answer_start: blocks.end.zip(request.answer_framing()),
            blocks: blocks.hashes,
        })
    }

    fn profile(&self, requested: Option<&str>) -> Result<&Profile, ScheduleError> {
        match requested {
            None => Ok(&self.profiles[self.default_profile]),
            Some(name) => self
                .profiles
                .iter()
                .find(|p| &*p.name == name)
                .ok_or_else(|| ScheduleError::UnknownProfile {
                    requested: name.to_owned(),
                    known: self.profile_names().map(str::to_owned).collect(),
                }),
        }
    }

    /// The model, when it names a LoRA adapter: configured as one, or served as one by a pod.
    fn adapter<'m>(&self, model: &'m str, pods: &[PodView<'_>]) -> Option<&'m str> {
        let known = !model.is_empty()
            && (self.adapters.contains(model)
                || pods
                    .iter()
                    .filter_map(|p| p.metrics)
                    .any(|m| m.has_adapter(model)));
        known.then_some(model)
    }
}

/// Runs the scorers, combines their scores and lets the picker choose. A score that is not a
/// finite number (a faulty custom scorer) counts as an abstention. Returns the chosen
/// position in `candidates`, its total and its per-scorer scores.
fn score_and_pick(
    profile: &Profile,
    cycle: &mut Cycle<'_>,
    candidates: &[Candidate<'_>],
) -> (usize, f64, SmallVec<[ScoreDetail; 4]>) {
    let n = candidates.len();
    // Room for four scorers over a pool of `INLINE_PODS` on the stack.
    let mut matrix: SmallVec<[Option<f64>; 4 * INLINE_PODS]> =
        smallvec![None; profile.scorers.len() * n];
    for ((scorer, _), scores) in profile.scorers.iter().zip(matrix.chunks_mut(n)) {
        scorer.score(cycle, candidates, scores);
    }
    let totals: SmallVec<[f64; INLINE_PODS]> = (0..n)
        .map(|c| {
            let (mut sum, mut weights) = (0.0, 0.0);
            for ((_, weight), scores) in profile.scorers.iter().zip(matrix.chunks(n)) {
                if let Some(score) = scores[c].filter(|s| s.is_finite()) {
                    sum += weight * score.clamp(0.0, 1.0);
                    weights += weight;
                }
            }
            if weights > 0.0 {
                sum / weights
            } else {
                0.0
            }
        })
        .collect();
    let chosen = profile.picker.pick(cycle, candidates, &totals).min(n - 1);
    let details = profile
        .scorers
        .iter()
        .zip(matrix.chunks(n))
        .map(|((scorer, weight), scores)| ScoreDetail {
            scorer: scorer.name(),
            weight: *weight,
            score: scores[chosen],
        })
        .collect();
    (chosen, totals[chosen], details)
}

/// The pod with the fewest requests in flight, ties broken the replica-stable way.
fn least_in_flight(pods: &[PodView<'_>], route_key: u64) -> usize {
    let min = pods.iter().map(|p| p.in_flight).min().unwrap_or(0);
    let tied = (0..pods.len()).filter(|&i| pods[i].in_flight == min);
    rendezvous::pick(
        &route_key.to_le_bytes(),
        tied.clone().map(|i| pods[i].address),
    )
    .and_then(|n| tied.clone().nth(n))
    .unwrap_or(0)
}

fn default_profile() -> ProfileConfig {
    let scorer = |kind: &str| ScorerConfig {
        kind: kind.into(),
        weight: 1.0,
        parameters: serde_json::Value::Null,
    };
    ProfileConfig {
        filters: None,
        scorers: vec![
            scorer("queue"),
            scorer("kv-cache"),
            scorer("prefix"),
            scorer("lora-affinity"),
        ],
        picker: None,
    }
}

fn default_filters() -> Vec<PluginConfig> {
    ["health", "stale-metrics", "saturation", "hot-spot-guard"]
        .into_iter()
        .map(|kind| PluginConfig {
            kind: kind.into(),
            parameters: serde_json::Value::Null,
        })
        .collect()
}

fn build_profile(
    name: &str,
    config: &ProfileConfig,
    registry: &Registry,
    index: &Indexes,
) -> Result<Profile, ConfigError> {
    let base = format!("profiles.{name}");
    let filters = match &config.filters {
        Some(filters) => filters.clone(),
        None => default_filters(),
    };
    let filters = filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            registry.build_filter(
                &f.kind,
                &f.parameters,
                &format!("{base}.filters[{i}]"),
                index,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    if config.scorers.is_empty() {
        return Err(ConfigError::new(
            format!("{base}.scorers"),
            "a profile needs at least one scorer",
        ));
    }
    let scorers = config
        .scorers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let path = format!("{base}.scorers[{i}]");
            if !(s.weight.is_finite() && s.weight >= 0.0) {
                return Err(ConfigError::new(
                    format!("{path}.weight"),
                    "must be a number ≥ 0",
                ));
            }
            Ok((
                registry.build_scorer(&s.kind, &s.parameters, &path, index)?,
                s.weight,
            ))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let picker = match &config.picker {
        Some(p) => {
            registry.build_picker(&p.kind, &p.parameters, &format!("{base}.picker"), index)?
        }
        None => registry.build_picker(
            "max-score",
            &serde_json::Value::Null,
            &format!("{base}.picker"),
            index,
        )?,
    };
    Ok(Profile {
        name: name.into(),
        filters,
        scorers,
        picker,
    })
}
