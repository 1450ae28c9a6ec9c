//! Single-pass decoding of a request body. The body is scanned once: the prompt (or the
//! messages) is decoded in place, borrowed when it has no escapes, and fields the endpoint does
//! not use are skipped without being decoded.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::error::Category;
use smallvec::smallvec;

use super::{ApiKind, Content, ContentPart, InferenceRequest, Input, Message, RequestError};

/// Parses a request body sent to an endpoint of `kind`.
pub fn parse(body: &[u8], kind: ApiKind) -> Result<InferenceRequest<'_>, RequestError> {
    // The field being decoded when an error happens turns a type mismatch there into an
    // error naming that field; syntax errors stay "not valid JSON" wherever they are.
    let field = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    let decoded = BodySeed {
        kind,
        field: &field,
    }
    .deserialize(&mut de)
    .and_then(|decoded| de.end().map(|()| decoded))
    .map_err(|e| match (e.classify(), field.get()) {
        (Category::Data, Some(field)) => field_error(field),
        _ => RequestError::InvalidJson(e.to_string()),
    })?;
    let input = match (kind, decoded.prompt, decoded.messages) {
        (ApiKind::Completions | ApiKind::Any, Some(prompt), _) => prompt,
        (ApiKind::Chat | ApiKind::Any, _, Some(messages)) => Input::Messages(messages),
        _ => return Err(RequestError::MissingPrompt(kind)),
    };
    Ok(InferenceRequest {
        model: decoded.model.unwrap_or_default(),
        input,
        stream: decoded.stream.unwrap_or(false),
    })
}

const MODEL: &str = "model";
const PROMPT: &str = "prompt";
const MESSAGES: &str = "messages";
const STREAM: &str = "stream";

/// The error for a value of the wrong type in `field`.
fn field_error(field: &'static str) -> RequestError {
    let expected = match field {
        MODEL => "a string",
        PROMPT => "a string, an array of strings, or token ids",
        STREAM => "a boolean",
        _ => "an array of {role, content} objects",
    };
    RequestError::InvalidField { field, expected }
}

/// The fields the scheduler reads; unknown fields are skipped, as model servers do.
#[derive(Default)]
struct Decoded<'a> {
    model: Option<Cow<'a, str>>,
    prompt: Option<Input<'a>>,
    messages: Option<Vec<Message<'a>>>,
    stream: Option<bool>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Model,
    Prompt,
    Messages,
    Stream,
    #[serde(other)]
    Other,
}

struct BodySeed<'c> {
    kind: ApiKind,
    field: &'c Cell<Option<&'static str>>,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = Decoded<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_> {
    type Value = Decoded<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut decoded = Decoded::default();
        // A repeated key takes its last value, as Python's JSON parser (and so vLLM) does.
        while let Some(key) = map.next_key::<Field>()? {
            match key {
                Field::Model => {
                    self.field.set(Some(MODEL));
                    decoded.model = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0);
                    self.field.set(None);
                }
                Field::Stream => {
                    self.field.set(Some(STREAM));
                    decoded.stream = map.next_value()?;
                    self.field.set(None);
                }
                Field::Prompt if self.kind != ApiKind::Chat => {
                    self.field.set(Some(PROMPT));
                    decoded.prompt = map.next_value_seed(PromptSeed)?;
                    self.field.set(None);
                }
                Field::Messages if self.kind != ApiKind::Completions => {
                    self.field.set(Some(MESSAGES));
                    decoded.messages = map.next_value()?;
                    self.field.set(None);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(decoded)
    }
}

/// A JSON string, borrowed from the body when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// For `Option<Cow<str>>` fields: serde's `borrow` attribute borrows a `Cow<str>` but not an
/// `Option<Cow<str>>`, which it would always copy.
pub(super) fn optional_text<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
    Ok(Option::<Text<'de>>::deserialize(deserializer)?.map(|t| t.0))
}

/// `prompt`: a string, a list of strings, a list of token ids or a list of such lists;
/// `null` counts as absent.
struct PromptSeed;

impl<'de> DeserializeSeed<'de> for PromptSeed {
    type Value = Option<Input<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PromptSeed {
    type Value = Option<Input<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, an array of strings, or token ids")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Input::Prompt(smallvec![Cow::Borrowed(s)])))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Some(Input::Prompt(smallvec![Cow::Owned(s.to_owned())])))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let (mut texts, mut ids, mut batches) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(item) = seq.next_element::<PromptItem<'de>>()? {
            match item {
                PromptItem::Text(t) => texts.push(t),
                PromptItem::Token(id) => ids.push(id),
                PromptItem::Batch(batch) => batches.push(batch),
            }
        }
        let kinds = [!texts.is_empty(), !ids.is_empty(), !batches.is_empty()];
        if kinds.iter().filter(|&&k| k).count() > 1 {
            return Err(de::Error::custom("prompt mixes strings and token ids"));
        }
        Ok(Some(if !ids.is_empty() {
            Input::Tokens(vec![ids])
        } else if !batches.is_empty() {
            Input::Tokens(batches)
        } else {
            Input::Prompt(texts.into())
        }))
    }
}

/// One element of a `prompt` array.
enum PromptItem<'a> {
    Text(Cow<'a, str>),
    Token(u32),
    Batch(Vec<u32>),
}

impl<'de> Deserialize<'de> for PromptItem<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = PromptItem<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a token id or a list of token ids")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(PromptItem::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(PromptItem::Text(Cow::Owned(s.to_owned())))
            }
            fn visit_u64<E: de::Error>(self, id: u64) -> Result<Self::Value, E> {
                u32::try_from(id)
                    .map(PromptItem::Token)
                    .map_err(|_| E::custom("token id out of range"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(id) = seq.next_element::<u32>()? {
                    ids.push(id);
                }
                Ok(PromptItem::Batch(ids))
            }
        }
        deserializer.deserialize_any(ItemVisitor)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = Content<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of content parts")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Owned(s.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element::<ContentPart<'de>>()? {
                    parts.push(part);
                }
                Ok(Content::Parts(parts))
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}
