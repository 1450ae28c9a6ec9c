//! Approximate prefix-cache tracking: which pod probably still holds the KV cache of which
//! prompt prefix, learned from where we routed.

mod blocks;
mod index;
mod lru;
pub mod token_blocks;

pub use blocks::{AnswerBlocks, BlockHasher, ChainEnd, RequestBlocks};
pub use index::{IndexSnapshot, PrefixConfig, PrefixIndex};
pub use lru::BlockLru;
