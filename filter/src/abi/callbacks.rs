//! Declarations of the Envoy callbacks this module calls, with Envoy 1.40's signatures.
//! `integration/tests/bindings.rs` checks every name here against the Envoy binary's exports.

use super::types::{EnvoyBuffer, EnvoyPtr, ModuleBuffer, ModuleHttpHeader};

// Unit tests link no Envoy, so the declarations exist only in the real module.
#[cfg(not(test))]
extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
    pub fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;

    pub fn envoy_dynamic_module_callback_http_get_header(
        filter: EnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: EnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter: EnvoyPtr,
        body_type: u32,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: EnvoyPtr,
        body_type: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_body_size(
        filter: EnvoyPtr,
        body_type: u32,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_received_buffered_request_body(
        filter: EnvoyPtr,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_set_buffer_limit(filter: EnvoyPtr, limit: u64);
    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: EnvoyPtr,
        status: u32,
        headers: *mut ModuleHttpHeader,
        headers_len: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    pub fn envoy_dynamic_module_callback_http_set_upstream_override_host(
        filter: EnvoyPtr,
        host: ModuleBuffer,
        strict: bool,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_cluster_name(
        filter: EnvoyPtr,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: EnvoyPtr,
        attribute: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_lb_get_cluster_name(
        lb: EnvoyPtr,
        result: *mut EnvoyBuffer,
    );
    pub fn envoy_dynamic_module_callback_lb_get_hosts_count(lb: EnvoyPtr, priority: u32) -> usize;
    pub fn envoy_dynamic_module_callback_lb_get_healthy_hosts_count(
        lb: EnvoyPtr,
        priority: u32,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_lb_get_host_address(
        lb: EnvoyPtr,
        priority: u32,
        index: usize,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_lb_get_healthy_host_address(
        lb: EnvoyPtr,
        priority: u32,
        index: usize,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_lb_get_host_health(
        lb: EnvoyPtr,
        priority: u32,
        index: usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_lb_context_get_downstream_header(
        context: EnvoyPtr,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_lb_context_should_select_another_host(
        lb: EnvoyPtr,
        context: EnvoyPtr,
        priority: u32,
        index: usize,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: EnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_count: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: EnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_count: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: EnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_count: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: EnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_count: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: EnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_count: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: EnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_count: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        filter: EnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_count: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: EnvoyPtr,
    ) -> EnvoyPtr;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: EnvoyPtr,
        event_id: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: EnvoyPtr);
}
