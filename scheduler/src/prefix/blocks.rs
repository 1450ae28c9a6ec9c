//! Splitting a prompt into fixed-size blocks and chain-hashing them.
//!
//! Block `i`'s hash covers block `i` and, through the chain, every block before it and the model
//! name, so equal hashes mean equal prefixes for the same model. The seed is fixed: every gateway
//! replica computes the same hashes for the same request.

use std::ops::ControlFlow;

use smallvec::SmallVec;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::request::InferenceRequest;

/// An unfinished block: on the stack up to the default block size.
type Partial = SmallVec<[u8; 64]>;

/// Fixed seed of the chain; changing it makes every replica forget its index at once.
const CHAIN_SEED: u64 = 0x7072_6566_6978_3031;

/// The chained block hashes of one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestBlocks {
    /// One hash per full block, at most the configured maximum. The trailing partial block is
    /// not hashed: model servers only cache full blocks.
    pub hashes: Vec<u64>,
    /// The key replicas break ties on: the first block's hash, or for a prompt shorter than one
    /// block, the hash of the model and the whole prompt.
    pub route_key: u64,
    /// Where the chain stands after the prompt, to go on hashing what the pod generates; `None`
    /// when the prompt already filled `max_blocks`.
    pub end: Option<ChainEnd>,
}

/// The end of a prompt's chain: the last hash and the bytes of the unfinished block. The text
/// a pod generates continues its prompt in its cache, so hashing it from here gives the blocks
/// the next turn of a conversation will share (see [`AnswerBlocks`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainEnd {
    previous: u64,
    partial: Partial,
    blocks: usize,
}

/// Blocks of generated text, chained onto its prompt's: fed piece by piece as a response
/// streams, bounded by `max_blocks` for prompt and answer together.
#[derive(Debug)]
pub struct AnswerBlocks {
    chain: Chain,
    /// Text that closes the answer in the next request's serialisation.
    suffix: &'static str,
}

impl AnswerBlocks {
    pub fn feed(&mut self, text: &str) {
        let _ = self.chain.feed(text.as_bytes());
    }

    /// The answer is complete: closes it as the next request will show it.
    pub fn finish(&mut self) {
        let _ = self.chain.feed(self.suffix.as_bytes());
        self.suffix = "";
    }

    /// Whether more text can still make blocks (false once `max_blocks` is reached).
    pub fn wants_more(&self) -> bool {
        !self.chain.full()
    }

    /// The new full blocks' hashes, in order.
    pub fn hashes(&self) -> &[u64] {
        &self.chain.hashes
    }
}

/// Splits prompts into `block_size`-byte blocks (characters, for ASCII text).
#[derive(Clone, Copy, Debug)]
pub struct BlockHasher {
    pub block_size: usize,
    pub max_blocks: usize,
}

