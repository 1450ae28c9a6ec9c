//! The request model: what the scheduler needs from an OpenAI-style request body.
//!
//! Parsing ([`parse`]) reads the body once and borrows from it wherever a JSON string has no
//! escapes, so a 10 KB prompt is not copied on the hot path.

mod parse;

pub use parse::parse;

use std::borrow::Cow;
use std::fmt;
use std::ops::ControlFlow;

use serde::Deserialize;
use smallvec::SmallVec;

/// Which OpenAI endpoint a request was sent to; decides which body fields are required.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiKind {
    /// `/v1/completions`: needs `prompt`.
    Completions,
    /// `/v1/chat/completions`: needs `messages`.
    Chat,
    /// Another configured inference path: either field is accepted.
    Any,
}

impl ApiKind {
    /// The kind for a request path (query string already stripped).
    pub fn for_path(path: &str) -> Self {
        if path.ends_with("/chat/completions") {
            ApiKind::Chat
        } else if path.ends_with("/completions") {
            ApiKind::Completions
        } else {
            ApiKind::Any
        }
    }
}

/// A parsed inference request, borrowing from the body it was parsed from.
#[derive(Debug)]
pub struct InferenceRequest<'a> {
    /// The `model` field; empty when absent (the model server then answers for itself).
    pub model: Cow<'a, str>,
    pub input: Input<'a>,
    pub stream: bool,
}

/// The prompt of a request, in the shape it arrived.
#[derive(Debug)]
pub enum Input<'a> {
    /// `/v1/completions` `prompt`: one string or a batch of strings (one inline, without a
    /// heap allocation).
    Prompt(SmallVec<[Cow<'a, str>; 1]>),
    /// `/v1/completions` `prompt` as token ids (one list or a batch).
    Tokens(Vec<Vec<u32>>),
    /// `/v1/chat/completions` `messages`.
    Messages(Vec<Message<'a>>),
}

#[derive(Debug, Deserialize)]
pub struct Message<'a> {
    #[serde(borrow, default)]
    pub role: Cow<'a, str>,
    #[serde(borrow, default)]
    pub content: Option<Content<'a>>,
}

/// Chat message content: a string, or a list of typed parts (text, images, ...).
#[derive(Debug)]
pub enum Content<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<ContentPart<'a>>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart<'a> {
    #[serde(borrow, rename = "type", default)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "parse::optional_text")]
    pub text: Option<Cow<'a, str>>,
}

/// Why a body cannot be scheduled. The message is meant for the client (sent in a 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    InvalidJson(String),
    MissingPrompt(ApiKind),
    InvalidField {
        field: &'static str,
        expected: &'static str,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::InvalidJson(e) => write!(f, "request body is not valid JSON: {e}"),
            RequestError::MissingPrompt(ApiKind::Completions) => {
                f.write_str("request body has no `prompt` (required by /v1/completions)")
            }
            RequestError::MissingPrompt(ApiKind::Chat) => {
                f.write_str("request body has no `messages` (required by /v1/chat/completions)")
            }
            RequestError::MissingPrompt(ApiKind::Any) => {
                f.write_str("request body has neither `prompt` nor `messages`")
            }
            RequestError::InvalidField { field, expected } => {
                write!(f, "field `{field}` must be {expected}")
            }
        }
    }
}

impl std::error::Error for RequestError {}

