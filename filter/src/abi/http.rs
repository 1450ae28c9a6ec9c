//! The HTTP filter's hooks and the safe `EnvoyHttpFilter` handle over Envoy's callbacks.

use std::ffi::c_void;
use std::sync::Arc;

use smallvec::{smallvec, SmallVec};

use super::callbacks::*;
use super::metrics::{labels, ConfigMetrics};
use super::types::*;
use crate::envoy::{BodyStatus, EnvoyHttpFilter, HeadersStatus};
use crate::guarded_stream::GuardedStream;
use crate::logging::{log, Level};
use crate::metrics::{self, MetricIds};
use crate::module_config::ModuleConfig;
use crate::panic_guard::catch;
use crate::ticker::Ticker;

/// The filter name envoy.yaml must give (`filter_name`).
const FILTER_NAME: &[u8] = b"inference-scheduler";

/// One Envoy stream's filter pointer, valid for the duration of a hook.
struct Handle(EnvoyPtr);

/// # Safety
/// `buf` must be a buffer Envoy filled during the current hook.
unsafe fn envoy_bytes<'a>(buf: &EnvoyBuffer) -> Option<&'a [u8]> {
    // SAFETY: the caller vouches that `buf` describes bytes Envoy keeps alive for this hook.
    (!buf.ptr.is_null())
        .then(|| unsafe { std::slice::from_raw_parts(buf.ptr.cast::<u8>(), buf.length) })
}

impl Handle {
    fn set_header(&mut self, header_type: u32, name: &str, value: &str) -> bool {
        // SAFETY: `self.0` is the live filter pointer of this hook; buffers are read during the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.0,
                header_type,
                name.into(),
                value.into(),
            )
        }
    }

    fn append_chunks(&self, body_type: u32, out: &mut Vec<u8>) {
        self.visit_chunks(body_type, &mut |bytes| out.extend_from_slice(bytes));
    }

    /// Calls `visit` with each chunk of `body_type`, in place.
    fn visit_chunks(&self, body_type: u32, visit: &mut dyn FnMut(&[u8])) {
        // SAFETY: Envoy fills exactly `count` buffers that stay valid until the hook returns.
        unsafe {
            let count = envoy_dynamic_module_callback_http_get_body_chunks_size(self.0, body_type);
            if count == 0 {
                return;
            }
            // Bodies arrive in a few chunks: no heap allocation for the list in the common case.
            let mut chunks: SmallVec<[EnvoyBuffer; 16]> = smallvec![EnvoyBuffer::EMPTY; count];
            if !envoy_dynamic_module_callback_http_get_body_chunks(
                self.0,
                body_type,
                chunks.as_mut_ptr(),
            ) {
                return;
            }
            for chunk in &chunks {
                if let Some(bytes) = envoy_bytes(chunk) {
                    visit(bytes);
                }
            }
        }
    }

    /// The chunk being delivered is separate from the buffered body unless Envoy says otherwise.
    fn received_is_separate(&self) -> bool {
        // SAFETY: plain query on the live filter pointer.
        unsafe { !envoy_dynamic_module_callback_http_received_buffered_request_body(self.0) }
    }

    fn string_attribute(&self, attribute: u32) -> Option<&str> {
        let mut buf = EnvoyBuffer::EMPTY;
        // SAFETY: Envoy fills `buf` with memory of the stream's, valid for this hook, which
        // bounds the returned `&str` (through `&self`).
        unsafe {
            if !envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.0, attribute, &mut buf,
            ) {
                return None;
            }
            envoy_bytes(&buf).and_then(|b| std::str::from_utf8(b).ok())
        }
    }
}

impl Handle {
    fn header(&self, header_type: u32, name: &str) -> Option<&[u8]> {
        let mut buf = EnvoyBuffer::EMPTY;
        // SAFETY: the header value lives in Envoy's header map, which we do not modify while the
        // returned slice (bound to `&self`, i.e. this hook) is in use.
        unsafe {
            let found = envoy_dynamic_module_callback_http_get_header(
                self.0,
                header_type,
                name.into(),
                &mut buf,
                0,
                std::ptr::null_mut(),
            );
            if found {
                envoy_bytes(&buf)
            } else {
                None
            }
        }
    }
}

