//! `make fuzz-bodies`: runs generated and mutated request bodies through the request parser
//! and reports how many got each answer, and every panic with the body that caused it.
//!
//! Bodies are generated as OpenAI-style requests (completions and chat, every prompt shape,
//! escapes, non-ASCII, unknown fields, wrong types), and most are then mutated: bytes flipped,
//! inserted, deleted, duplicated, cut, or JSON fragments spliced in (`\u` escapes with lone
//! surrogates, huge numbers, invalid UTF-8, unbalanced brackets). Each goes to the parser for
//! a random endpoint kind; an accepted request is also read out (`prompt_text`,
//! `visit_prompt`), as the scheduler reads it.
//!
//! Usage: cargo run --release -p scheduler --example fuzz-bodies -- [--count N (1000000)]
//!        [--seed S]
//! Exits with status 1 if anything panicked.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use scheduler::request::{parse, ApiKind};
use scheduler::RequestError;

fn main() {
    let mut count: u64 = 1_000_000;
    let mut seed: u64 = 0x5eed;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{name} needs a number")))
        };
        match arg.as_str() {
            "--count" => count = value("--count"),
            "--seed" => seed = value("--seed"),
            _ => usage(&format!("unknown argument `{arg}`")),
        }
    }
    // Panics are reported below with their input; the default hook would print each twice.
    panic::set_hook(Box::new(|_| {}));

    let mut rng = fastrand::Rng::with_seed(seed);
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut panics = 0u64;
    let mut bytes_total = 0u64;
    let started = Instant::now();
    for _ in 0..count {
        let mut body = generate(&mut rng);
        if rng.u8(..10) < 8 {
            for _ in 0..rng.usize(1..=4) {
                mutate(&mut rng, &mut body);
            }
        }
        let kind = [ApiKind::Completions, ApiKind::Chat, ApiKind::Any][rng.usize(..3)];
        bytes_total += body.len() as u64;
        match panic::catch_unwind(AssertUnwindSafe(|| outcome(&body, kind))) {
            Ok(name) => *outcomes.entry(name).or_default() += 1,
            Err(payload) => {
                panics += 1;
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                println!(
                    "PANIC ({kind:?}): {message}\n  body ({} bytes): {:?}",
                    body.len(),
                    String::from_utf8_lossy(&body)
                );
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{count} bodies ({:.1} MB, seed {seed}) in {elapsed:.1} s: {panics} panics",
        bytes_total as f64 / 1e6
    );
    for (name, n) in &outcomes {
        println!("  {n:>9}  {name}");
    }
    if panics > 0 {
        std::process::exit(1);
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: fuzz-bodies [--count N] [--seed S]");
    std::process::exit(2)
}

/// The parser's answer, by kind; an accepted request is read out as the scheduler would.
fn outcome(body: &[u8], kind: ApiKind) -> String {
    match parse(body, kind) {
        Ok(request) => {
            let mut len = 0;
            request.visit_prompt(|piece| {
                len += piece.len();
                ControlFlow::Continue(())
            });
            assert_eq!(len, request.prompt_text().len(), "pieces and text differ");
            "accepted".into()
        }
        Err(RequestError::InvalidJson(_)) => "rejected: not valid JSON".into(),
        Err(RequestError::MissingPrompt(kind)) => format!("rejected: no prompt for {kind:?}"),
        Err(RequestError::InvalidField { field, .. }) => {
            format!("rejected: field `{field}` of the wrong type")
        }
    }
}

const WORDS: [&str; 12] = [
    "the",
    "model",
    "routing",
    "é",
    "😀",
    "\\n",
    "\\\"",
    "\\\\",
    "\\u00e9",
    "\\ud83d\\ude00",
    "\\t",
    " ",
];

/// A JSON string literal's contents: words, escapes, non-ASCII.
fn text(rng: &mut fastrand::Rng) -> String {
    let mut out = String::new();
    for _ in 0..rng.usize(0..40) {
        out.push_str(WORDS[rng.usize(..WORDS.len())]);
        out.push(' ');
    }
    out
}

/// Any JSON value, to `depth` levels.
fn value(rng: &mut fastrand::Rng, depth: u32) -> String {
    match rng.u8(..if depth == 0 { 6 } else { 8 }) {
        0 => "null".into(),
        1 => ["true", "false"][rng.usize(..2)].into(),
        2 => rng.i64(..).to_string(),
        3 => format!("{}", rng.f64() * 1e6),
        4 | 5 => format!("\"{}\"", text(rng)),
        6 => {
            let items: Vec<String> = (0..rng.usize(0..5))
                .map(|_| value(rng, depth - 1))
                .collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let keys = [
                "model", "prompt", "messages", "stream", "role", "content", "text", "x",
            ];
            let fields: Vec<String> = (0..rng.usize(0..5))
                .map(|_| {
                    format!(
                        "\"{}\":{}",
                        keys[rng.usize(..keys.len())],
                        value(rng, depth - 1)
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
    }
}

fn prompt(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..6) {
        0..=2 => format!("\"{}\"", text(rng)),
        3 => {
            let texts: Vec<String> = (0..rng.usize(0..4))
                .map(|_| format!("\"{}\"", text(rng)))
                .collect();
            format!("[{}]", texts.join(","))
        }
        4 => {
            let ids: Vec<String> = (0..rng.usize(0..8))
                .map(|_| rng.u32(..).to_string())
                .collect();
            format!("[{}]", ids.join(","))
        }
        _ => {
            let lists: Vec<String> = (0..rng.usize(0..3))
                .map(|_| format!("[{},{}]", rng.u32(..), rng.u32(..)))
                .collect();
            format!("[{}]", lists.join(","))
        }
    }
}

fn messages(rng: &mut fastrand::Rng) -> String {
    let list: Vec<String> = (0..rng.usize(0..4))
        .map(|_| {
            let content = match rng.u8(..3) {
                0 => format!("\"{}\"", text(rng)),
                1 => format!(
                    "[{{\"type\":\"text\",\"text\":\"{}\"}},{{\"type\":\"image_url\",\"image_url\":{{\"url\":\"x\"}}}}]",
                    text(rng)
                ),
                _ => value(rng, 2),
            };
            format!("{{\"role\":\"user\",\"content\":{content}}}")
        })
        .collect();
    format!("[{}]", list.join(","))
}

/// A request body: mostly well-formed, with the odd wrong type or unknown field.
fn generate(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut fields = Vec::new();
    if rng.bool() {
        fields.push(format!("\"model\":\"{}\"", text(rng)));
    }
    match rng.u8(..3) {
        0 => fields.push(format!("\"prompt\":{}", prompt(rng))),
        1 => fields.push(format!("\"messages\":{}", messages(rng))),
        _ => {
            fields.push(format!("\"prompt\":{}", prompt(rng)));
            fields.push(format!("\"messages\":{}", messages(rng)));
        }
    }
    if rng.bool() {
        fields.push(format!(
            "\"stream\":{}",
            ["true", "false", "null"][rng.usize(..3)]
        ));
    }
    for _ in 0..rng.usize(0..3) {
        let key = [
            "max_tokens",
            "temperature",
            "model",
            "stream",
            "prompt",
            "extra",
        ];
        fields.push(format!(
            "\"{}\":{}",
            key[rng.usize(..key.len())],
            value(rng, 3)
        ));
    }
    rng.shuffle(&mut fields);
    format!("{{{}}}", fields.join(",")).into_bytes()
}

/// Fragments that stress a JSON parser when spliced in anywhere.
const FRAGMENTS: [&[u8]; 16] = [
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"\\u",
    b"\\ud800",
    b"\\udc00",
    b"1e999999",
    b"-0.0e-",
    b"\xff\xfe",
    b"\xe2\x82",
];

fn mutate(rng: &mut fastrand::Rng, body: &mut Vec<u8>) {
    let at = rng.usize(..=body.len());
    match rng.u8(..6) {
        0 if !body.is_empty() => {
            let i = rng.usize(..body.len());
            body[i] ^= 1 << rng.u8(..8);
        }
        1 => body.insert(at, rng.u8(..)),
        2 if at < body.len() => {
            let end = rng.usize(at..=body.len().min(at + 16));
            body.drain(at..end);
        }
        3 if at < body.len() => {
            let end = rng.usize(at..=body.len().min(at + 32));
            let copy = body[at..end].to_vec();
            let to = rng.usize(..=body.len());
            body.splice(to..to, copy);
        }
        4 => body.truncate(at),
        _ => {
            let fragment = FRAGMENTS[rng.usize(..FRAGMENTS.len())];
            body.splice(at..at, fragment.iter().copied());
        }
    }
}
