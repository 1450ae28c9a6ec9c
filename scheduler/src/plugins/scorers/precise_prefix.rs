//! `precise-prefix`: prefix-cache affinity from what the pods report they hold (their KV-cache
//! events), instead of from what this gateway routed where.
//!
//! The index behind it is a [`PreciseBlockIndex`] (the `kv-events` crate's `KvEventsIndex`,
//! owned by the pool); only the query interface lives here, so the scheduling core stays free
//! of ZeroMQ and of the subscriber's runtime. Keys are `prefix::token_blocks` keys of the
//! request's token ids, which the caller passes in `RequestContext::tokens`.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::framework::{Candidate, Cycle, Scorer, INLINE_PODS};
use crate::prefix::token_blocks::{chain_seed, token_block_keys};
use crate::prefix::PrefixIndex;

use super::prefix::{Prefix, PrefixParameters, HOME};

/// Which pods hold which token blocks, from their own KV-cache events.
pub trait PreciseBlockIndex: Send + Sync {
    /// Tokens per block the keys must be computed with.
    fn block_size(&self) -> usize;

    /// How many of `keys`' leading blocks `pod` holds, in a row from the first; `None` when
    /// the pod's event stream is not trustworthy now (no stream, disconnected, a gap that
    /// could not be filled): the scorer then falls back to approximate prefix scoring.
    fn precise_matches(&self, pod: &str, keys: &[u64]) -> Option<usize>;
}

/// Scores each candidate by the share of the request's token blocks its events say it holds.
///
/// Falls back, pod by pod, to the approximate `prefix` scorer (same parameters, same index of
/// routes) for a pod whose stream is not synced, and for every pod when the request has no
/// token ids. A prefix no pod holds (by events, or by routes for the pods scored approximately)
/// gets the approximate scorer's rendezvous home, so replicas still agree on where a new
/// prefix goes before any event about it arrived.
pub struct PrecisePrefix {
    approximate: Prefix,
    index: Option<Arc<dyn PreciseBlockIndex>>,
}

/// What the precise scorer saw per candidate (candidate order); published in the cycle state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PreciseMatches {
    /// The request had no token ids, or fewer than one block of them.
    NoTokens,
    /// Token blocks of the request, and per candidate the leading ones it holds by its events
    /// (`None`: its stream is not synced, so it was scored approximately).
    ByPod {
        blocks: u32,
        matches: SmallVec<[Option<u32>; INLINE_PODS]>,
    },
}

/// How the chosen pod's prefix score was obtained, for the decision header and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreciseUse {
    /// By its events: it holds `hit_blocks` of the request's `blocks` token blocks.
    Events { hit_blocks: u32, blocks: u32 },
    /// Approximately: the request had no token ids (no tokenizer, or it could not tokenize).
    NoTokens,
    /// Approximately: the pod's event stream is not synced (or the pool follows no events).
    NoStream,
}

impl PreciseUse {
    /// A label for metrics: `events`, `no-tokens` or `no-stream`.
    pub fn label(&self) -> &'static str {
        match self {
            PreciseUse::Events { .. } => "events",
            PreciseUse::NoTokens => "no-tokens",
            PreciseUse::NoStream => "no-stream",
        }
    }
}

impl fmt::Display for PreciseUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreciseUse::Events { hit_blocks, blocks } => write!(f, "{hit_blocks}/{blocks}"),
            other => f.write_str(other.label()),
        }
    }
}

impl PreciseMatches {
    /// How the candidate at `chosen` was scored.
    pub fn use_for(&self, chosen: usize) -> PreciseUse {
        match self {
            PreciseMatches::NoTokens => PreciseUse::NoTokens,
            PreciseMatches::ByPod { blocks, matches } => match matches.get(chosen).copied() {
                Some(Some(hit_blocks)) => PreciseUse::Events {
                    hit_blocks,
                    blocks: *blocks,
                },
                _ => PreciseUse::NoStream,
            },
        }
    }
}

thread_local! {
    /// The request's token-block keys, reused across requests of the worker thread.
    static KEYS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

impl PrecisePrefix {
    /// Scores by `precise` where it can, by the routes in `routes` where it cannot.
    pub fn from_parameters(
        routes: Arc<PrefixIndex>,
        precise: Option<Arc<dyn PreciseBlockIndex>>,
        p: PrefixParameters,
    ) -> Result<Self, String> {
        Ok(PrecisePrefix {
            approximate: Prefix::from_parameters(routes, p)?,
            index: precise,
        })
    }
}

impl Scorer for PrecisePrefix {
    fn name(&self) -> &'static str {
        "precise-prefix"
    }

    fn wants_tokens(&self) -> bool {
        true
    }

    fn score(
        &self,
        cycle: &mut Cycle<'_>,
        candidates: &[Candidate<'_>],
        scores: &mut [Option<f64>],
    ) {
        let block_size = self.index.as_ref().map_or(0, |i| i.block_size()).max(1);
        let tokens = cycle.request.tokens.filter(|t| t.len() >= block_size);
        let (Some(tokens), Some(index)) = (tokens, &self.index) else {
            let no_stream = cycle.request.tokens.is_some() && self.index.is_none();
            self.approximate.score(cycle, candidates, scores);
            cycle.state.insert(if no_stream {
                PreciseMatches::ByPod {
                    blocks: 0,
                    matches: SmallVec::from_elem(None, candidates.len()),
                }
            } else {
                PreciseMatches::NoTokens
            });
            return;
        };
        let (blocks, precise) = KEYS.with(|keys| {
            let mut keys = keys.borrow_mut();
            keys.clear();
            token_block_keys(
                chain_seed(cycle.request.adapter),
                tokens,
                block_size,
                &mut keys,
            );
            let precise: SmallVec<[Option<u32>; INLINE_PODS]> = candidates
                .iter()
                .map(|c| {
                    index
                        .precise_matches(c.pod.address, &keys)
                        .map(|m| m as u32)
                })
                .collect();
            (keys.len(), precise)
        });
        let routed = self.approximate.matches(cycle, candidates);
        let route_blocks = cycle.request.blocks.len();
        let (leading_tokens, leading_routes) = (
            self.approximate.leading(blocks),
            self.approximate.leading(route_blocks),
        );
        let mut seen = false;
        for (i, score) in scores.iter_mut().enumerate() {
            match precise[i] {
                Some(m) => {
                    *score = Some(f64::from(m) / blocks as f64);
                    seen |= m as usize >= leading_tokens;
                }
                None if route_blocks > 0 => {
                    *score = Some(f64::from(routed[i]) / route_blocks as f64);
                    seen |= routed[i] as usize >= leading_routes;
                }
                None => {}
            }
        }
        if !seen && route_blocks > 0 {
            // The same home the approximate scorer gives, so a prefix keeps its pod whichever
            // scorer a replica runs and whether or not the pod's events have arrived yet.
            let key = cycle.request.blocks[leading_routes - 1];
            if let Some(home) = self.approximate.home(key, candidates) {
                scores[home] = Some(HOME);
            }
        }
        cycle.state.insert(PreciseMatches::ByPod {
            blocks: blocks as u32,
            matches: precise,
        });
    }
}
