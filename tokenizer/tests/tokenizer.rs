//! Loading, chunked == whole encoding, request tokens and chat templates, with the fixture
//! tokenizer (byte-level BPE trained in-process, Llama-3 special tokens and prompt format).

use std::path::PathBuf;

use prompt_tokenizer::{write_trained_tokenizer, PromptTokenizer, TokenizerConfig};
use proptest::prelude::*;
use scheduler::request::{parse, ApiKind};

fn temp_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("prompt-tokenizer-{}-{name}", std::process::id()))
}

fn fixture(name: &str) -> PromptTokenizer {
    let path = write_trained_tokenizer(&temp_dir(name));
    PromptTokenizer::load(&TokenizerConfig::new(path)).unwrap()
}

fn shared() -> &'static PromptTokenizer {
    static TOKENIZER: std::sync::OnceLock<PromptTokenizer> = std::sync::OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = write_trained_tokenizer(&temp_dir("shared"));
        PromptTokenizer::load(&TokenizerConfig {
            chunk_bytes: 16,
            ..TokenizerConfig::new(path)
        })
        .unwrap()
    })
}

#[test]
fn the_fixture_is_deterministic_quick_and_english_like() {
    let started = std::time::Instant::now();
    let a = write_trained_tokenizer(&temp_dir("det-a"));
    let elapsed = started.elapsed();
    let b = write_trained_tokenizer(&temp_dir("det-b"));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(
        prompt_tokenizer::fixture_tokenizer_json(),
        std::fs::read_to_string(&a).unwrap(),
        "a fresh training run writes the same file"
    );
    assert!(a.with_file_name("tokenizer_config.json").exists());
    eprintln!("fixture trained in {elapsed:?}");
    let tokenizer = PromptTokenizer::load(&TokenizerConfig::new(&a)).unwrap();
    assert!(tokenizer.chunking(), "{:?}", tokenizer.chunking_problem());
    assert!(
        (3_900..=4_100).contains(&tokenizer.vocab_size()),
        "{}",
        tokenizer.vocab_size()
    );
    let text = "The model server routes the request to the pod that holds the prefix.";
    let ids = tokenizer.encode_whole(text, false).unwrap();
    assert!(
        ids.len() * 3 < text.len(),
        "{} tokens for {} bytes",
        ids.len(),
        text.len()
    );
    assert_eq!(tokenizer.decode(&ids).unwrap(), text);
    let with_bos = tokenizer.encode_whole(text, true).unwrap();
    assert_eq!(
        with_bos[0],
        tokenizer.token_to_id("<|begin_of_text|>").unwrap()
    );
    assert_eq!(&with_bos[1..], &ids[..]);
}

#[test]
fn chunked_encoding_equals_whole_and_hits_the_cache() {
    let tokenizer = fixture("cache");
    let text = "Prefix caching lets a model server skip the prefill of a prompt whose \
                beginning it has already seen. "
        .repeat(40);
    let mut out = Vec::new();
    for add_special in [true, false] {
        tokenizer.encode(&text, add_special, &mut out).unwrap();
        assert_eq!(out, tokenizer.encode_whole(&text, add_special).unwrap());
    }
    let stats = tokenizer.cache_stats();
    assert!(stats.chunks > 0 && stats.misses > 0, "{stats:?}");
    // The second prompt shares the first's chunks up to where it differs.
    let longer = format!("{text}And one more sentence.");
    let before = tokenizer.cache_stats();
    tokenizer.encode(&longer, true, &mut out).unwrap();
    assert_eq!(out, tokenizer.encode_whole(&longer, true).unwrap());
    let after = tokenizer.cache_stats();
    assert!(after.hits > before.hits + 10, "{before:?} {after:?}");
    assert!(after.misses - before.misses <= 2, "{before:?} {after:?}");
    tokenizer.encode("", true, &mut out).unwrap();
    assert_eq!(out, tokenizer.encode_whole("", true).unwrap());
}

/// Text built from words, numbers, punctuation, runs of whitespace, non-ASCII and markers.
fn generated_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-z]{1,9}",
        2 => "[A-Z][a-z]{0,6}",
        1 => "[0-9]{1,6}",
        1 => "[.,;:!?'\"()\\-]{1,3}",
        1 => "[ \\t\\n]{1,3}",
        1 => "[éüßçñ日本語🙂]{1,3}",
        1 => prop_oneof![
            Just("<|eot_id|>".to_owned()),
            Just("<|start_header_id|>".to_owned()),
            Just("'s".to_owned()),
            Just(" \u{a0}".to_owned()),
        ],
    ];
    proptest::collection::vec((piece, prop_oneof![3 => Just(" "), 1 => Just("")]), 0..120)
        .prop_map(|pieces| pieces.into_iter().map(|(p, sep)| p + sep).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn chunked_equals_whole_on_generated_texts(text in generated_text(), special in any::<bool>()) {
        let tokenizer = shared();
        let mut out = Vec::new();
        tokenizer.encode(&text, special, &mut out).unwrap();
        prop_assert_eq!(out, tokenizer.encode_whole(&text, special).unwrap());
    }
}

