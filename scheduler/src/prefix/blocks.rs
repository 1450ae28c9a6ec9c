//! Splitting a prompt into fixed-size blocks and chain-hashing them.
//!
//! Block `i`'s hash covers block `i` and, through the chain, every block before it and the model
//! name, so equal hashes mean equal prefixes for the same model. The seed is fixed: every gateway
//! replica computes the same hashes for the same request.

use std::ops::ControlFlow;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::request::InferenceRequest;

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
        let mut chain = Chain::new(self, model);
        request.visit_prompt(|piece| chain.feed(piece.as_bytes()));
        chain.finish()
    }

    /// The block hashes of a plain text prompt.
    pub fn hash_text(&self, model: &str, text: &str) -> RequestBlocks {
        let mut chain = Chain::new(self, model);
        let _ = chain.feed(text.as_bytes());
        chain.finish()
    }
}

/// Hashing state across prompt pieces; a block may straddle pieces (chat messages).
struct Chain<'h> {
    hasher: &'h BlockHasher,
    previous: u64,
    hashes: Vec<u64>,
    /// Bytes of a block begun in an earlier piece; empty for single-string prompts.
    partial: Vec<u8>,
}

impl<'h> Chain<'h> {
    fn new(hasher: &'h BlockHasher, model: &str) -> Self {
        Chain {
            hasher,
            previous: xxh3_64_with_seed(model.as_bytes(), CHAIN_SEED),
            hashes: Vec::new(),
            partial: Vec::new(),
        }
    }

    fn full(&self) -> bool {
        self.hashes.len() >= self.hasher.max_blocks
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
            if self.partial.capacity() == 0 {
                self.partial.reserve_exact(size);
            }
            self.partial.extend_from_slice(bytes);
        }
        ControlFlow::Continue(())
    }

    fn finish(self) -> RequestBlocks {
        let route_key = match self.hashes.first() {
            Some(&first) => first,
            None => xxh3_64_with_seed(&self.partial, self.previous),
        };
        RequestBlocks {
            hashes: self.hashes,
            route_key,
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
