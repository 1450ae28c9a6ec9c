//! The hand-off between the engine loop and the HTTP response of one request: the engine
//! records tokens and the outcome, the response wakes up and writes whatever is new. Tokens
//! that pile up while the client is slow are written together, as a busy server's would be.

use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The model ended the text itself (no max_tokens given).
    Stop,
    /// max_tokens reached.
    Length,
    /// The pod dropped the request (admin reset, shutdown).
    Aborted,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Aborted => "abort",
        }
    }
}

/// What a response has to know at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub generated: u32,
    pub cached_tokens: u32,
    pub finish: Option<Finish>,
}

#[derive(Default)]
pub struct Progress {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    generated: u32,
    cached_tokens: u32,
    finish: Option<Finish>,
    cancelled: bool,
    waker: Option<Waker>,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave these plain counters inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_cached_tokens(&self, cached: u32) {
        self.lock().cached_tokens = cached;
    }

    /// The engine produced tokens up to `generated` in total.
    pub fn emit(&self, generated: u32) {
        let mut state = self.lock();
        state.generated = generated;
        if let Some(waker) = state.waker.take() {
            drop(state);
            waker.wake();
        }
    }

    pub fn finish(&self, finish: Finish) {
        let mut state = self.lock();
        state.finish.get_or_insert(finish);
        if let Some(waker) = state.waker.take() {
            drop(state);
            waker.wake();
        }
    }

    /// The client went away; the engine drops the request at its next step.
    pub fn cancel(&self) {
        self.lock().cancelled = true;
    }

    pub fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Ready with a snapshot once there are more than `seen` tokens or the request finished.
    pub fn poll_update(&self, cx: &mut Context<'_>, seen: u32) -> Poll<Snapshot> {
        let mut state = self.lock();
        if state.generated > seen || state.finish.is_some() {
            return Poll::Ready(Snapshot {
                generated: state.generated,
                cached_tokens: state.cached_tokens,
                finish: state.finish,
            });
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Waits for the outcome (non-streaming responses).
    pub async fn finished(&self) -> Snapshot {
        loop {
            let snapshot = std::future::poll_fn(|cx| self.poll_update(cx, u32::MAX - 1)).await;
            if snapshot.finish.is_some() {
                return snapshot;
            }
        }
    }
}