#[test]
fn request_tokens_follow_vllm_rules() {
    let tokenizer = fixture("request");
    let mut out = vec![7, 7];
    let body = br#"{"model":"m","prompt":"Hello there, model."}"#;
    let req = parse(body, ApiKind::Completions).unwrap();
    tokenizer.request_tokens(&req, &mut out).unwrap();
    assert_eq!(
        out,
        tokenizer.encode_whole("Hello there, model.", true).unwrap()
    );

    let req = parse(br#"{"prompt":[[5,6,7],[8]]}"#, ApiKind::Completions).unwrap();
    tokenizer.request_tokens(&req, &mut out).unwrap();
    assert_eq!(out, [5, 6, 7]);

    let body = br#"{"messages":[{"role":"system","content":" Be brief. "},
        {"role":"user","content":[{"type":"text","text":"first"},{"type":"text","text":"second"}]}]}"#;
    let req = parse(body, ApiKind::Chat).unwrap();
    tokenizer.request_tokens(&req, &mut out).unwrap();
    let rendered =
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
        <|start_header_id|>user<|end_header_id|>\n\nfirst\nsecond<|eot_id|>\
        <|start_header_id|>assistant<|end_header_id|>\n\n";
    let scheduler::request::Input::Messages(messages) = &req.input else {
        panic!("messages")
    };
    assert_eq!(tokenizer.render_chat(messages).unwrap(), rendered);
    assert_eq!(out, tokenizer.encode_whole(rendered, false).unwrap());
    assert_eq!(out[0], tokenizer.token_to_id("<|begin_of_text|>").unwrap());
    assert_eq!(
        out.iter().filter(|&&id| id == out[0]).count(),
        1,
        "one BOS: the template's, none added"
    );

    let body = br#"{"messages":[{"role":"robot","content":"hi"}]}"#;
    let req = parse(body, ApiKind::Chat).unwrap();
    let err = tokenizer.request_tokens(&req, &mut out).unwrap_err();
    assert!(err.0.contains("Unknown role: robot"), "{err}");
    let body = br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#;
    let req = parse(body, ApiKind::Chat).unwrap();
    let err = tokenizer.request_tokens(&req, &mut out).unwrap_err();
    assert!(err.0.contains("image_url"), "{err}");
}

