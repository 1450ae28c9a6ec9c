//! A small model tokenizer for tests and benchmarks (feature `fixture`): byte-level BPE with a
//! BOS post-processor and Llama-3's special tokens, trained in-process on a deterministic
//! English-like corpus, and a `tokenizer_config.json` with a Llama-3-format chat template. No
//! network and no shipped model; the files are the same on every run.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

const BOS: &str = "<|begin_of_text|>";
const EOS: &str = "<|eot_id|>";
const SPECIAL_TOKENS: [&str; 5] = [
    BOS,
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    EOS,
];
const VOCAB_SIZE: usize = 4_000;

/// The fixture's chat template: Llama-3's prompt format (header markers, `<|eot_id|>` after
/// each message, content stripped), written for these tests.
pub const FIXTURE_CHAT_TEMPLATE: &str = r#"{{- bos_token }}
{%- for message in messages %}
    {%- if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}
        {{- raise_exception('Unknown role: ' ~ message['role']) }}
    {%- endif %}
    {{- '<|start_header_id|>' ~ message['role'] ~ '<|end_header_id|>\n\n' }}
    {{- message['content'] | trim }}
    {{- '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

/// Trains the fixture tokenizer (once per process) and writes `tokenizer.json` and
/// `tokenizer_config.json` into `dir` (created if missing); returns the tokenizer.json path.
/// Panics if the files cannot be written.
pub fn write_trained_tokenizer(dir: &Path) -> PathBuf {
    static FILES: OnceLock<(String, String)> = OnceLock::new();
    let (tokenizer, config) = FILES.get_or_init(|| (train(), tokenizer_config()));
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, tokenizer).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let config_path = dir.join("tokenizer_config.json");
    std::fs::write(&config_path, config)
        .unwrap_or_else(|e| panic!("{}: {e}", config_path.display()));
    path
}

fn tokenizer_config() -> String {
    let config = serde_json::json!({
        "bos_token": BOS,
        "eos_token": EOS,
        "chat_template": FIXTURE_CHAT_TEMPLATE,
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    serde_json::to_string_pretty(&config).expect("JSON")
}

fn train() -> String {
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(VOCAB_SIZE)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(
            SPECIAL_TOKENS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer
        .train(&mut trainer, corpus().into_iter())
        .expect("train the fixture tokenizer");
    let bos = tokenizer
        .token_to_id(BOS)
        .expect("BOS is in the vocabulary");
    tokenizer.with_post_processor(Some(
        TemplateProcessing::builder()
            .try_single(format!("{BOS} $A"))
            .expect("single template")
            .try_pair(format!("{BOS} $A {BOS} $B"))
            .expect("pair template")
            .special_tokens(vec![(BOS, bos)])
            .build()
            .expect("post-processor"),
    ));
    tokenizer.to_string(true).expect("serialise the tokenizer")
}

/// A deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Common English words first (the simulator's output words among them), then invented ones.
fn dictionary(rng: &mut Rng) -> Vec<String> {
    const COMMON: &str = "the model cache token of and to in is that it for on with as was at by \
        this from batch an be are or have not but all can more data a i you he she we they what \
        which when where who how prefix server request prompt block pod route queue memory time \
        answers questions about cluster routing short precise sentences cites its sources asked \
        explain latency tokens requests policy";
    const ONSETS: [&str; 22] = [
        "", "b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st", "tr",
        "ch", "sh", "th", "pl",
    ];
    const VOWELS: [&str; 8] = ["a", "e", "i", "o", "u", "ea", "ou", "ai"];
    const CODAS: [&str; 10] = ["", "n", "r", "s", "t", "l", "nd", "ng", "ck", "st"];
    let mut words: Vec<String> = COMMON.split_whitespace().map(str::to_owned).collect();
    while words.len() < 3_000 {
        let syllables = 1 + rng.below(3);
        let word: String = (0..syllables)
            .map(|_| {
                format!(
                    "{}{}{}",
                    ONSETS[rng.below(ONSETS.len())],
                    VOWELS[rng.below(VOWELS.len())],
                    CODAS[rng.below(CODAS.len())]
                )
            })
            .collect();
        words.push(word);
    }
    words
}

/// Paragraphs of sentences; word frequencies fall off with rank as in natural text.
fn corpus() -> Vec<String> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let words = dictionary(&mut rng);
    let mut paragraphs = Vec::new();
    for _ in 0..600 {
        let mut text = String::new();
        for _ in 0..(3 + rng.below(5)) {
            let length = 4 + rng.below(14);
            for i in 0..length {
                // The product of two uniform draws favours small ranks.
                let rank = rng.below(words.len()) * rng.below(words.len()) / words.len();
                let word = &words[rank];
                if i == 0 {
                    let mut chars = word.chars();
                    if let Some(first) = chars.next() {
                        text.extend(first.to_uppercase());
                        text.push_str(chars.as_str());
                    }
                } else {
                    text.push(' ');
                    match rng.below(40) {
                        0 => text.push_str(&rng.below(10_000).to_string()),
                        1 => text.push_str(&format!("\"{word}\"")),
                        2 => text.push_str(&format!("({word})")),
                        _ => text.push_str(word),
                    }
                }
                if i + 1 < length && rng.below(12) == 0 {
                    text.push(',');
                }
            }
            text.push_str([". ", "? ", "! ", ".\n"][rng.below(4)]);
        }
        text.push('\n');
        paragraphs.push(text);
    }
    paragraphs
}

/// The fixture's `tokenizer.json`, trained afresh (not the per-process copy): for checking that
/// training is deterministic.
pub fn fixture_tokenizer_json() -> String {
    train()
}
