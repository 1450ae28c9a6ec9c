//! Property-based tests (generated inputs) of the request parser and of the scheduler config
//! parser: whatever the bytes, a defined answer and no panic; well-formed requests read back
//! exactly what was sent; wrong types are errors naming the field. Kept to a few seconds;
//! `make fuzz-bodies` runs a million generated and mutated bodies through the parser.

use std::ops::ControlFlow;

use proptest::prelude::*;
use scheduler::request::{parse, ApiKind};
use scheduler::{RequestError, SchedulerConfig};
use serde_json::{json, Value};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1024,
        ..ProptestConfig::default()
    }
}

fn api_kind() -> impl Strategy<Value = ApiKind> {
    prop_oneof![
        Just(ApiKind::Completions),
        Just(ApiKind::Chat),
        Just(ApiKind::Any)
    ]
}

/// Text with the characters that need escaping in JSON, non-ASCII and astral characters.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[a-z ]{1,8}",
            Just("\n".to_string()),
            Just("\"".to_string()),
            Just("\\".to_string()),
            Just("\u{1}".to_string()),
            Just("é".to_string()),
            Just("😀".to_string()),
            any::<char>().prop_map(String::from),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

/// Any JSON value, biased towards the keys the parsers look at.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("model".to_string()),
        Just("prompt".to_string()),
        Just("messages".to_string()),
        Just("stream".to_string()),
        Just("role".to_string()),
        Just("content".to_string()),
        Just("type".to_string()),
        Just("text".to_string()),
        Just("prefix_index".to_string()),
        Just("profiles".to_string()),
        Just("default_profile".to_string()),
        Just("scorers".to_string()),
        "[a-z_]{1,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The prompt in one of its accepted shapes, with the text the parser should read from it.
fn prompt() -> impl Strategy<Value = (Value, String)> {
    prop_oneof![
        text().prop_map(|t| (json!(t), t)),
        prop::collection::vec(text(), 1..4).prop_map(|ts| (json!(ts), ts.join("\n"))),
        prop::collection::vec(any::<u32>(), 1..8).prop_map(|ids| {
            let expected = ids.iter().map(|id| format!("{id} ")).collect();
            (json!(ids), expected)
        }),
    ]
}

fn messages() -> impl Strategy<Value = (Value, String)> {
    prop::collection::vec(("[a-z]{1,9}", text()), 0..4).prop_map(|ms| {
        let expected = ms.iter().map(|(r, c)| format!("{r}: {c}\n")).collect();
        let value = ms
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect::<Vec<_>>();
        (Value::from(value), expected)
    })
}

/// A JSON value that is neither `expected_kind` nor null.
fn other_than(expected_kind: &'static str) -> impl Strategy<Value = Value> {
    json_value().prop_filter("another type", move |v| {
        !v.is_null()
            && match expected_kind {
                "bool" => !v.is_boolean(),
                _ => !v.is_string(),
            }
    })
}

