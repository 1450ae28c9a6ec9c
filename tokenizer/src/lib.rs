//! A request's prompt token ids exactly as vLLM computes them, fast enough for the request path.
//!
//! The model's Hugging Face `tokenizer.json` is loaded with the `tokenizers` crate (pure Rust:
//! `fancy-regex` instead of the Oniguruma C library, no downloads); the chat template, BOS and
//! EOS come from the `tokenizer_config.json` beside it. vLLM's rules
//! ([`PromptTokenizer::request_tokens`]):
//!
//! - completions: the prompt text encoded *with* special tokens (the post-processor's BOS);
//! - token-id prompts: the ids as given;
//! - chat: the messages rendered with the chat template (`add_generation_prompt=true`, text
//!   parts of a content list joined with newlines), encoded *without* special tokens (the
//!   template writes BOS itself).
//!
//! **Chunked, cached encoding.** Whole-prompt BPE costs milliseconds for a 10 KB prompt, while
//! prompts that share a prefix (system prompts, conversations) repeat most of their text. The
//! text is therefore cut at content-defined points that pre-tokenization never crosses (before
//! a single space between two non-whitespace characters, at least `chunk_bytes` apart, see
//! `chunks`), each chunk is encoded on its own and its ids cached under a 64-bit xxh3 of its
//! bytes, and the ids are concatenated between the post-processor's prefix and suffix. At load
//! a probe text is encoded both ways; if they differ for this tokenizer, chunking is turned off
//! ([`PromptTokenizer::chunking`], [`PromptTokenizer::chunking_problem`]) and every encoding is
//! whole. On a warm cache encoding hashes the text once and does one cache lookup per chunk; it
//! allocates nothing except growing the output.
//!
//! One [`PromptTokenizer`] is shared by all threads: it is `Send + Sync`, and the cache locks
//! only for its own map operations (never while tokenizing).

mod chat;
mod chunks;
#[cfg(feature = "fixture")]
mod fixture;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use scheduler::request::{InferenceRequest, Input, Message};
use scheduler::ConfigError;
use serde::Deserialize;
use xxhash_rust::xxh3::xxh3_64;

#[cfg(feature = "fixture")]
pub use fixture::{fixture_tokenizer_json, write_trained_tokenizer, FIXTURE_CHAT_TEMPLATE};

use chat::ChatTemplate;
use chunks::Chunks;

/// Where the tokenizer is and how encodings are cached.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerConfig {
    /// The model's `tokenizer.json`.
    pub path: PathBuf,
    /// Its `tokenizer_config.json` (chat template, BOS, EOS); by default the one beside `path`,
    /// if there is one.
    #[serde(default)]
    pub config_path: Option<PathBuf>,
    /// Least bytes between chunk cuts.
    #[serde(default = "default_chunk_bytes")]
    pub chunk_bytes: usize,
    /// Chunks whose ids are kept (about `chunk_bytes / 4` ids each).
    #[serde(default = "default_cache_chunks")]
    pub cache_chunks: usize,
}

fn default_chunk_bytes() -> usize {
    256
}

fn default_cache_chunks() -> usize {
    65_536
}

impl TokenizerConfig {
    /// A config with the default cache settings.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        TokenizerConfig {
            path: path.into(),
            config_path: None,
            chunk_bytes: default_chunk_bytes(),
            cache_chunks: default_cache_chunks(),
        }
    }

    /// Checks the bounds; the error's path names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.path.as_os_str().is_empty() {
            return Err(ConfigError::new("path", "must name a tokenizer.json"));
        }
        if !(16..=1 << 20).contains(&self.chunk_bytes) {
            return Err(ConfigError::new(
                "chunk_bytes",
                format!("must be between 16 and 1048576, got {}", self.chunk_bytes),
            ));
        }
        if !(1..=1 << 24).contains(&self.cache_chunks) {
            return Err(ConfigError::new(
                "cache_chunks",
                format!("must be between 1 and 16777216, got {}", self.cache_chunks),
            ));
        }
        Ok(())
    }
}

/// A tokenizer that could not be loaded, or a prompt it could not tokenize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerError(pub String);

impl std::fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenizerError {}

/// Counters of the chunk cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Chunks held now.
    pub chunks: usize,
}

/// Cache key: xxh3 of a chunk's bytes and its length.
type ChunkKey = (u64, usize);

/// A model's tokenizer and chat template. See the crate docs.
pub struct PromptTokenizer {
    inner: tokenizers::Tokenizer,
    cache: quick_cache::sync::Cache<ChunkKey, Arc<[u32]>>,
    chunk_bytes: usize,
    /// Ids the post-processor puts before and after a single sequence.
    special_prefix: Vec<u32>,
    special_suffix: Vec<u32>,
    /// Why chunked encoding is off, when it is.
    chunking_problem: Option<String>,
    chat: Result<ChatTemplate, String>,
}

