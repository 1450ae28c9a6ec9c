//! Reading the text a pod generates out of its OpenAI-style response as it streams, to learn
//! the blocks the next turn of a conversation will share (see `Scheduler::learn_answer`).
//!
//! Streams are server-sent events, `data: {json}` lines whose first choice carries `text`
//! (completions) or `delta.content` (chat); a non-streamed answer is one JSON body with `text`
//! or `message.content`. Only choice 0 is learned: a conversation continues one of them. The
//! chunks Envoy passes through are read in place; only a line cut by a chunk boundary (or a
//! JSON body, up to a bound) is copied.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use crate::prefix::AnswerBlocks;

/// Bytes kept for a line (or a JSON body) spanning chunks; past this the answer is not learned.
const MAX_CARRY: usize = 1 << 20;

/// How the response carries the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerFormat {
    /// `text/event-stream`.
    Events,
    /// One JSON body.
    Json,
}

impl AnswerFormat {
    /// The format a response's `content-type` announces, if it is one we read.
    pub fn for_content_type(content_type: &[u8]) -> Option<Self> {
        let essence = content_type.split(|&b| b == b';').next()?.trim_ascii();
        if essence.eq_ignore_ascii_case(b"text/event-stream") {
            Some(AnswerFormat::Events)
        } else if essence.eq_ignore_ascii_case(b"application/json") {
            Some(AnswerFormat::Json)
        } else {
            None
        }
    }
}

/// Feeds the answer's text, chunk by chunk, into its blocks.
#[derive(Debug)]
pub struct AnswerReader {
    blocks: AnswerBlocks,
    format: AnswerFormat,
    /// The unfinished line (events) or the body so far (JSON).
    carry: Vec<u8>,
    /// Set when the answer cannot be learned (too long a line, unreadable body).
    abandoned: bool,
}

impl AnswerReader {
    pub fn new(blocks: AnswerBlocks, format: AnswerFormat) -> Self {
        AnswerReader {
            blocks,
            format,
            carry: Vec::new(),
            abandoned: false,
        }
    }

    /// Reads one chunk of the response body.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        if self.abandoned || !self.blocks.wants_more() {
            return;
        }
        if self.format == AnswerFormat::Json {
            return self.keep(chunk);
        }
        if !self.carry.is_empty() {
            let Some(end) = chunk.iter().position(|&b| b == b'\n') else {
                return self.keep(chunk);
            };
            self.keep(&chunk[..end]);
            let line = std::mem::take(&mut self.carry);
            self.event_line(&line);
            self.carry = line;
            self.carry.clear();
            chunk = &chunk[end + 1..];
        }
        let mut lines = chunk.split(|&b| b == b'\n');
        let last = lines.next_back();
        for line in lines {
            self.event_line(line);
        }
        if let Some(unfinished) = last.filter(|l| !l.is_empty()) {
            self.keep(unfinished);
        }
    }

    /// The response ended: the blocks of the whole answer, unless it could not be read.
    pub fn finish(mut self) -> Option<AnswerBlocks> {
        match self.format {
            AnswerFormat::Json if !self.abandoned => {
                let body = std::mem::take(&mut self.carry);
                match serde_json::from_slice::<Response<'_>>(&body) {
                    Ok(response) => self.learn(response),
                    Err(_) => self.abandoned = true,
                }
            }
            AnswerFormat::Events if !self.carry.is_empty() => {
                let line = std::mem::take(&mut self.carry);
                self.event_line(&line);
            }
            _ => {}
        }
        if self.abandoned {
            return None;
        }
        self.blocks.finish();
        Some(self.blocks)
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.carry.len() + bytes.len() > MAX_CARRY {
            self.abandoned = true;
            self.carry = Vec::new();
        } else {
            self.carry.extend_from_slice(bytes);
        }
    }

    /// One SSE line: `data: {json}` events are read, everything else (comments, `event:`,
    /// `[DONE]`, blank separators) is skipped.
    fn event_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.trim_ascii_start();
        if data.first() != Some(&b'{') {
            return;
        }
        if let Ok(event) = serde_json::from_slice::<Response<'_>>(data) {
            self.learn(event);
        }
    }

    fn learn(&mut self, response: Response<'_>) {
        let Some(choice) = response.choices.filter(|c| c.index == 0) else {
            return;
        };
        let text = choice
            .text
            .or_else(|| choice.delta.and_then(|m| m.content))
            .or_else(|| choice.message.and_then(|m| m.content));
        if let Some(text) = text {
            self.blocks.feed(&text);
        }
    }
}