fn concatenated_pieces(request: &scheduler::InferenceRequest<'_>) -> String {
    let mut out = String::new();
    request.visit_prompt(|piece| {
        out.push_str(piece);
        ControlFlow::Continue(())
    });
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_get_a_defined_answer(bytes in prop::collection::vec(any::<u8>(), 0..256), kind in api_kind()) {
        let agree = parse(&bytes, kind).map(|r| concatenated_pieces(&r) == r.prompt_text());
        prop_assert!(agree.unwrap_or(true));
    }

    #[test]
    fn any_json_value_gets_a_defined_answer(value in json_value(), kind in api_kind()) {
        let body = serde_json::to_vec(&value).unwrap();
        // (accepted, pieces and text agree, called invalid JSON, message)
        let outcome = match parse(&body, kind) {
            Ok(request) => (true, concatenated_pieces(&request) == request.prompt_text(), false, String::new()),
            Err(e) => (false, true, matches!(e, RequestError::InvalidJson(_)), e.to_string()),
        };
        prop_assert!(!outcome.0 || value.is_object());
        prop_assert!(outcome.1);
        prop_assert!(!outcome.2 || !value.is_object(), "valid JSON called invalid: {}", value);
        prop_assert!(outcome.0 || !outcome.3.is_empty());
    }

    #[test]
    fn completions_read_back_what_was_sent(
        model in text(), (prompt, expected) in prompt(), stream in any::<Option<bool>>(), extra in json_value(),
    ) {
        let mut body = json!({"model": model, "prompt": prompt, "extra": extra});
        if let Some(stream) = stream {
            body["stream"] = json!(stream);
        }
        let bytes = serde_json::to_vec(&body).unwrap();
        let request = parse(&bytes, ApiKind::Completions).unwrap();
        let (got_model, got_stream) = (request.model.to_string(), request.stream);
        let (text, pieces) = (request.prompt_text().into_owned(), concatenated_pieces(&request));
        prop_assert_eq!(got_model, model);
        prop_assert_eq!(got_stream, stream.unwrap_or(false));
        prop_assert_eq!(&text, &expected);
        prop_assert_eq!(pieces, expected);
    }

    #[test]
    fn chats_read_back_what_was_sent((messages, expected) in messages(), kind in prop_oneof![Just(ApiKind::Chat), Just(ApiKind::Any)]) {
        let bytes = serde_json::to_vec(&json!({"model": "m", "messages": messages})).unwrap();
        let text = parse(&bytes, kind).unwrap().prompt_text().into_owned();
        prop_assert_eq!(text, expected);
    }

    #[test]
    fn every_cut_of_a_body_is_invalid_json((prompt, _) in prompt(), cut in any::<prop::sample::Index>()) {
        let bytes = serde_json::to_vec(&json!({"model": "m", "prompt": prompt, "stream": true})).unwrap();
        let cut = cut.index(bytes.len());
        let err = parse(&bytes[..cut], ApiKind::Completions).map(|_| ()).unwrap_err();
        prop_assert!(matches!(err, RequestError::InvalidJson(_)), "{:?}", err);
    }

    #[test]
    fn wrong_types_name_their_field(stream in other_than("bool"), model in other_than("string")) {
        let bytes = serde_json::to_vec(&json!({"prompt": "hi", "stream": stream})).unwrap();
        let err = parse(&bytes, ApiKind::Completions).map(|_| ()).unwrap_err().to_string();
        prop_assert_eq!(err, "field `stream` must be a boolean");
        let bytes = serde_json::to_vec(&json!({"model": model, "prompt": "hi"})).unwrap();
        let err = parse(&bytes, ApiKind::Completions).map(|_| ()).unwrap_err().to_string();
        prop_assert_eq!(err, "field `model` must be a string");
    }

    #[test]
    fn any_config_text_gets_a_defined_answer(text in "\\PC{0,64}") {
        if let Err(e) = SchedulerConfig::from_json(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn any_config_value_gets_a_defined_answer(value in json_value()) {
        let text = value.to_string();
        match SchedulerConfig::from_json(&text) {
            Ok(_) => prop_assert!(value.is_object()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        // The parsed-value entry point (the filter's) agrees with the text one; `null` is the
        // default there and not an object here.
        if !value.is_null() {
            prop_assert_eq!(
                SchedulerConfig::from_json(&text).is_ok(),
                SchedulerConfig::from_value(&value).is_ok(),
                "{}", text
            );
        }
    }

    #[test]
    fn unknown_config_keys_are_named(key in "[a-z]{1,10}_x", value in json_value()) {
        let text = json!({ key.clone(): value }).to_string();
        let err = SchedulerConfig::from_json(&text).unwrap_err();
        prop_assert!(err.to_string().contains(&key), "{}", err);
    }

    #[test]
    fn text_after_a_config_is_refused(tail in "[a-z\\]}{]{1,8}") {
        let text = format!(r#"{{"default_profile": "default"}} {tail}"#);
        prop_assert!(SchedulerConfig::from_json(&text).is_err());
    }
}
