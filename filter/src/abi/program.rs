//! Module load.

use super::types::ABI_VERSION;

/// Called once when Envoy loads the module; the returned string names the ABI we were built for.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const std::ffi::c_char {
    ABI_VERSION.as_ptr().cast()
}