impl EnvoyHttpFilter for Handle {
    fn request_header(&self, name: &str) -> Option<&[u8]> {
        self.header(HEADER_REQUEST, name)
    }

    fn response_header(&self, name: &str) -> Option<&[u8]> {
        self.header(HEADER_RESPONSE, name)
    }

    fn set_request_header(&mut self, name: &str, value: &str) -> bool {
        self.set_header(HEADER_REQUEST, name, value)
    }

    fn set_response_header(&mut self, name: &str, value: &str) -> bool {
        self.set_header(HEADER_RESPONSE, name, value)
    }

    fn set_buffer_limit(&mut self, bytes: u64) {
        // SAFETY: plain call on the live filter pointer.
        unsafe { envoy_dynamic_module_callback_http_set_buffer_limit(self.0, bytes) }
    }

    fn request_body_size(&self) -> u64 {
        // SAFETY: plain queries on the live filter pointer.
        unsafe {
            let mut size =
                envoy_dynamic_module_callback_http_get_body_size(self.0, BODY_BUFFERED_REQUEST);
            if self.received_is_separate() {
                size +=
                    envoy_dynamic_module_callback_http_get_body_size(self.0, BODY_RECEIVED_REQUEST);
            }
            size as u64
        }
    }

    fn visit_response_chunk(&self, visit: &mut dyn FnMut(&[u8])) {
        self.visit_chunks(BODY_RECEIVED_RESPONSE, visit);
    }

    fn read_request_body(&self, out: &mut Vec<u8>) {
        self.append_chunks(BODY_BUFFERED_REQUEST, out);
        if self.received_is_separate() {
            self.append_chunks(BODY_RECEIVED_REQUEST, out);
        }
    }

    fn send_response(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8], details: &str) {
        let mut headers: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHttpHeader {
                key_ptr: k.as_ptr().cast(),
                key_length: k.len(),
                value_ptr: v.as_ptr().cast(),
                value_length: v.len(),
            })
            .collect();
        // SAFETY: Envoy copies headers, body and details during the call.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.0,
                status,
                headers.as_mut_ptr(),
                headers.len(),
                body.into(),
                details.into(),
            );
        }
    }

    fn cluster_name(&self) -> Option<&str> {
        let mut buf = EnvoyBuffer::EMPTY;
        // SAFETY: Envoy fills `buf` with the route's cluster name, valid for this hook, which
        // bounds the returned `&str` (through `&self`).
        unsafe {
            if !envoy_dynamic_module_callback_http_get_cluster_name(self.0, &mut buf) {
                return None;
            }
            envoy_bytes(&buf).and_then(|b| std::str::from_utf8(b).ok())
        }
    }

    fn set_upstream_override_host(&mut self, address: &str) -> bool {
        // SAFETY: live filter pointer; Envoy copies the address.
        unsafe {
            envoy_dynamic_module_callback_http_set_upstream_override_host(
                self.0,
                address.into(),
                false,
            )
        }
    }

    fn upstream_address(&self) -> Option<&str> {
        self.string_attribute(ATTRIBUTE_UPSTREAM_ADDRESS)
    }

    fn increment_counter(&mut self, id: usize, values: &[&str], value: u64) {
        let mut l = labels(values);
        // SAFETY: live filter pointer; labels are read during the call.
        unsafe {
            envoy_dynamic_module_callback_http_filter_increment_counter(
                self.0,
                id,
                l.ptr(),
                l.len(),
                value,
            )
        };
    }

    fn record_histogram(&mut self, id: usize, values: &[&str], value: u64) {
        let mut l = labels(values);
        // SAFETY: as in `increment_counter`.
        unsafe {
            envoy_dynamic_module_callback_http_filter_record_histogram_value(
                self.0,
                id,
                l.ptr(),
                l.len(),
                value,
            )
        };
    }
}

