//! `--tokenizer`: prompt token ids from a model's Hugging Face `tokenizer.json`, computed by
//! `prompt-tokenizer` with vLLM's rules (the same crate and rules the routing module uses), so
//! the prefix cache and the KV events carry a real tokenizer's ids.

use std::path::Path;
use std::sync::Arc;

use prompt_tokenizer::{PromptTokenizer, TokenizerConfig};

use crate::tokenizer::OUTPUT_WORDS;

/// A loaded tokenizer and the ids of the simulator's generated words under it.
pub struct HfTokenizer {
    pub tokenizer: PromptTokenizer,
    /// Ids of `OUTPUT_WORDS` (the first id of a word the tokenizer splits; the simulated model
    /// still emits one word per token).
    output_ids: Arc<[u32]>,
}

impl HfTokenizer {
    /// Loads `tokenizer.json` and the `tokenizer_config.json` beside it, if any.
    pub fn load(path: &Path) -> Result<Self, String> {
        let tokenizer = PromptTokenizer::load(&TokenizerConfig::new(path))
            .map_err(|e| format!("--tokenizer: {e}"))?;
        let mut output_ids = Vec::with_capacity(OUTPUT_WORDS.len());
        for word in OUTPUT_WORDS {
            let ids = tokenizer
                .encode_whole(word, false)
                .map_err(|e| format!("--tokenizer: {e}"))?;
            output_ids.push(
                *ids.first()
                    .ok_or("--tokenizer: a word encodes to no token")?,
            );
        }
        Ok(HfTokenizer {
            tokenizer,
            output_ids: output_ids.into(),
        })
    }

    pub fn output_ids(&self) -> Arc<[u32]> {
        self.output_ids.clone()
    }

    /// The tokens' strings as the vocabulary spells them (`/tokenize`'s `token_strs`).
    pub fn token_strs(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| self.tokenizer.inner().id_to_token(id).unwrap_or_default())
            .collect()
    }
}