/// Text the load-time probe encodes whole and chunked: words, numbers, punctuation, newlines,
/// runs of spaces, tabs, non-ASCII, contractions and chat markers.
const PROBE_TEXT: &str = "The quick brown fox, 12345 jumps over 3.14159 lazy dogs! \
    It's what they'd do; isn't it?  Two  spaces,   three\tand a tab.\n\
    New line\n\n  indented line\r\nWindows line. Ünïcödé façade naïve café — “quotes” \
    日本語のテキスト 中文 한국어 emoji 🙂🚀 done. <|begin_of_text|><|start_header_id|>user\
    <|end_header_id|>\n\nHello there<|eot_id|> <s> [INST] hi [/INST] </s> \
    a-b_c/d\\e (f) [g] {h} 'i' \"j\" #k @l $m %n ^o &p *q +r =s |t ~u `v` end ";

impl PromptTokenizer {
    /// Loads `tokenizer.json` and, if there is one, `tokenizer_config.json`; probes whether
    /// chunked encoding is exact for this tokenizer. Errors name the file and the problem.
    pub fn load(config: &TokenizerConfig) -> Result<Self, TokenizerError> {
        config
            .validate()
            .map_err(|e| TokenizerError(format!("tokenizer config: {e}")))?;
        let path = &config.path;
        let bytes = std::fs::read(path)
            .map_err(|error| TokenizerError(format!("{}: {error}", path.display())))?;
        let mut inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|error| {
            TokenizerError(format!("{}: not a tokenizer.json: {error}", path.display()))
        })?;
        // transformers' fast tokenizers (vLLM's) neither truncate nor pad unless asked to.
        inner
            .with_truncation(None)
            .map_err(|e| TokenizerError(format!("{}: {e}", path.display())))?;
        inner.with_padding(None);

        let config_path = match &config.config_path {
            Some(p) => Some(p.clone()),
            None => {
                let beside = path
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("tokenizer_config.json");
                beside.exists().then_some(beside)
            }
        };
        let chat = match &config_path {
            None => Err(format!(
                "no tokenizer_config.json beside {} names a chat template",
                path.display()
            )),
            Some(p) => {
                let settings = chat::read_settings(p)?;
                match settings.template {
                    None => Err(format!("{} has no chat_template", p.display())),
                    Some(source) => {
                        Ok(
                            ChatTemplate::new(source, settings.bos_token, settings.eos_token)
                                .map_err(|why| TokenizerError(format!("{}: {why}", p.display())))?,
                        )
                    }
                }
            }
        };

