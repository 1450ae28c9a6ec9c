//! Loading a `tokenizer.json` with `prompt_tokenizer` and keying its token blocks as the index does. The tokenizer is trained here, in-process
//! (byte-level BPE, as Llama-3's), and saved to a temporary file: no network, no shipped model.

use std::path::PathBuf;

use prompt_tokenizer::{PromptTokenizer, TokenizerConfig};
use scheduler::prefix::token_blocks::{chain_seed, token_block_keys};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

const BOS: &str = "<|begin_of_text|>";

/// Deterministic English-like text: sentences drawn from a small vocabulary.
fn corpus(sentences: usize) -> Vec<String> {
    const WORDS: [&str; 24] = [
        "the", "model", "server", "caches", "prefix", "blocks", "of", "every", "prompt", "and",
        "routes", "requests", "to", "pods", "that", "hold", "them", "while", "evicting", "least",
        "recently", "used", "tokens", "quickly",
    ];
    let mut state = 0x2545_f491u32;
    (0..sentences)
        .map(|_| {
            let words: Vec<&str> = (0..12)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    WORDS[state as usize % WORDS.len()]
                })
                .collect();
            format!("{}.", words.join(" "))
        })
        .collect()
}

/// Trains a byte-level BPE tokenizer with a BOS post-processor and saves it as tokenizer.json.
fn trained_tokenizer(name: &str) -> (Tokenizer, PathBuf) {
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(1_000)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(BOS, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer
        .train(&mut trainer, corpus(2_000).into_iter())
        .unwrap();
    let bos = tokenizer.token_to_id(BOS).unwrap();
    tokenizer.with_post_processor(Some(
        TemplateProcessing::builder()
            .try_single(format!("{BOS} $A"))
            .unwrap()
            .special_tokens(vec![(BOS, bos)])
            .build()
            .unwrap(),
    ));
    let dir = std::env::temp_dir().join(format!("kv-events-tokenizer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.json"));
    tokenizer.save(&path, false).unwrap();
    (tokenizer, path)
}

#[test]
fn a_loaded_tokenizer_json_tokenizes_like_the_tokenizer_that_wrote_it() {
    let (trained, path) = trained_tokenizer("same");
    let loaded = PromptTokenizer::load(&TokenizerConfig::new(&path)).unwrap();
    assert_eq!(loaded.vocab_size(), trained.get_vocab_size(true));
    let text = "the model server routes requests to pods that hold the prefix blocks.";
    let ids = loaded.encode_whole(text, false).unwrap();
    assert_eq!(ids, trained.encode(text, false).unwrap().get_ids());
    assert_eq!(
        trained.decode(&ids, false).unwrap(),
        text,
        "ids decode back"
    );
    // Learned merges: corpus words are a token or two each, not one per byte.
    assert!(
        ids.len() * 3 < text.len(),
        "{} tokens for {} bytes",
        ids.len(),
        text.len()
    );
    let with_bos = loaded.encode_whole(text, true).unwrap();
    assert_eq!(with_bos[0], trained.token_to_id(BOS).unwrap());
    assert_eq!(&with_bos[1..], &ids[..]);
    // Unseen text still tokenizes (byte fallback of byte-level BPE).
    assert!(!loaded
        .encode_whole("zqx ünïcödé 🙂", false)
        .unwrap()
        .is_empty());
}

#[test]
fn prompts_sharing_a_prefix_share_leading_block_keys() {
    let (_, path) = trained_tokenizer("keys");
    let tokenizer = PromptTokenizer::load(&TokenizerConfig::new(&path)).unwrap();
    let system = corpus(40).join(" ");
    let a = tokenizer
        .encode_whole(&format!("{system} first question?"), true)
        .unwrap();
    let b = tokenizer
        .encode_whole(&format!("{system} another, longer question?"), true)
        .unwrap();
    let keys = |ids: &[u32]| {
        let mut out = Vec::new();
        token_block_keys(chain_seed(None), ids, 16, &mut out);
        out
    };
    let (ka, kb) = (keys(&a), keys(&b));
    let shared = ka.iter().zip(&kb).take_while(|(x, y)| x == y).count();
    let shared_tokens = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    assert_eq!(shared, shared_tokens / 16);
    assert!(shared > 10, "{shared} shared blocks");
}
