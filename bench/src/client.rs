//! One streaming OpenAI request, timed from the client's side.

use std::time::Instant;

use serde_json::{json, Value};

use crate::workload::Api;

/// What one request measured. Times in seconds of wall clock.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Send to the first generated token (role-only chat deltas do not count).
    pub ttft_s: Option<f64>,
    /// Gaps between successive streamed token events. Events that arrive in one read share a
    /// timestamp, as a client would see them.
    pub itl_s: Vec<f64>,
    pub e2e_s: f64,
    /// From the final `usage` chunk (0 when the server sent none).
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    /// From `usage`, else the number of token events.
    pub output_tokens: u64,
    /// The generated text (multi-turn chat sends it back in the next turn).
    pub output_text: String,
    pub error: Option<String>,
    /// The simulated pod that served it, from the response id (`cmpl-sim<pod>-<n>`); any
    /// router in front passes the id through, so this works for every target.
    pub pod: Option<usize>,
    /// Index of the session (conversation) the request belongs to.
    pub session: usize,
}

/// The JSON body for a request: a completions prompt, or the chat so far.
pub fn body(api: Api, model: &str, prompt: &str, messages: &[Value], max_tokens: u32) -> String {
    let mut body = json!({
        "model": model,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    match api {
        Api::Completions => body["prompt"] = json!(prompt),
        Api::Chat => body["messages"] = json!(messages),
    }
    body.to_string()
}

/// Sends one streaming request and reads the whole stream.
pub async fn send(client: &reqwest::Client, url: &str, body: String) -> Outcome {
    let start = Instant::now();
    let mut outcome = Outcome::default();
    let result = async {
        let mut response = client
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(format!(
                "HTTP {}: {}",
                status.as_u16(),
                truncate(&text, 200)
            ));
        }
        let mut parser = SseParser::default();
        let mut last_token: Option<f64> = None;
        let mut events = 0u64;
        let mut done = false;
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("stream: {e}"))? {
            let now = start.elapsed().as_secs_f64();
            let mut tokens_in_read = 0usize;
            for data in parser.push(&chunk) {
                if data == "[DONE]" {
                    done = true;
                    continue;
                }
                let event: Value =
                    serde_json::from_str(&data).map_err(|e| format!("bad SSE event: {e}"))?;
                if outcome.pod.is_none() {
                    outcome.pod = event["id"].as_str().and_then(sim_pod);
                }
                if let Some(text) = token_text(&event) {
                    events += 1;
                    tokens_in_read += 1;
                    outcome.output_text.push_str(text);
                }
                if let Some(usage) = event.get("usage").filter(|u| u.is_object()) {
                    outcome.prompt_tokens = usage["prompt_tokens"].as_u64().unwrap_or(0);
                    outcome.output_tokens = usage["completion_tokens"].as_u64().unwrap_or(0);
                    outcome.cached_tokens = usage["prompt_tokens_details"]["cached_tokens"]
                        .as_u64()
                        .unwrap_or(0);
                }
            }
            record_tokens(&mut outcome, &mut last_token, now, tokens_in_read);
        }
        if !done {
            return Err("stream ended without [DONE]".into());
        }
        if outcome.ttft_s.is_none() {
            return Err("no token in the stream".into());
        }
        if outcome.output_tokens == 0 {
            outcome.output_tokens = events;
        }
        Ok(())
    }
    .await;
    outcome.e2e_s = start.elapsed().as_secs_f64();
    outcome.error = result.err();
    outcome
}

/// Times the `n` tokens that arrived in one read at `now`. The first token of the stream sets
/// TTFT; later ones share the gap since the previous read evenly (a server that fell behind
/// writes several tokens at once: they were generated over that gap, not in zero time).
fn record_tokens(outcome: &mut Outcome, last: &mut Option<f64>, now: f64, mut n: usize) {
    if n == 0 {
        return;
    }
    let since = match *last {
        None => {
            outcome.ttft_s = Some(now);
            n -= 1;
            0.0
        }
        Some(t) => now - t,
    };
    if n > 0 {
        let gap = if last.is_some() {
            since / n as f64
        } else {
            0.0
        };
        outcome.itl_s.extend(std::iter::repeat_n(gap, n));
    }
    *last = Some(now);
}