/// A response or one event of a stream: only its first choice is read.
#[derive(Deserialize)]
struct Response<'a> {
    #[serde(borrow, default, deserialize_with = "first_choice")]
    choices: Option<Choice<'a>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    delta: Option<Message<'a>>,
    #[serde(borrow, default)]
    message: Option<Message<'a>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
}

/// The first element of the `choices` array, the rest skipped (no `Vec` per event).
fn first_choice<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Choice<'de>>, D::Error> {
    struct First;
    impl<'de> Visitor<'de> for First {
        type Value = Option<Choice<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of choices")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let first = seq.next_element::<Choice<'de>>()?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(first)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(First)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefix::BlockHasher;

    const HASHER: BlockHasher = BlockHasher {
        block_size: 8,
        max_blocks: 256,
    };

    /// The blocks learned from `chunks` after the prompt "prompt: ", against the blocks of the
    /// prompt and the answer written out.
    fn learned(format: AnswerFormat, chunks: &[&[u8]], answer: &str) -> (Vec<u64>, Vec<u64>) {
        let prompt = HASHER.hash_text("m", "prompt: ");
        let blocks = HASHER.continue_after(prompt.end.as_ref().unwrap(), ("", ""));
        let mut reader = AnswerReader::new(blocks, format);
        chunks.iter().for_each(|c| reader.feed(c));
        let got = reader.finish().expect("learned").hashes().to_vec();
        let whole = HASHER.hash_text("m", &format!("prompt: {answer}")).hashes;
        (got, whole[prompt.hashes.len()..].to_vec())
    }

    #[test]
    fn completion_events_split_anywhere_are_read_whole() {
        let stream = b"data: {\"choices\":[{\"index\":0,\"text\":\"The cache \"}]}\n\n\
            data: {\"choices\":[{\"index\":0,\"text\":\"holds blocks \"}]}\n\n\
            data: {\"choices\":[{\"index\":0,\"text\":\"of tokens.\"}]}\n\ndata: [DONE]\n\n";
        for cut in [1, 7, 40, 61, stream.len() - 3] {
            let (got, want) = learned(
                AnswerFormat::Events,
                &[&stream[..cut], &stream[cut..]],
                "The cache holds blocks of tokens.",
            );
            assert_eq!(got, want, "cut at {cut}");
            assert!(!got.is_empty());
        }
    }

    #[test]
    fn chat_deltas_other_choices_and_noise_are_handled() {
        let stream: &[&[u8]] = &[
            b": keep-alive\r\n",
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\r\n\r\n",
            b"data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"other answer \"}}]}\n\n",
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Caches are \"}}]}\n\n",
            b"data: not json\n\n",
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"fast memory.\"}}],\"usage\":null}\n\n",
            b"data: {\"choices\":[],\"usage\":{\"total_tokens\":9}}\n\n",
        ];
        let (got, want) = learned(AnswerFormat::Events, stream, "Caches are fast memory.");
        assert_eq!(got, want);
    }

    #[test]
    fn a_json_body_is_read_at_the_end() {
        let body = br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"A whole answer at once."}}]}"#;
        let (got, want) = learned(
            AnswerFormat::Json,
            &[&body[..20], &body[20..]],
            "A whole answer at once.",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn an_unreadable_body_teaches_nothing() {
        let prompt = HASHER.hash_text("m", "prompt: ");
        let blocks = HASHER.continue_after(prompt.end.as_ref().unwrap(), ("", ""));
        let mut reader = AnswerReader::new(blocks, AnswerFormat::Json);
        reader.feed(b"{\"choices\": [");
        assert!(reader.finish().is_none());
    }

    #[test]
    fn content_types() {
        let of = AnswerFormat::for_content_type;
        assert_eq!(
            of(b"text/event-stream; charset=utf-8"),
            Some(AnswerFormat::Events)
        );
        assert_eq!(of(b"application/json"), Some(AnswerFormat::Json));
        assert_eq!(of(b"text/plain"), None);
    }
}
