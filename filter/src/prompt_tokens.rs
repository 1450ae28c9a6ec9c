//! A request's token ids for the `precise-prefix` scorer, computed with the pool's tokenizer
//! into a buffer of the worker thread (no allocation once it has grown to the usual prompt).

use std::cell::RefCell;

use prompt_tokenizer::PromptTokenizer;
use scheduler::InferenceRequest;

/// Token buffers above this many ids are freed after use, so one huge prompt does not pin its
/// memory on every worker.
const KEPT_TOKENS: usize = 256 * 1024;

thread_local! {
    static TOKENS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with the request's token ids when the scheduler `wants` them and the pool has a
/// tokenizer; with `None` otherwise, or when the prompt cannot be tokenized (a chat request
/// and no chat template, say): the scorer then falls back to approximate scoring.
pub fn with_prompt_tokens<T>(
    tokenizer: Option<&PromptTokenizer>,
    wants: bool,
    request: &InferenceRequest<'_>,
    f: impl FnOnce(Option<&[u32]>) -> T,
) -> T {
    let Some(tokenizer) = tokenizer.filter(|_| wants) else {
        return f(None);
    };
    TOKENS.with_borrow_mut(|tokens| {
        let ok = tokenizer.request_tokens(request, tokens).is_ok();
        let result = f(ok.then_some(tokens.as_slice()));
        tokens.clear();
        if tokens.capacity() > KEPT_TOKENS {
            tokens.shrink_to(KEPT_TOKENS);
        }
        result
    })
}