        let mut tokenizer = PromptTokenizer {
            inner,
            cache: quick_cache::sync::Cache::new(config.cache_chunks),
            chunk_bytes: config.chunk_bytes,
            special_prefix: Vec::new(),
            special_suffix: Vec::new(),
            chunking_problem: None,
            chat,
        };
        tokenizer.chunking_problem = tokenizer.probe().err();
        Ok(tokenizer)
    }

    /// Finds the special tokens of a single sequence and checks chunked == whole on the probe
    /// text (with a small chunk size, and the configured one), with and without specials.
    fn probe(&mut self) -> Result<(), String> {
        let plain = self.whole("a", false).map_err(|e| e.0)?;
        let special = self.whole("a", true).map_err(|e| e.0)?;
        let at = (0..=special.len().saturating_sub(plain.len()))
            .find(|&i| special[i..].starts_with(&plain))
            .ok_or("the post-processor changes the sequence's own ids")?;
        self.special_prefix = special[..at].to_vec();
        self.special_suffix = special[at + plain.len()..].to_vec();

        let mut probe = String::from(PROBE_TEXT);
        // Every added token between words: stripping flags must not see across a cut.
        let mut added: Vec<(u32, String)> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, token)| (id, token.content))
            .collect();
        added.sort();
        for (_, content) in added.iter().take(512) {
            probe.push_str(&format!("x {content} y{content}z "));
        }
        let probe = probe.repeat(2);
        let configured = self.chunk_bytes;
        for chunk_bytes in [1, 7, 32, configured] {
            self.chunk_bytes = chunk_bytes;
            for add_special in [false, true] {
                let whole = self.whole(&probe, add_special).map_err(|e| e.0)?;
                let mut chunked = Vec::new();
                self.encode_chunked(&probe, add_special, &mut chunked)
                    .map_err(|e| e.0)?;
                if whole != chunked {
                    self.chunk_bytes = configured;
                    self.cache.clear();
                    let first = whole
                        .iter()
                        .zip(&chunked)
                        .take_while(|(a, b)| a == b)
                        .count();
                    return Err(format!(
                        "chunked encoding differs from whole encoding for this tokenizer (at token \
                         {first}, chunks of {chunk_bytes} bytes); prompts are tokenized whole"
                    ));
                }
            }
        }
        self.chunk_bytes = configured;
        self.cache.clear();
        Ok(())
    }

    /// The prompt's token ids as vLLM computes them, written into `out` (cleared first):
    /// completions: the (first) prompt text encoded with special tokens (BOS, as vLLM does);
    /// token-id prompts: the (first) list as given; chat: messages rendered with the chat
    /// template (add_generation_prompt=true), encoded WITHOUT adding special tokens (vLLM's
    /// chat default, the template carries BOS).
    pub fn request_tokens(
        &self,
        request: &InferenceRequest<'_>,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        match &request.input {
            Input::Prompt(texts) => match texts.first() {
                Some(text) => self.encode(text, true, out),
                None => Err(TokenizerError("the prompt list is empty".into())),
            },
            Input::Tokens(lists) => match lists.first() {
                Some(ids) => {
                    out.clear();
                    out.extend_from_slice(ids);
                    Ok(())
                }
                None => Err(TokenizerError("the prompt list is empty".into())),
            },
            Input::Messages(messages) => {
                let text = self.render_chat(messages)?;
                self.encode(&text, false, out)
            }
        }
    }

    /// The token ids of `text` into `out` (cleared first); `add_special_tokens` adds what the
    /// post-processor adds (Llama-3's `<|begin_of_text|>`). Chunked and cached unless the probe
    /// turned chunking off.
    pub fn encode(
        &self,
        text: &str,
        add_special_tokens: bool,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        if self.chunking_problem.is_some() {
            let ids = self.whole(text, add_special_tokens)?;
            out.clear();
            out.extend_from_slice(&ids);
            return Ok(());
        }
        self.encode_chunked(text, add_special_tokens, out)
    }

    fn encode_chunked(
        &self,
        text: &str,
        add_special_tokens: bool,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        out.clear();
        if add_special_tokens {
            out.extend_from_slice(&self.special_prefix);
        }
        for chunk in Chunks::new(text, self.chunk_bytes) {
            let key = (xxh3_64(chunk.as_bytes()), chunk.len());
            match self.cache.get(&key) {
                Some(ids) => out.extend_from_slice(&ids),
                None => {
                    let ids: Arc<[u32]> = self.whole(chunk, false)?.into();
                    out.extend_from_slice(&ids);
                    self.cache.insert(key, ids);
                }
            }
        }
        if add_special_tokens {
            out.extend_from_slice(&self.special_suffix);
        }
        Ok(())
    }

    /// The token ids of `text` encoded in one piece, without the cache: the reference that
    /// chunked encoding must equal.
    pub fn encode_whole(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        self.whole(text, add_special_tokens)
    }

    fn whole(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .encode_fast(text, add_special_tokens)
            .map(|encoding| encoding.get_ids().to_vec())
            .map_err(|error| TokenizerError(format!("cannot tokenize: {error}")))
    }

    /// The messages rendered with the chat template as vLLM renders them (ending with the
    /// assistant's generation prompt). Fails when the tokenizer has no chat template.
    pub fn render_chat(&self, messages: &[Message<'_>]) -> Result<String, TokenizerError> {
        match &self.chat {
            Ok(template) => template.render(messages),
            Err(why) => Err(TokenizerError(why.clone())),
        }
    }

    /// Whether the chat template loaded; `Err` says why chat requests cannot be tokenized.
    pub fn chat_template(&self) -> Result<(), &str> {
        self.chat.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// False when the load-time probe found chunked encoding inexact for this tokenizer; then
    /// [`PromptTokenizer::encode`] tokenizes whole texts.
    pub fn chunking(&self) -> bool {
        self.chunking_problem.is_none()
    }

    /// Why chunking is off (a sentence for the caller's log), or `None` when it is on.
    pub fn chunking_problem(&self) -> Option<&str> {
        self.chunking_problem.as_deref()
    }

    /// Hits, misses and size of the chunk cache.
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            hits: self.cache.hits(),
            misses: self.cache.misses(),
            chunks: self.cache.len(),
        }
    }

    /// Ids in the tokenizer's vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The text of `ids` (special tokens kept), for tests and diagnostics.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, false)
            .map_err(|error| TokenizerError(format!("cannot decode: {error}")))
    }

    /// The id of a token, if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_bounds() {
        let config: TokenizerConfig =
            serde_json::from_str(r#"{"path": "/m/tokenizer.json"}"#).unwrap();
        assert_eq!(config, TokenizerConfig::new("/m/tokenizer.json"));
        assert_eq!((config.chunk_bytes, config.cache_chunks), (256, 65_536));
        config.validate().unwrap();
        let bad = TokenizerConfig {
            chunk_bytes: 0,
            ..config.clone()
        };
        assert_eq!(bad.validate().unwrap_err().path, "chunk_bytes");
        let bad = TokenizerConfig {
            cache_chunks: 0,
            ..config
        };
        assert_eq!(bad.validate().unwrap_err().path, "cache_chunks");
        assert!(serde_json::from_str::<TokenizerConfig>(r#"{"path": "x", "oops": 1}"#).is_err());
    }

    #[test]
    fn prompt_tokenizer_is_shareable() {
        fn shared<T: Send + Sync>() {}
        shared::<PromptTokenizer>();
    }
}
