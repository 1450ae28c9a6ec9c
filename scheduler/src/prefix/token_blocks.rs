//! Keys of a token sequence's blocks, for precise prefix routing from the pods' KV events.
//!
//! The pods' own block hashes are internal to the engine (vLLM's depend on its hash function and
//! `PYTHONHASHSEED`), so the KV-event index keys every block by this chain instead, computed
//! from the block's token ids, which the events carry. The scheduler computes the same keys
//! from a tokenized request and asks the index how many leading keys a pod holds.
//!
//! Definition (stable across processes and replicas; changing it invalidates every index):
//!
//! ```text
//! seed      = TOKEN_CHAIN_SEED                                   for the base model
//!           = xxh3_64_with_seed(adapter name as UTF-8, TOKEN_CHAIN_SEED)   for a LoRA adapter
//! key[-1]   = seed
//! key[i]    = xxh3_64_with_seed(tokens[i*B .. (i+1)*B] as u32 little-endian bytes, key[i-1])
//! ```
//!
//! for block size `B`; only full blocks get keys (engines cache only full blocks). Equal keys
//! mean equal token prefixes under the same adapter.

use xxhash_rust::xxh3::{xxh3_64_with_seed, Xxh3};

/// Seed of the chain for the base model.
pub const TOKEN_CHAIN_SEED: u64 = 0x6b76_2d65_7665_6e74;

/// The chain's seed for the base model (`None`) or a LoRA adapter, by the name the engine
/// reports (vLLM's `lora_name`).
pub fn chain_seed(adapter: Option<&str>) -> u64 {
    match adapter {
        None => TOKEN_CHAIN_SEED,
        Some(name) => xxh3_64_with_seed(name.as_bytes(), TOKEN_CHAIN_SEED),
    }
}

/// The key of one block of `tokens` following the block whose key is `parent` (`chain_seed`
/// for the first block).
pub fn block_key(parent: u64, tokens: &[u32]) -> u64 {
    // Up to 64 tokens are hashed in one call from a stack buffer; larger blocks stream.
    const STACK_TOKENS: usize = 64;
    let mut bytes = [0u8; STACK_TOKENS * 4];
    if tokens.len() <= STACK_TOKENS {
        for (chunk, token) in bytes.chunks_exact_mut(4).zip(tokens) {
            chunk.copy_from_slice(&token.to_le_bytes());
        }
        return xxh3_64_with_seed(&bytes[..tokens.len() * 4], parent);
    }
    let mut hasher = Xxh3::with_seed(parent);
    for part in tokens.chunks(STACK_TOKENS) {
        for (chunk, token) in bytes.chunks_exact_mut(4).zip(part) {
            chunk.copy_from_slice(&token.to_le_bytes());
        }
        hasher.update(&bytes[..part.len() * 4]);
    }
    hasher.digest()
}

/// Appends the keys of `tokens`' full blocks of `block_size` tokens to `keys`, chained from
/// `seed` (see `chain_seed`). A `block_size` of 0 gives no keys.
pub fn token_block_keys(seed: u64, tokens: &[u32], block_size: usize, keys: &mut Vec<u64>) {
    if block_size == 0 {
        return;
    }
    let mut parent = seed;
    for block in tokens.chunks_exact(block_size) {
        parent = block_key(parent, block);
        keys.push(parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(tokens: &[u32], block_size: usize) -> Vec<u64> {
        let mut out = Vec::new();
        token_block_keys(chain_seed(None), tokens, block_size, &mut out);
        out
    }

    #[test]
    fn only_full_blocks_get_keys_and_they_chain() {
        let tokens: Vec<u32> = (0..40).collect();
        assert_eq!(keys(&tokens, 16).len(), 2);
        let mut other = tokens.clone();
        other[0] = 999;
        let (a, b) = (keys(&tokens, 16), keys(&other, 16));
        assert_ne!(a[0], b[0]);
        assert_ne!(
            a[1], b[1],
            "a different first block changes every later key"
        );
        assert_eq!(keys(&tokens[..32], 16), a, "a prefix has the leading keys");
        assert!(keys(&tokens, 0).is_empty());
    }

    #[test]
    fn keys_follow_the_definition() {
        let tokens: Vec<u32> = (1000..1016).collect();
        let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        assert_eq!(
            keys(&tokens, 16),
            [xxh3_64_with_seed(&bytes, TOKEN_CHAIN_SEED)]
        );
        // Blocks past the stack buffer stream to the same definition.
        let long: Vec<u32> = (0..200).collect();
        let bytes: Vec<u8> = long.iter().flat_map(|t| t.to_le_bytes()).collect();
        assert_eq!(block_key(7, &long), xxh3_64_with_seed(&bytes, 7));
    }

    #[test]
    fn adapters_have_their_own_chains() {
        let tokens: Vec<u32> = (0..16).collect();
        let mut lora = Vec::new();
        token_block_keys(chain_seed(Some("sql")), &tokens, 16, &mut lora);
        assert_ne!(lora, keys(&tokens, 16));
        assert_ne!(chain_seed(Some("sql")), chain_seed(Some("chat")));
    }
}