/// The stream Envoy holds for us behind `module`.
///
/// # Safety
/// `module` must be the `GuardedStream` boxed in `on_http_filter_new`, not yet destroyed. Envoy
/// calls one stream's hooks one at a time, on its worker thread, so the `&mut` is exclusive.
unsafe fn stream<'a>(module: ModulePtr) -> &'a mut GuardedStream {
    // SAFETY: as the caller vouches (see above).
    unsafe { &mut *(module as *mut GuardedStream) }
}

/// A scheduler pointer Envoy gave us; committing to it from another thread is what it is for.
struct MainThreadScheduler(EnvoyPtr);

// SAFETY: Envoy documents `config_scheduler_commit` as callable from any thread.
unsafe impl Send for MainThreadScheduler {}

/// What Envoy holds for one filter config.
struct ConfigSlot {
    config: Arc<ModuleConfig>,
    /// Asks Envoy once a second to run `on_http_filter_config_scheduled` on its main thread.
    ticker: Option<Ticker>,
    main_thread: EnvoyPtr,
}

impl Drop for ConfigSlot {
    fn drop(&mut self) {
        // Stop committing before the scheduler goes away.
        drop(self.ticker.take());
        // SAFETY: created in config_new, deleted exactly once, after its last commit.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.main_thread)
        };
    }
}

/// How often pod and index state is reported into Envoy's stats.
const REPORT_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: EnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ModulePtr {
    // SAFETY: both buffers are valid for this call.
    let (name, config) = unsafe {
        (
            envoy_bytes(&name).unwrap_or(b""),
            envoy_bytes(&config).unwrap_or(b""),
        )
    };
    let built = catch("http_filter_config_new", || {
        if name != FILTER_NAME {
            return Err(format!(
                "unknown filter_name {:?}: this module provides \"inference-scheduler\"",
                String::from_utf8_lossy(name)
            ));
        }
        let mut config = ModuleConfig::from_json(config)
            .map_err(|e| format!("inference-scheduler filter config: {e}"))?;
        config.metrics = Some(MetricIds::define(&mut ConfigMetrics(config_envoy))?);
        // SAFETY: the config pointer is live; the scheduler is deleted in `ConfigSlot::drop`.
        let main_thread =
            unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(config_envoy) };
        let mut slot = ConfigSlot {
            config: Arc::new(config),
            ticker: None,
            main_thread,
        };
        let commit_to = MainThreadScheduler(main_thread);
        let ticker = Ticker::start("inference-scheduler-stats", REPORT_PERIOD, move || {
            let scheduler = &commit_to;
            // SAFETY: the ticker is stopped before the scheduler is deleted.
            unsafe {
                envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler.0, 0)
            };
        })
        .map_err(|e| format!("cannot start the stats thread: {e}"))?;
        slot.ticker = Some(ticker);
        Ok(slot)
    });
    match built {
        Ok(Ok(slot)) => {
            log(Level::Info, "inference-scheduler: filter config loaded");
            Box::into_raw(Box::new(slot)) as ModulePtr
        }
        Ok(Err(message)) => {
            log(Level::Error, &message);
            std::ptr::null()
        }
        Err(_) => std::ptr::null(),
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: ModulePtr) {
    // SAFETY: `config` came from `Box::into_raw` in config_new and Envoy destroys it once.
    drop(unsafe { Box::from_raw(config as *mut ConfigSlot) });
}

