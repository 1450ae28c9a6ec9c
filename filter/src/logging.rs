//! Log levels, and a `log` that goes to Envoy's logger inside Envoy and to stderr in unit tests.

#[derive(Clone, Copy, Debug)]
pub enum Level {
    #[cfg_attr(test, allow(dead_code))] // used by the Envoy bindings only
    Info,
    Error,
}

#[cfg(not(test))]
pub use crate::abi::log;

#[cfg(test)]
pub fn log(level: Level, message: &str) {
    eprintln!("[{level:?}] {message}");
}
