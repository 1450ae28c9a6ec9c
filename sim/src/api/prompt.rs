//! The request bodies of the generation endpoints, and how they become prompt tokens.
//! Unknown fields (temperature, top_p, stop, ...) are accepted and ignored: sampling does not
//! change what a simulated GPU does.

use serde::Deserialize;

use super::error::ApiError;
use crate::hf_tokenizer::HfTokenizer;
use crate::tokenizer::{token_id, tokenize_into, VOCAB_SIZE};

const BEGIN_OF_TEXT: &str = "<|begin_of_text|>";

#[derive(Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: PromptInput,
    #[serde(flatten)]
    pub common: CommonParams,
}

#[derive(Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<Message>,
    /// Newer name of max_tokens in the chat API.
    pub max_completion_tokens: Option<u32>,
    #[serde(flatten)]
    pub common: CommonParams,
}

#[derive(Deserialize)]
pub struct CommonParams {
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<u32>,
}

#[derive(Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Tokens(Vec<u32>),
    Texts(Vec<String>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Deserialize, Clone)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, Clone)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

impl CommonParams {
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|options| options.include_usage)
    }

    pub fn check_n(&self) -> Result<(), ApiError> {
        match self.n {
            None | Some(1) => Ok(()),
            Some(n) => Err(ApiError::bad_request(format!(
                "n={n} is not supported by the simulator; use n=1"
            ))),
        }
    }
}

/// Tokens of a completion prompt; text gets the BOS token first, as vLLM adds it.
pub fn completion_tokens(
    prompt: &PromptInput,
    add_special_tokens: bool,
    tokenizer: Option<&HfTokenizer>,
) -> Result<Vec<u32>, ApiError> {
    let vocab = tokenizer.map_or(VOCAB_SIZE, |t| t.tokenizer.vocab_size() as u32);
    match prompt {
        PromptInput::Text(text) => text_tokens(text, add_special_tokens, tokenizer),
        PromptInput::Texts(texts) if texts.len() == 1 => {
            text_tokens(&texts[0], add_special_tokens, tokenizer)
        }
        PromptInput::Tokens(ids) => check_ids(ids.clone(), vocab),
        PromptInput::TokenLists(lists) if lists.len() == 1 => check_ids(lists[0].clone(), vocab),
        _ => Err(ApiError::bad_request(
            "batched prompts are not supported by the simulator; send one prompt per request",
        )),
    }
}

fn text_tokens(
    text: &str,
    add_special_tokens: bool,
    tokenizer: Option<&HfTokenizer>,
) -> Result<Vec<u32>, ApiError> {
    let mut ids = Vec::with_capacity(text.len() / 3 + 2);
    match tokenizer {
        Some(t) => t
            .tokenizer
            .encode(text, add_special_tokens, &mut ids)
            .map_err(|e| ApiError::bad_request(e.0))?,
        None => {
            if add_special_tokens {
                ids.push(token_id(BEGIN_OF_TEXT));
            }
            tokenize_into(text, &mut ids);
        }
    }
    Ok(ids)
}

fn check_ids(ids: Vec<u32>, vocab: u32) -> Result<Vec<u32>, ApiError> {
    match ids.iter().find(|&&id| id >= vocab) {
        Some(id) => Err(ApiError::bad_request(format!(
            "token id {id} is out of vocabulary (size {vocab})"
        ))),
        None => Ok(ids),
    }
}

/// Renders messages with the `--tokenizer`'s chat template when it has one, else with
/// Llama-3's format built in; either way ending with the assistant header the model continues
/// from.
pub fn render_chat(
    messages: &[Message],
    tokenizer: Option<&HfTokenizer>,
) -> Result<String, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request("messages must not be empty"));
    }
    if let Some(t) = tokenizer.filter(|t| t.tokenizer.chat_template().is_ok()) {
        let messages: Vec<scheduler::request::Message<'_>> =
            messages.iter().map(borrowed).collect();
        return t
            .tokenizer
            .render_chat(&messages)
            .map_err(|e| ApiError::bad_request(e.0));
    }
    let mut text = String::from(BEGIN_OF_TEXT);
    for message in messages {
        text.push_str("<|start_header_id|>");
        text.push_str(&message.role);
        text.push_str("<|end_header_id|>\n\n");
        match &message.content {
            None => {}
            Some(Content::Text(content)) => text.push_str(content),
            Some(Content::Parts(parts)) => {
                for part in parts {
                    match (part.kind.as_str(), &part.text) {
                        ("text", Some(part_text)) => text.push_str(part_text),
                        (kind, _) => {
                            return Err(ApiError::bad_request(format!(
                                "content part of type {kind:?} is not supported; the simulated model reads text only"
                            )))
                        }
                    }
                }
            }
        }
        text.push_str("<|eot_id|>");
    }
    text.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
    Ok(text)
}

/// Chat prompt tokens (the template already holds the BOS marker).
pub fn chat_tokens(
    messages: &[Message],
    tokenizer: Option<&HfTokenizer>,
) -> Result<(String, Vec<u32>), ApiError> {
    let text = render_chat(messages, tokenizer)?;
    let tokens = text_tokens(&text, false, tokenizer)?;
    Ok((text, tokens))
}

/// A message as the routing module parses it, for `prompt-tokenizer`.
fn borrowed(message: &Message) -> scheduler::request::Message<'_> {
    use scheduler::request::{Content as C, ContentPart as P};
    use std::borrow::Cow::Borrowed;
    scheduler::request::Message {
        role: Borrowed(&message.role),
        content: message.content.as_ref().map(|content| match content {
            Content::Text(text) => C::Text(Borrowed(text)),
            Content::Parts(parts) => C::Parts(
                parts
                    .iter()
                    .map(|part| P {
                        kind: Borrowed(&part.kind),
                        text: part.text.as_deref().map(Borrowed),
                    })
                    .collect(),
            ),
        }),
    }
}