#[test]
fn without_a_chat_template_chat_fails_but_completions_work() {
    let dir = temp_dir("no-template");
    let path = write_trained_tokenizer(&dir);
    std::fs::remove_file(dir.join("tokenizer_config.json")).unwrap();
    let tokenizer = PromptTokenizer::load(&TokenizerConfig::new(&path)).unwrap();
    assert!(tokenizer.chat_template().is_err());
    let mut out = Vec::new();
    let req = parse(
        br#"{"messages":[{"role":"user","content":"hi"}]}"#,
        ApiKind::Chat,
    )
    .unwrap();
    let err = tokenizer.request_tokens(&req, &mut out).unwrap_err();
    assert!(err.0.contains("chat template"), "{err}");
    let req = parse(br#"{"prompt":"hi"}"#, ApiKind::Completions).unwrap();
    tokenizer.request_tokens(&req, &mut out).unwrap();

    // A config without `chat_template`, given explicitly.
    let config = dir.join("other_config.json");
    std::fs::write(
        &config,
        r#"{"bos_token": {"content": "<|begin_of_text|>"}}"#,
    )
    .unwrap();
    let tokenizer = PromptTokenizer::load(&TokenizerConfig {
        config_path: Some(config.clone()),
        ..TokenizerConfig::new(&path)
    })
    .unwrap();
    assert!(tokenizer
        .chat_template()
        .unwrap_err()
        .contains("no chat_template"));
}

#[test]
fn templates_come_as_strings_or_named_lists_with_token_objects() {
    let dir = temp_dir("named");
    let path = write_trained_tokenizer(&dir);
    let config = serde_json::json!({
        "bos_token": {"content": "<|begin_of_text|>", "lstrip": false},
        "eos_token": "<|eot_id|>",
        "chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "{{ bos_token }}{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}[{{ m.role.upper() }}:{{ m.content.strip() }}]{% endfor %}{{ eos_token }}"},
        ],
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let tokenizer = PromptTokenizer::load(&TokenizerConfig::new(&path)).unwrap();
    let body =
        br#"{"messages":[{"role":"user","content":" hi "},{"role":"user","content":"cut"}]}"#;
    let req = parse(body, ApiKind::Chat).unwrap();
    let scheduler::request::Input::Messages(messages) = &req.input else {
        panic!("messages")
    };
    assert_eq!(
        tokenizer.render_chat(messages).unwrap(),
        "<|begin_of_text|>[USER:hi]<|eot_id|>"
    );
}

#[test]
fn bad_files_are_clear_errors() {
    let missing = PromptTokenizer::load(&TokenizerConfig::new("/nonexistent/tokenizer.json"))
        .err()
        .unwrap();
    assert!(
        missing.0.contains("/nonexistent/tokenizer.json"),
        "{missing}"
    );
    let dir = temp_dir("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, br#"{"model": 3}"#).unwrap();
    let bad = PromptTokenizer::load(&TokenizerConfig::new(&path))
        .err()
        .unwrap();
    assert!(bad.0.contains("not a tokenizer.json"), "{bad}");

    let path = write_trained_tokenizer(&dir);
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"chat_template": "{% for %}"}"#,
    )
    .unwrap();
    let bad = PromptTokenizer::load(&TokenizerConfig::new(&path))
        .err()
        .unwrap();
    assert!(
        bad.0.contains("tokenizer_config.json") && bad.0.contains("does not compile"),
        "{bad}"
    );
    std::fs::write(dir.join("tokenizer_config.json"), "nope").unwrap();
    let bad = PromptTokenizer::load(&TokenizerConfig::new(&path))
        .err()
        .unwrap();
    assert!(bad.0.contains("not JSON"), "{bad}");
}

#[test]
fn a_tokenizer_that_breaks_chunking_is_detected_and_encodes_whole() {
    // A normalizer that prepends to the text: each chunk would get its own.
    let dir = temp_dir("prefix-space");
    let path = write_trained_tokenizer(&dir);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["normalizer"] = serde_json::json!({"type": "Prepend", "prepend": "_"});
    std::fs::write(&path, json.to_string()).unwrap();
    let tokenizer = PromptTokenizer::load(&TokenizerConfig::new(&path)).unwrap();
    assert!(!tokenizer.chunking());
    assert!(tokenizer
        .chunking_problem()
        .unwrap()
        .contains("tokenized whole"));
    let text = "one two three four five six seven eight nine ten ".repeat(20);
    let mut out = Vec::new();
    tokenizer.encode(&text, true, &mut out).unwrap();
    assert_eq!(out, tokenizer.encode_whole(&text, true).unwrap());
}

#[test]
fn threads_share_one_tokenizer() {
    let tokenizer = shared();
    let text = "Shared by every worker thread of Envoy. ".repeat(50);
    let expected = tokenizer.encode_whole(&text, true).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let mut out = Vec::new();
                for _ in 0..20 {
                    tokenizer.encode(&text, true, &mut out).unwrap();
                    assert_eq!(out, expected);
                }
            });
        }
    });
}

/// The fixture with Llama-3's pre-tokenizer layout: a `Split` on Llama-3's pattern (contractions,
/// letters with one leading non-letter, digits in threes, punctuation runs, newlines, spaces),
/// then byte-level mapping without its own regex.
fn llama3_split() -> &'static PromptTokenizer {
    static TOKENIZER: std::sync::OnceLock<PromptTokenizer> = std::sync::OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let dir = temp_dir("llama3-split");
        let path = write_trained_tokenizer(&dir);
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let pattern = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        json["pre_tokenizer"] = serde_json::json!({
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
            ],
        });
        std::fs::write(&path, json.to_string()).unwrap();
        PromptTokenizer::load(&TokenizerConfig {
            chunk_bytes: 16,
            ..TokenizerConfig::new(path)
        })
        .unwrap()
    })
}

#[test]
fn llama3_style_pre_tokenization_keeps_chunking_on() {
    let tokenizer = llama3_split();
    assert!(tokenizer.chunking(), "{:?}", tokenizer.chunking_problem());
    let text = "It's 12345 (or so) words: don't stop!\n\n  Next  line.";
    let ids = tokenizer.encode_whole(text, false).unwrap();
    assert_eq!(tokenizer.decode(&ids).unwrap(), text);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn chunked_equals_whole_with_llama3_style_pre_tokenization(text in generated_text(), special in any::<bool>()) {
        let tokenizer = llama3_split();
        let mut out = Vec::new();
        tokenizer.encode(&text, special, &mut out).unwrap();
        prop_assert_eq!(out, tokenizer.encode_whole(&text, special).unwrap());
    }
}
