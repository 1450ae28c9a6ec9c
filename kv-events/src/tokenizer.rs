//! Prompts tokenized as the model server tokenizes them: the model's Hugging Face
//! `tokenizer.json`, loaded with the `tokenizers` crate (pure Rust: `fancy-regex` instead of the
//! Oniguruma C library, no downloads). Keys for `precise_matches` come from these token ids.
//!
//! Loading happens once, off the request path; encoding is the per-request cost (see the
//! README for its figure on a 10 KB prompt).

use std::path::Path;

/// A tokenizer that could not be loaded, or a text it could not encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerError(pub String);

impl std::fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenizerError {}

/// A model's tokenizer.
pub struct PromptTokenizer {
    inner: tokenizers::Tokenizer,
}

impl PromptTokenizer {
    /// Loads a `tokenizer.json`; the error names the file and what is wrong with it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|error| TokenizerError(format!("{}: {error}", path.display())))?;
        Self::from_bytes(&bytes)
            .map_err(|TokenizerError(why)| TokenizerError(format!("{}: {why}", path.display())))
    }

    /// Loads a `tokenizer.json` held in memory.
    pub fn from_bytes(json: &[u8]) -> Result<Self, TokenizerError> {
        tokenizers::Tokenizer::from_bytes(json)
            .map(|inner| PromptTokenizer { inner })
            .map_err(|error| TokenizerError(format!("not a tokenizer.json: {error}")))
    }

    /// The token ids of `text`; `add_special_tokens` adds what the tokenizer's post-processor
    /// adds (Llama-3's `<|begin_of_text|>`), as vLLM does for completion prompts.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .encode_fast(text, add_special_tokens)
            .map(|encoding| encoding.get_ids().to_vec())
            .map_err(|error| TokenizerError(format!("cannot tokenize: {error}")))
    }

    /// Ids in the tokenizer's vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
