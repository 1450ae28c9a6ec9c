//! C types of Envoy 1.40's dynamic-module ABI (`abi.h` at Envoy 9e558093…), written from the
//! header's facts and checked against the binary. Opaque pointers are `*mut c_void`; enums that
//! Envoy hands back to us are plain integers, never Rust enums, so an unexpected value cannot be
//! undefined behaviour.

use std::ffi::{c_char, c_void};

/// ABI version string Envoy 1.40 expects from `on_program_init` (a mismatch only warns).
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

pub type EnvoyPtr = *mut c_void;
pub type ModulePtr = *const c_void;

/// Bytes owned by Envoy, borrowed for the duration of the hook.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const EMPTY: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };
}

/// Bytes owned by the module, read by Envoy during the call only.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl From<&[u8]> for ModuleBuffer {
    fn from(bytes: &[u8]) -> Self {
        ModuleBuffer {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }
}

impl From<&str> for ModuleBuffer {
    fn from(s: &str) -> Self {
        ModuleBuffer::from(s.as_bytes())
    }
}

/// A header owned by the module (local replies).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleHttpHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

// envoy_dynamic_module_type_http_header_type
pub const HEADER_REQUEST: u32 = 0;
pub const HEADER_RESPONSE: u32 = 2;

// envoy_dynamic_module_type_http_body_type
pub const BODY_RECEIVED_REQUEST: u32 = 0;
pub const BODY_BUFFERED_REQUEST: u32 = 1;
pub const BODY_RECEIVED_RESPONSE: u32 = 2;

// envoy_dynamic_module_type_log_level
pub const LOG_INFO: u32 = 2;
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;

// envoy_dynamic_module_type_host_health
pub const HOST_UNHEALTHY: u32 = 0;
pub const HOST_DEGRADED: u32 = 1;

// envoy_dynamic_module_type_attribute_id
pub const ATTRIBUTE_UPSTREAM_ADDRESS: u32 = 41;

// Hook statuses (envoy_dynamic_module_type_on_http_filter_*_status).
pub const HEADERS_CONTINUE: u32 = 0;
pub const HEADERS_STOP_ITERATION: u32 = 1;
pub const BODY_CONTINUE: u32 = 0;
pub const BODY_STOP_AND_BUFFER: u32 = 1;
pub const BODY_STOP_NO_BUFFER: u32 = 3;
pub const TRAILERS_CONTINUE: u32 = 0;
pub const TRAILERS_STOP_ITERATION: u32 = 1;
