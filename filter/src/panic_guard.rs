//! Panics must never unwind into Envoy (that would abort the whole proxy). Every hook runs its
//! work through `catch`, and turns a panic into a defined answer: a 500 for the request, a
//! rejected config, or "no host".

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::logging::{log, Level};

/// Runs `work`; a panic becomes `Err` with its message, logged at error level under `hook`.
pub fn catch<R>(hook: &str, work: impl FnOnce() -> R) -> Result<R, String> {
    // The state a panicking hook leaves behind is never used again: the filter is marked
    // failed and only answers 500 / passes through afterwards.
    catch_unwind(AssertUnwindSafe(work)).map_err(|payload| {
        let message = panic_message(payload.as_ref());
        log(
            Level::Error,
            &format!("inference-scheduler: panic in {hook}: {message}"),
        );
        message
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let r: Result<u32, String> = catch("test", || panic!("boom {}", 7));
        assert_eq!(r, Err("boom 7".to_owned()));
        assert_eq!(catch("test", || 5), Ok(5));
    }
}
