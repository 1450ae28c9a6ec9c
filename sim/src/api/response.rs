//! What a generation request gets back: SSE chunks as vLLM streams them, or one JSON body.
//!
//! Chunks are written from pre-rendered JSON fragments (the generated words need no escaping),
//! so streaming a token costs a few memcpys instead of building and serialising a JSON tree.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use serde_json::{json, Value};

use crate::pod::Pod;
use crate::progress::{Finish, Progress, Snapshot};
use crate::tokenizer::output_token;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Completions,
    Chat,
}

/// Identity of one response and what it needs to render chunks.
pub struct ResponseFormat {
    pub api: Api,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub seed: u64,
    pub prompt_tokens: u32,
    pub include_usage: bool,
}

impl ResponseFormat {
    fn object(&self, streaming: bool) -> &'static str {
        match (self.api, streaming) {
            (Api::Completions, _) => "text_completion",
            (Api::Chat, true) => "chat.completion.chunk",
            (Api::Chat, false) => "chat.completion",
        }
    }

    /// `data: {...,"choices":[{"index":0,` — everything before a chunk's choice fields.
    fn chunk_head(&self) -> String {
        let id = Value::from(self.id.as_str());
        let model = Value::from(self.model.as_str());
        format!(
            "data: {{\"id\":{id},\"object\":\"{}\",\"created\":{},\"model\":{model},\"choices\":[{{\"index\":0,",
            self.object(true),
            self.created
        )
    }

    fn usage(&self, snapshot: &Snapshot) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": snapshot.generated,
            "total_tokens": self.prompt_tokens + snapshot.generated,
            "prompt_tokens_details": {"cached_tokens": snapshot.cached_tokens},
        })
    }

    fn text(&self, tokens: u32) -> String {
        (0..tokens)
            .map(|index| output_token(self.seed, index))
            .collect()
    }

    /// The whole response of a non-streaming request.
    pub fn complete_body(&self, snapshot: &Snapshot) -> Value {
        let finish = snapshot.finish.map(Finish::as_str);
        let text = self.text(snapshot.generated);
        let choice = match self.api {
            Api::Completions => json!({
                "index": 0, "text": text, "logprobs": null, "finish_reason": finish, "stop_reason": null,
            }),
            Api::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text, "tool_calls": []},
                "logprobs": null,
                "finish_reason": finish,
                "stop_reason": null,
            }),
        };
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": self.usage(snapshot),
        })
    }
}

/// A streaming response body fed by the engine through `Progress`.
pub struct TokenStream {
    progress: Arc<Progress>,
    pod: Arc<Pod>,
    format: ResponseFormat,
    head: String,
    seen: u32,
    done: bool,
}

/// Ends a stream abruptly; hyper then closes the connection.
#[derive(Debug)]
pub struct StreamCut(&'static str);

impl std::fmt::Display for StreamCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for StreamCut {}

impl TokenStream {
    pub fn new(progress: Arc<Progress>, pod: Arc<Pod>, format: ResponseFormat) -> Self {
        let head = format.chunk_head();
        Self {
            progress,
            pod,
            format,
            head,
            seen: 0,
            done: false,
        }
    }

    fn push_chunk(&self, out: &mut Vec<u8>, content: &str, finish: Option<Finish>) {
        out.extend_from_slice(self.head.as_bytes());
        match self.format.api {
            Api::Completions => {
                out.extend_from_slice(b"\"text\":\"");
                out.extend_from_slice(content.as_bytes());
                out.extend_from_slice(b"\",\"logprobs\":null,\"finish_reason\":");
            }
            Api::Chat => {
                out.extend_from_slice(b"\"delta\":{\"content\":\"");
                out.extend_from_slice(content.as_bytes());
                out.extend_from_slice(b"\"},\"logprobs\":null,\"finish_reason\":");
            }
        }
        match finish {
            Some(finish) => {
                out.push(b'"');
                out.extend_from_slice(finish.as_str().as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"stop_reason\":null}]}\n\n");
    }

    fn render(&mut self, snapshot: Snapshot) -> Vec<u8> {
        let new = (snapshot.generated - self.seen) as usize;
        let mut out = Vec::with_capacity((self.head.len() + 80) * (new + 1));
        if self.format.api == Api::Chat && self.seen == 0 && snapshot.generated > 0 {
            out.extend_from_slice(self.head.as_bytes());
            out.extend_from_slice(
                b"\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
            );
        }
        for index in self.seen..snapshot.generated {
            let last = index + 1 == snapshot.generated;
            let finish = if last { snapshot.finish } else { None };
            self.push_chunk(&mut out, output_token(self.format.seed, index), finish);
        }
        if let Some(finish) = snapshot.finish {
            if new == 0 {
                self.push_chunk(&mut out, "", Some(finish));
            }
            if self.format.include_usage {
                let usage = json!({
                    "id": self.format.id,
                    "object": self.format.object(true),
                    "created": self.format.created,
                    "model": self.format.model,
                    "choices": [],
                    "usage": self.format.usage(&snapshot),
                });
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(usage.to_string().as_bytes());
                out.extend_from_slice(b"\n\n");
            }
            out.extend_from_slice(b"data: [DONE]\n\n");
            self.done = true;
        }
        self.seen = snapshot.generated;
        out
    }
}

impl Body for TokenStream {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.pod.faults().close_connections {
            self.done = true;
            return Poll::Ready(Some(Err(StreamCut("connection closed by fault injection"))));
        }
        let snapshot = match self.progress.poll_update(cx, self.seen) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(snapshot) => snapshot,
        };
        if snapshot.finish == Some(Finish::Aborted) {
            self.done = true;
            return Poll::Ready(Some(Err(StreamCut("request aborted by the pod"))));
        }
        let bytes = self.render(snapshot);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(bytes)))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for TokenStream {
    fn drop(&mut self) {
        // Client gone (or stream over): the engine frees the sequence at its next step.
        self.progress.cancel();
    }
}