/// The generated text of a completions or chat chunk, when it carries some.
fn token_text(event: &Value) -> Option<&str> {
    let choice = event.get("choices")?.get(0)?;
    let text = choice
        .get("text")
        .or_else(|| choice.get("delta")?.get("content"))?
        .as_str()?;
    (!text.is_empty()).then_some(text)
}

/// The pod index in a simulator response id: `cmpl-sim2-17` → 2.
fn sim_pod(id: &str) -> Option<usize> {
    let rest = &id[id.find("-sim")? + 4..];
    rest[..rest.find('-')?].parse().ok()
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Splits a byte stream of Server-Sent Events into the `data:` payloads of complete events.
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut consumed = 0;
        while let Some(end) = find_event_end(&self.buf[consumed..]) {
            let event = &self.buf[consumed..consumed + end.0];
            for line in event.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if let Some(data) = line.strip_prefix(b"data:") {
                    let data = data.strip_prefix(b" ").unwrap_or(data);
                    out.push(String::from_utf8_lossy(data).into_owned());
                }
            }
            consumed += end.1;
        }
        self.buf.drain(..consumed);
        out
    }
}

/// (length of the event, length including its blank-line terminator).
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_reads() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: {\"a\":1}\n").is_empty());
        assert_eq!(p.push(b"\ndata: {\"b\"").len(), 1);
        assert_eq!(
            p.push(b":2}\r\n\r\ndata: [DONE]\n\n"),
            vec!["{\"b\":2}", "[DONE]"]
        );
        assert!(p.buf.is_empty());
    }

    #[test]
    fn tokens_of_one_read_share_its_gap() {
        let mut o = Outcome::default();
        let mut last = None;
        record_tokens(&mut o, &mut last, 0.5, 0);
        assert_eq!(o.ttft_s, None);
        record_tokens(&mut o, &mut last, 1.0, 1);
        record_tokens(&mut o, &mut last, 1.3, 3);
        record_tokens(&mut o, &mut last, 1.4, 1);
        assert_eq!(o.ttft_s, Some(1.0));
        let itl: Vec<String> = o.itl_s.iter().map(|g| format!("{g:.3}")).collect();
        assert_eq!(itl, ["0.100", "0.100", "0.100", "0.100"]);
    }

    #[test]
    fn token_text_reads_completions_and_chat_deltas() {
        let c = json!({"choices": [{"text": " hi"}]});
        let role = json!({"choices": [{"delta": {"role": "assistant", "content": ""}}]});
        let chat = json!({"choices": [{"delta": {"content": " yo"}}]});
        let usage = json!({"choices": [], "usage": {"prompt_tokens": 3}});
        assert_eq!(token_text(&c), Some(" hi"));
        assert_eq!(token_text(&role), None);
        assert_eq!(token_text(&chat), Some(" yo"));
        assert_eq!(token_text(&usage), None);
    }

    #[test]
    fn the_serving_pod_is_read_from_the_response_id() {
        assert_eq!(sim_pod("cmpl-sim2-17"), Some(2));
        assert_eq!(sim_pod("chatcmpl-sim10-0"), Some(10));
        assert_eq!(sim_pod("chatcmpl-abc"), None);
    }

    #[test]
    fn bodies_carry_prompt_or_messages() {
        let b: Value = serde_json::from_str(&body(Api::Completions, "m", " a b", &[], 5)).unwrap();
        assert_eq!(
            (b["prompt"].as_str(), b["max_tokens"].as_u64()),
            (Some(" a b"), Some(5))
        );
        assert_eq!(b["stream"], true);
        let msgs = [json!({"role": "user", "content": "x"})];
        let b: Value = serde_json::from_str(&body(Api::Chat, "m", "", &msgs, 5)).unwrap();
        assert_eq!(b["messages"][0]["content"], "x");
        assert!(b.get("prompt").is_none());
    }
}