/// Envoy's main thread, once a second: report pod and index state into Envoy's stats.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    config_envoy: EnvoyPtr,
    config: ModulePtr,
    _event_id: u64,
) {
    // SAFETY: Envoy calls this only while the config lives.
    let slot = unsafe { &*(config as *const ConfigSlot) };
    let _ = catch("http_filter_config_scheduled", || {
        if let Some(ids) = &slot.config.metrics {
            metrics::report(ids, &mut ConfigMetrics(config_envoy));
        }
    });
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ModulePtr,
    _envoy: EnvoyPtr,
) -> ModulePtr {
    // SAFETY: `config` is alive for as long as filters made from it.
    let slot = unsafe { &*(config as *const ConfigSlot) };
    Box::into_raw(Box::new(GuardedStream::new(Arc::clone(&slot.config)))) as ModulePtr
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(module: ModulePtr) {
    // SAFETY: `module` came from `Box::into_raw` in filter_new and Envoy destroys it once.
    drop(unsafe { Box::from_raw(module as *mut GuardedStream) });
}

fn headers_status(s: HeadersStatus) -> u32 {
    match s {
        HeadersStatus::Continue => HEADERS_CONTINUE,
        HeadersStatus::StopIteration => HEADERS_STOP_ITERATION,
    }
}

fn body_status(s: BodyStatus) -> u32 {
    match s {
        BodyStatus::Continue => BODY_CONTINUE,
        BodyStatus::StopIterationAndBuffer => BODY_STOP_AND_BUFFER,
        BodyStatus::StopIterationNoBuffer => BODY_STOP_NO_BUFFER,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: EnvoyPtr,
    module: ModulePtr,
    end_of_stream: bool,
) -> u32 {
    // SAFETY: `module` is this stream's `GuardedStream` (see `stream`).
    unsafe { stream(module) }.request(
        &mut Handle(envoy),
        "request_headers",
        HEADERS_STOP_ITERATION,
        |f, h| headers_status(f.on_request_headers(h, end_of_stream)),
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    envoy: EnvoyPtr,
    module: ModulePtr,
    end_of_stream: bool,
) -> u32 {
    // SAFETY: `module` is this stream's `GuardedStream` (see `stream`).
    unsafe { stream(module) }.request(
        &mut Handle(envoy),
        "request_body",
        BODY_STOP_NO_BUFFER,
        |f, h| body_status(f.on_request_body(h, end_of_stream)),
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    envoy: EnvoyPtr,
    module: ModulePtr,
) -> u32 {
    // SAFETY: `module` is this stream's `GuardedStream` (see `stream`).
    unsafe { stream(module) }.request(
        &mut Handle(envoy),
        "request_trailers",
        TRAILERS_STOP_ITERATION,
        |f, h| match f.on_request_trailers(h) {
            HeadersStatus::Continue => TRAILERS_CONTINUE,
            HeadersStatus::StopIteration => TRAILERS_STOP_ITERATION,
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: EnvoyPtr,
    module: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: `module` is this stream's `GuardedStream` (see `stream`).
    unsafe { stream(module) }.response(
        &mut Handle(envoy),
        "response_headers",
        HEADERS_CONTINUE,
        |f, h| headers_status(f.on_response_headers(h)),
    )
}

// Response bodies (SSE streams included) pass through as they come; the filter only reads
// them (to learn the answer). Trailers pass through untouched.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    envoy: EnvoyPtr,
    module: ModulePtr,
    end_of_stream: bool,
) -> u32 {
    // SAFETY: `module` is this stream's `GuardedStream` (see `stream`).
    unsafe { stream(module) }.response(
        &mut Handle(envoy),
        "response_body",
        BODY_CONTINUE,
        |f, h| {
            f.on_response_body(h, end_of_stream);
            BODY_CONTINUE
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _: EnvoyPtr,
    _: ModulePtr,
) -> u32 {
    TRAILERS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(_: EnvoyPtr, _: ModulePtr) {}

// Hooks Envoy 1.40 requires but this filter does not use: HTTP callouts and streams it never
// starts, schedulers it never creates, and downstream flow control it leaves to Envoy.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _: EnvoyPtr,
    _: ModulePtr,
    _id: u64,
    _result: u32,
    _headers: *const c_void,
    _headers_len: usize,
    _chunks: *const EnvoyBuffer,
    _chunks_len: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _: EnvoyPtr,
    _: ModulePtr,
    _id: u64,
    _headers: *const c_void,
    _len: usize,
    _end: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _: EnvoyPtr,
    _: ModulePtr,
    _id: u64,
    _data: *const EnvoyBuffer,
    _count: usize,
    _end: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _: EnvoyPtr,
    _: ModulePtr,
    _id: u64,
    _trailers: *const c_void,
    _len: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _: EnvoyPtr,
    _: ModulePtr,
    _id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _: EnvoyPtr,
    _: ModulePtr,
    _id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _: EnvoyPtr,
    _: ModulePtr,
    _event: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _: EnvoyPtr,
    _: ModulePtr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _: EnvoyPtr,
    _: ModulePtr,
) {
}
