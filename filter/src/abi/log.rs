//! Envoy's logger, so our messages land where the operator looks (`--component-log-level
//! dynamic_modules:info` and friends).

use super::callbacks::*;
use super::types::{ModuleBuffer, LOG_ERROR, LOG_INFO, LOG_WARN};
use crate::logging::Level;

pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Info => LOG_INFO,
        Level::Warn => LOG_WARN,
        Level::Error => LOG_ERROR,
    };
    // SAFETY: the callbacks take plain values; the message is read during the call only.
    unsafe {
        if envoy_dynamic_module_callback_log_enabled(level) {
            envoy_dynamic_module_callback_log(level, ModuleBuffer::from(message));
        }
    }
}