impl BlockHasher {
    /// The block hashes of `request`'s prompt under `model` (the model or adapter name the
    /// request names). Reads only as much of the prompt as `max_blocks` blocks need.
    pub fn hash_request(&self, model: &str, request: &InferenceRequest<'_>) -> RequestBlocks {
        // Size the hash list once (a growing one reallocates log(n) times): count the prompt's
        // bytes, as far as the blocks we keep reach.
        let enough = self.max_blocks.saturating_mul(self.block_size);
        let mut bytes = 0;
        request.visit_prompt(|piece| {
            bytes += piece.len();
            if bytes >= enough {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        let mut chain = Chain::new(*self, model);
        chain
            .hashes
            .reserve_exact((bytes / self.block_size).min(self.max_blocks));
        request.visit_prompt(|piece| chain.feed(piece.as_bytes()));
        chain.finish()
    }

    /// The block hashes of a plain text prompt.
    pub fn hash_text(&self, model: &str, text: &str) -> RequestBlocks {
        let mut chain = Chain::new(*self, model);
        let _ = chain.feed(text.as_bytes());
        chain.finish()
    }

    /// Hashing of what a pod generates after the prompt that ended at `end`, framed as
    /// `prefix` … `suffix` (see `InferenceRequest::answer_framing`).
    pub fn continue_after(
        &self,
        end: &ChainEnd,
        (prefix, suffix): (&'static str, &'static str),
    ) -> AnswerBlocks {
        let mut answer = AnswerBlocks {
            chain: Chain {
                hasher: *self,
                previous: end.previous,
                hashes: Vec::new(),
                partial: end.partial.clone(),
                before: end.blocks,
            },
            suffix,
        };
        answer.feed(prefix);
        answer
    }
}

/// Hashing state across prompt pieces; a block may straddle pieces (chat messages).
#[derive(Debug)]
struct Chain {
    hasher: BlockHasher,
    previous: u64,
    hashes: Vec<u64>,
    /// Bytes of a block begun in an earlier piece (or, at the end, the unfinished block).
    partial: Partial,
    /// Blocks hashed before this chain went on (the prompt's, for an answer).
    before: usize,
}

impl Chain {
    fn new(hasher: BlockHasher, model: &str) -> Self {
        Chain {
            hasher,
            previous: xxh3_64_with_seed(model.as_bytes(), CHAIN_SEED),
            hashes: Vec::new(),
            partial: Partial::new(),
            before: 0,
        }
    }

    fn full(&self) -> bool {
        self.before + self.hashes.len() >= self.hasher.max_blocks
    }

    fn push(&mut self, block: &[u8]) {
        self.previous = xxh3_64_with_seed(block, self.previous);
        self.hashes.push(self.previous);
    }

    fn feed(&mut self, mut bytes: &[u8]) -> ControlFlow<()> {
        let size = self.hasher.block_size;
        if self.full() {
            return ControlFlow::Break(());
        }
        if !self.partial.is_empty() {
            let take = (size - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() < size {
                return ControlFlow::Continue(());
            }
            self.previous = xxh3_64_with_seed(&self.partial, self.previous);
            self.hashes.push(self.previous);
            self.partial.clear();
        }
        while bytes.len() >= size {
            if self.full() {
                return ControlFlow::Break(());
            }
            self.push(&bytes[..size]);
            bytes = &bytes[size..];
        }
        if self.full() {
            return ControlFlow::Break(());
        }
        if !bytes.is_empty() {
            self.partial.extend_from_slice(bytes);
        }
        ControlFlow::Continue(())
    }

    fn finish(self) -> RequestBlocks {
        let route_key = match self.hashes.first() {
            Some(&first) => first,
            None => xxh3_64_with_seed(&self.partial, self.previous),
        };
        let end = (!self.full()).then_some(ChainEnd {
            previous: self.previous,
            blocks: self.hashes.len(),
            partial: self.partial,
        });
        RequestBlocks {
            hashes: self.hashes,
            route_key,
            end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{parse, ApiKind};

    const HASHER: BlockHasher = BlockHasher {
        block_size: 4,
        max_blocks: 3,
    };

    #[test]
    fn only_full_blocks_are_hashed_up_to_the_maximum() {
        assert_eq!(HASHER.hash_text("m", "abc").hashes.len(), 0);
        assert_eq!(HASHER.hash_text("m", "abcdefg").hashes.len(), 1);
        assert_eq!(HASHER.hash_text("m", "abcdefgh").hashes.len(), 2);
        assert_eq!(HASHER.hash_text("m", &"x".repeat(1000)).hashes.len(), 3);
    }

    #[test]
    fn hashes_chain_so_a_shared_prefix_shares_leading_hashes_only() {
        let a = HASHER.hash_text("m", "aaaabbbbcccc").hashes;
        let b = HASHER.hash_text("m", "aaaabbbbdddd").hashes;
        let c = HASHER.hash_text("m", "zzzzbbbbcccc").hashes;
        assert_eq!(a[..2], b[..2]);
        assert_ne!(a[2], b[2]);
        // Same second block, different first: the chain makes every hash differ.
        assert!(a.iter().zip(&c).all(|(x, y)| x != y));
    }

    #[test]
    fn the_model_is_part_of_the_chain() {
        let a = HASHER.hash_text("llama", "aaaabbbb");
        let b = HASHER.hash_text("sql-lora", "aaaabbbb");
        assert_ne!(a.hashes[0], b.hashes[0]);
        assert_ne!(a.route_key, b.route_key);
    }

    #[test]
    fn short_prompts_still_get_a_route_key() {
        let a = HASHER.hash_text("m", "hi");
        let b = HASHER.hash_text("m", "ho");
        assert!(a.hashes.is_empty());
        assert_ne!(a.route_key, b.route_key);
        assert_eq!(
            HASHER.hash_text("m", "aaaab").route_key,
            HASHER.hash_text("m", "aaaa").hashes[0]
        );
    }

    #[test]
    fn blocks_straddling_chat_messages_hash_like_the_joined_text() {
        let hasher = BlockHasher {
            block_size: 4,
            max_blocks: 256,
        };
        let body = br#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi there, friend"}]}"#;
        let req = parse(body, ApiKind::Chat).unwrap();
        let streamed = hasher.hash_request("m", &req);
        let joined = hasher.hash_text("m", &req.prompt_text());
        assert_eq!(streamed, joined);
        assert_eq!(streamed.hashes.len(), req.prompt_text().len() / 4);
    }

    #[test]
    fn an_answer_continues_its_prompts_chain() {
        let hasher = BlockHasher {
            block_size: 4,
            max_blocks: 256,
        };
        let prompt = hasher.hash_text("m", "aaaabb");
        let mut answer = hasher.continue_after(prompt.end.as_ref().unwrap(), ("", ""));
        answer.feed("bbcc");
        answer.feed("ccdd");
        answer.finish();
        // The next turn's prompt is the prompt and the answer: its blocks are the union.
        let next = hasher.hash_text("m", "aaaabbbbccccdd");
        assert_eq!(prompt.hashes, next.hashes[..1]);
        assert_eq!(answer.hashes(), &next.hashes[1..]);
    }

    #[test]
    fn an_answer_stops_at_max_blocks_for_prompt_and_answer_together() {
        let prompt = HASHER.hash_text("m", "aaaabbbbc");
        let mut answer = HASHER.continue_after(prompt.end.as_ref().unwrap(), ("", ""));
        answer.feed(&"x".repeat(100));
        assert_eq!(answer.hashes().len(), 1);
        assert!(!answer.wants_more());
        assert!(HASHER.hash_text("m", &"y".repeat(100)).end.is_none());
    }

    #[test]
    fn a_chat_answer_continues_as_the_next_turns_assistant_message() {
        let hasher = BlockHasher {
            block_size: 8,
            max_blocks: 256,
        };
        let turn = |messages: &str| {
            let body = format!(r#"{{"messages":[{messages}]}}"#);
            let req = parse(body.as_bytes(), ApiKind::Chat).unwrap();
            (
                hasher.hash_request("m", &req),
                req.answer_framing().unwrap(),
            )
        };
        let first = r#"{"role":"system","content":"be brief and kind"},{"role":"user","content":"what is a cache?"}"#;
        let (prompt, framing) = turn(first);
        let mut answer = hasher.continue_after(prompt.end.as_ref().unwrap(), framing);
        for piece in ["A cache keeps ", "recent data close ", "at hand."] {
            answer.feed(piece);
        }
        answer.finish();
        let second = format!(
            r#"{first},{{"role":"assistant","content":"A cache keeps recent data close at hand."}},{{"role":"user","content":"and an LRU?"}}"#
        );
        let (next, _) = turn(&second);
        let learned: Vec<u64> = prompt
            .hashes
            .iter()
            .chain(answer.hashes())
            .copied()
            .collect();
        assert!(learned.len() < next.hashes.len());
        assert_eq!(learned, next.hashes[..learned.len()]);
    }

    #[test]
    fn same_input_same_hashes_across_instances() {
        let other = BlockHasher {
            block_size: 4,
            max_blocks: 3,
        };
        assert_eq!(
            HASHER.hash_text("m", "abcdefghijkl"),
            other.hash_text("m", "abcdefghijkl")
        );
    }
}
