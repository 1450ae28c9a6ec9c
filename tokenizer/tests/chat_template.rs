//! Our chat-template rendering against real Jinja (Python `jinja2` from the project's
//! virtualenv, `tests/chat_template.py`, configured as transformers configures it for vLLM), on
//! Llama-3-format templates written for these tests and message lists with multi-part content,
//! absent content, non-ASCII text and an unsupported role.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use prompt_tokenizer::{
    write_trained_tokenizer, PromptTokenizer, TokenizerConfig, FIXTURE_CHAT_TEMPLATE,
};
use scheduler::request::{parse, ApiKind, Input};
use serde_json::{json, Value};

const BOS: &str = "<|begin_of_text|>";
const EOS: &str = "<|eot_id|>";

/// Llama-3's format with block tags that lean on trim_blocks/lstrip_blocks, a namespace, loop
/// controls, Python string methods, slicing, filters, tests, tojson and printed booleans/none.
const BLOCKS_TEMPLATE: &str = r#"{{ bos_token }}
{% set ns = namespace(system=none, turns=0) %}
{% for message in messages %}
    {% if message.role == 'system' %}
        {% set ns.system = message.content.strip() %}
        {% continue %}
    {% endif %}
    {% if message.role not in ['user', 'assistant'] %}
        {{ raise_exception('Only user and assistant roles are supported, got ' + message.role) }}
    {% endif %}
    {% if ns.turns == 0 and ns.system is not none %}
<|start_header_id|>system<|end_header_id|>

{{ ns.system }} ({{ messages | length }} messages, tools: {{ tools is none }}, {{ tools }}, {{ strftime_now('%Y') | length }})<|eot_id|>
    {% endif %}
    {% set ns.turns = ns.turns + 1 %}
<|start_header_id|>{{ message['role'] }}<|end_header_id|>

    {% if message.content.startswith('/') %}
command: {{ message.content[1:].upper() }} {{ message.content.split(' ') | tojson }}
    {% elif not message.content %}
{% break %}
    {% else %}
{{ message.content.replace('  ', ' ') | trim }}{{ '' if loop.last else ' ' + loop.index|string }}
    {% endif %}
<|eot_id|>
{% endfor %}
{% if add_generation_prompt %}
<|start_header_id|>assistant<|end_header_id|>

{{ {'turns': ns.turns, 'roles': messages | map(attribute='role') | list, 'last': messages[-1].content} | tojson }}
{% endif %}
"#;

fn conversations() -> Value {
    json!([
        [
            {"role": "system", "content": "  You are a helpful assistant.  "},
            {"role": "user", "content": "What is a prefix cache?"},
            {"role": "assistant", "content": "A cache of  KV blocks."},
            {"role": "user", "content": "And  routing?"}
        ],
        [
            {"role": "user", "content": [
                {"type": "text", "text": "  first part "},
                {"type": "text", "text": "second part"}
            ]}
        ],
        [
            {"role": "user", "content": "/run fast now"},
            {"role": "assistant", "content": null},
            {"role": "user", "content": "after the break"}
        ],
        [
            {"role": "system", "content": "Ünïcödé “quotes” 'single' \"double\" \\ back\ttab"},
            {"role": "user", "content": "日本語 🙂\nnew line"}
        ],
        [
            {"role": "tool", "content": "{\"result\": 42}"}
        ]
    ])
}

fn render_with_jinja2(templates: &[&str]) -> Value {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = manifest.join("../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make venv` (scripts/setup-venv.sh) to create the project's virtualenv",
        python.display()
    );
    let request = json!({
        "templates": templates,
        "conversations": conversations(),
        "bos_token": BOS,
        "eos_token": EOS,
    });
    let mut child = Command::new(&python)
        .arg(manifest.join("tests/chat_template.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "jinja2 failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON from the renderer")
}

#[test]
fn templates_render_as_jinja2_renders_them_for_transformers() {
    let templates = [FIXTURE_CHAT_TEMPLATE, BLOCKS_TEMPLATE];
    let expected = render_with_jinja2(&templates);
    assert!(
        expected[1][4].is_object(),
        "the unsupported role fails in jinja2 too"
    );
    let conversations = conversations();
    for (t, template) in templates.iter().enumerate() {
        let dir =
            std::env::temp_dir().join(format!("prompt-tokenizer-jinja-{}-{t}", std::process::id()));
        let path = write_trained_tokenizer(&dir);
        let config =
            json!({"bos_token": BOS, "eos_token": {"content": EOS}, "chat_template": template});
        std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
        let tokenizer = PromptTokenizer::load(&TokenizerConfig::new(&path)).unwrap();
        for (c, conversation) in conversations.as_array().unwrap().iter().enumerate() {
            let body = json!({"messages": conversation}).to_string();
            let request = parse(body.as_bytes(), ApiKind::Chat).unwrap();
            let Input::Messages(messages) = &request.input else {
                panic!("messages")
            };
            let ours = tokenizer.render_chat(messages);
            match (&expected[t][c], ours) {
                (Value::String(theirs), Ok(ours)) => {
                    assert_eq!(&ours, theirs, "template {t}, conversation {c}")
                }
                (Value::Object(error), Err(ours)) => {
                    let theirs = error["error"].as_str().unwrap();
                    assert!(
                        ours.0.contains(theirs),
                        "template {t}, conversation {c}: {ours} vs {theirs}"
                    );
                }
                (theirs, ours) => {
                    panic!("template {t}, conversation {c}: jinja2 {theirs}, ours {ours:?}")
                }
            }
        }
    }
}