impl InferenceRequest<'_> {
    /// Feeds the text the model server will see first, for prefix affinity, to `sink` piece by
    /// piece in order, without building it; stops as soon as `sink` breaks. Concatenated, the
    /// pieces are exactly [`InferenceRequest::prompt_text`].
    pub fn visit_prompt(&self, mut sink: impl FnMut(&str) -> ControlFlow<()>) {
        let _ = self.visit(&mut sink);
    }

    fn visit(&self, sink: &mut dyn FnMut(&str) -> ControlFlow<()>) -> ControlFlow<()> {
        match &self.input {
            Input::Prompt(texts) => {
                for (i, text) in texts.iter().enumerate() {
                    if i > 0 {
                        sink("\n")?;
                    }
                    sink(text)?;
                }
            }
            Input::Tokens(batches) => {
                let mut digits = [0u8; 12];
                for id in batches.iter().flatten() {
                    sink(format_u32(*id, &mut digits))?;
                    sink(" ")?;
                }
            }
            Input::Messages(messages) => {
                for m in messages {
                    sink(&m.role)?;
                    sink(": ")?;
                    match &m.content {
                        Some(Content::Text(t)) => sink(t)?,
                        Some(Content::Parts(parts)) => {
                            for p in parts {
                                match &p.text {
                                    Some(t) => sink(t)?,
                                    None => {
                                        sink("<")?;
                                        sink(&p.kind)?;
                                        sink(">")?;
                                    }
                                }
                            }
                        }
                        None => {}
                    }
                    sink("\n")?;
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// How the text a pod generates for this request continues its serialised prompt in the
    /// next request of the conversation: for chat, an `assistant` message (`"assistant: "`,
    /// the answer, `"\n"`, as `visit` writes messages); for a text prompt, the answer follows
    /// it directly. `None` for token-id prompts, which text cannot continue.
    pub fn answer_framing(&self) -> Option<(&'static str, &'static str)> {
        match &self.input {
            Input::Prompt(_) => Some(("", "")),
            Input::Messages(_) => Some(("assistant: ", "\n")),
            Input::Tokens(_) => None,
        }
    }

    /// The text the model server will see first, for prefix affinity. Borrowed when the prompt
    /// is one string; otherwise a deterministic serialisation (role and text of every message,
    /// each part of a list), identical on every replica for the same body.
    pub fn prompt_text(&self) -> Cow<'_, str> {
        if let Input::Prompt(texts) = &self.input {
            if texts.len() == 1 {
                return Cow::Borrowed(texts[0].as_ref());
            }
        }
        let mut out = String::new();
        self.visit_prompt(|piece| {
            out.push_str(piece);
            ControlFlow::Continue(())
        });
        Cow::Owned(out)
    }
}

/// Decimal digits of `n` in `buf`, without allocating.
fn format_u32(mut n: u32, buf: &mut [u8; 12]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_prompt_is_borrowed_from_the_body() {
        let body = br#"{"model":"m","prompt":"hello world","stream":true}"#;
        let req = parse(body, ApiKind::Completions).unwrap();
        assert_eq!(req.model, "m");
        assert!(req.stream);
        assert!(matches!(req.prompt_text(), Cow::Borrowed("hello world")));
    }

    #[test]
    fn escaped_prompt_is_unescaped() {
        let body = br#"{"prompt":"a\nb \u00e9"}"#;
        let req = parse(body, ApiKind::Completions).unwrap();
        assert_eq!(req.prompt_text(), "a\nb \u{e9}");
        assert_eq!(req.model, "");
        assert!(!req.stream);
    }

    #[test]
    fn prompt_batches_and_token_ids_are_accepted() {
        let req = parse(br#"{"prompt":["a","b"]}"#, ApiKind::Completions).unwrap();
        assert_eq!(req.prompt_text(), "a\nb");
        let req = parse(br#"{"prompt":[1,2,3]}"#, ApiKind::Completions).unwrap();
        assert_eq!(req.prompt_text(), "1 2 3 ");
        let req = parse(br#"{"prompt":[[1],[2]]}"#, ApiKind::Completions).unwrap();
        assert!(matches!(req.input, Input::Tokens(ref b) if b.len() == 2));
    }

    #[test]
    fn chat_messages_serialise_deterministically_with_parts() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"x"}}]}
        ]}"#;
        let req = parse(body, ApiKind::Chat).unwrap();
        assert_eq!(req.prompt_text(), "system: be brief\nuser: hi<image_url>\n");
    }

    #[test]
    fn malformed_json_names_the_problem() {
        let err = parse(b"{\"prompt\": ", ApiKind::Completions).unwrap_err();
        assert!(matches!(err, RequestError::InvalidJson(_)));
        assert!(
            err.to_string()
                .starts_with("request body is not valid JSON"),
            "{err}"
        );
        assert!(matches!(
            parse(b"[1,2]", ApiKind::Any),
            Err(RequestError::InvalidJson(_))
        ));
    }

    #[test]
    fn missing_prompt_says_which_field_the_endpoint_needs() {
        let err = parse(br#"{"model":"m","messages":[]}"#, ApiKind::Completions).unwrap_err();
        assert_eq!(err, RequestError::MissingPrompt(ApiKind::Completions));
        assert!(err.to_string().contains("`prompt`"));
        let err = parse(br#"{"model":"m","prompt":"x"}"#, ApiKind::Chat).unwrap_err();
        assert!(err.to_string().contains("`messages`"));
        assert!(parse(br#"{"model":"m"}"#, ApiKind::Any).is_err());
    }

    #[test]
    fn wrong_prompt_type_is_a_field_error() {
        let err = parse(br#"{"prompt":42}"#, ApiKind::Completions).unwrap_err();
        assert!(err.to_string().contains("`prompt`"), "{err}");
        let err = parse(br#"{"messages":"hi"}"#, ApiKind::Chat).unwrap_err();
        assert!(err.to_string().contains("`messages`"), "{err}");
    }

    #[test]
    fn type_errors_in_model_and_stream_name_the_field() {
        let err = parse(br#"{"prompt":"hi","stream":"yes"}"#, ApiKind::Completions).unwrap_err();
        assert_eq!(
            err,
            RequestError::InvalidField {
                field: "stream",
                expected: "a boolean"
            }
        );
        assert_eq!(err.to_string(), "field `stream` must be a boolean");
        let err = parse(br#"{"model":7,"prompt":"hi"}"#, ApiKind::Completions).unwrap_err();
        assert_eq!(err.to_string(), "field `model` must be a string");
        // A syntax error inside those fields is still a syntax error.
        let err = parse(br#"{"prompt":"hi","stream":tru}"#, ApiKind::Completions).unwrap_err();
        assert!(matches!(err, RequestError::InvalidJson(_)), "{err:?}");
    }

    #[test]
    fn escaped_prompts_are_decoded_once_and_plain_ones_borrowed() {
        let req = parse(
            br#"{"prompt":"line\none \"q\" \u00e9\ud83d\ude00"}"#,
            ApiKind::Completions,
        )
        .unwrap();
        assert_eq!(req.prompt_text(), "line\none \"q\" \u{e9}\u{1f600}");
        let body = br#"{"messages":[{"role":"user","content":[{"type":"text","text":"a\tb"},{"type":"text","text":"plain"}]}]}"#;
        let req = parse(body, ApiKind::Chat).unwrap();
        let Input::Messages(messages) = &req.input else {
            panic!("messages")
        };
        let Some(Content::Parts(parts)) = &messages[0].content else {
            panic!("parts")
        };
        assert_eq!(parts[0].text.as_deref(), Some("a\tb"));
        assert!(matches!(parts[1].text, Some(Cow::Borrowed("plain"))));
    }

    #[test]
    fn api_kind_follows_the_path() {
        assert_eq!(ApiKind::for_path("/v1/completions"), ApiKind::Completions);
        assert_eq!(ApiKind::for_path("/v1/chat/completions"), ApiKind::Chat);
        assert_eq!(ApiKind::for_path("/generate"), ApiKind::Any);
    }

    #[test]
    fn fields_the_endpoint_does_not_use_are_not_checked() {
        let req = parse(
            br#"{"prompt":{"odd":1},"messages":[{"role":"user","content":"hi"}]}"#,
            ApiKind::Chat,
        )
        .unwrap();
        assert_eq!(req.prompt_text(), "user: hi\n");
        let req = parse(br#"{"prompt":"p","messages":7}"#, ApiKind::Completions).unwrap();
        assert_eq!(req.prompt_text(), "p");
    }

    #[test]
    fn null_fields_count_as_absent() {
        let req = parse(
            br#"{"model":null,"prompt":"x","stream":null}"#,
            ApiKind::Completions,
        )
        .unwrap();
        assert_eq!(req.model, "");
        assert!(!req.stream);
        let err = parse(br#"{"prompt":null}"#, ApiKind::Completions).unwrap_err();
        assert_eq!(err, RequestError::MissingPrompt(ApiKind::Completions));
    }

    #[test]
    fn bad_prompt_arrays_are_field_errors() {
        for body in [
            &br#"{"prompt":["a",1]}"#[..],
            br#"{"prompt":[-1]}"#,
            br#"{"prompt":[4294967296]}"#,
            br#"{"prompt":[[1],"a"]}"#,
            br#"{"prompt":[1.5]}"#,
        ] {
            let err = parse(body, ApiKind::Completions).unwrap_err();
            assert!(
                matches!(
                    err,
                    RequestError::InvalidField {
                        field: "prompt",
                        ..
                    }
                ),
                "{err:?}"
            );
        }
        let err = parse(
            br#"{"messages":[{"role":"user","content":5}]}"#,
            ApiKind::Chat,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                RequestError::InvalidField {
                    field: "messages",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_body_cut_inside_the_prompt_is_invalid_json() {
        let err = parse(br#"{"model":"m","prompt":"hello wor"#, ApiKind::Completions).unwrap_err();
        assert!(matches!(err, RequestError::InvalidJson(_)), "{err:?}");
        let err = parse(br#"{"prompt":"a"} {"#, ApiKind::Completions).unwrap_err();
        assert!(matches!(err, RequestError::InvalidJson(_)), "{err:?}");
    }

    #[test]
    fn a_repeated_key_takes_its_last_value() {
        let req = parse(
            br#"{"model":"a","prompt":"x","model":"b"}"#,
            ApiKind::Completions,
        )
        .unwrap();
        assert_eq!(req.model, "b");
    }

    #[test]
    fn escaped_chat_content_is_unescaped() {
        let body = br#"{"messages":[{"role":"user","content":"line\nbreak"}]}"#;
        let req = parse(body, ApiKind::Chat).unwrap();
        assert_eq!(req.prompt_text(), "user: line\nbreak\n");
    }
}
