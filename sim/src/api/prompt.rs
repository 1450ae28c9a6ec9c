//! The request bodies of the generation endpoints, and how they become prompt tokens.
//! Unknown fields (temperature, top_p, stop, ...) are accepted and ignored: sampling does not
//! change what a simulated GPU does.

use serde::Deserialize;

use super::error::ApiError;
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
) -> Result<Vec<u32>, ApiError> {
    match prompt {
        PromptInput::Text(text) => Ok(text_tokens(text, add_special_tokens)),
        PromptInput::Texts(texts) if texts.len() == 1 => {
            Ok(text_tokens(&texts[0], add_special_tokens))
        }
        PromptInput::Tokens(ids) => check_ids(ids.clone()),
        PromptInput::TokenLists(lists) if lists.len() == 1 => check_ids(lists[0].clone()),
        _ => Err(ApiError::bad_request(
            "batched prompts are not supported by the simulator; send one prompt per request",
        )),
    }
}

fn text_tokens(text: &str, add_special_tokens: bool) -> Vec<u32> {
    let mut ids = Vec::with_capacity(text.len() / 3 + 2);
    if add_special_tokens {
        ids.push(token_id(BEGIN_OF_TEXT));
    }
    tokenize_into(text, &mut ids);
    ids
}

fn check_ids(ids: Vec<u32>) -> Result<Vec<u32>, ApiError> {
    match ids.iter().find(|&&id| id >= VOCAB_SIZE) {
        Some(id) => Err(ApiError::bad_request(format!(
            "token id {id} is out of vocabulary (size {VOCAB_SIZE})"
        ))),
        None => Ok(ids),
    }
}

/// Renders messages with Llama-3's chat template, ending with the assistant header the model
/// continues from.
pub fn render_chat(messages: &[Message]) -> Result<String, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request("messages must not be empty"));
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
pub fn chat_tokens(messages: &[Message]) -> Result<(String, Vec<u32>), ApiError> {
    let text = render_chat(messages)?;
    let tokens = text_tokens(&text, false);
    Ok((text, tokens))
}
