//! Log levels, and a `log` that goes to Envoy's logger inside Envoy and to stderr in unit tests.

#[derive(Clone, Copy, Debug)]
pub enum Level {
    Info,
    Warn,
    Error,
}

#[cfg(not(test))]
pub use crate::abi::log;

#[cfg(test)]
pub fn log(level: Level, message: &str) {
    eprintln!("[{level:?}] {message}");
}
