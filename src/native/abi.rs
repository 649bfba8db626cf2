//! Envoy's dynamic-module ABI: the types and callbacks this layer uses,
//! declared from `source/extensions/dynamic_modules/abi/abi.h` (ABI
//! `v0.1.x`, which Envoy 1.40's `v0.2.0` loads; every callback declared
//! here is one the 1.40 binary exports). Enums are plain `u32` values, so
//! that a value Envoy adds later is never undefined behaviour here.

use std::ffi::c_void;

/// The ABI version this module reports to Envoy.
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

pub type FilterEnvoy = *mut c_void;
pub type ConfigEnvoy = *mut c_void;
pub type ConfigScheduler = *mut c_void;

/// Bytes owned by Envoy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const EMPTY: Self = Self { ptr: std::ptr::null(), length: 0 };

    /// The bytes, valid for as long as Envoy keeps them (within the hook).
    ///
    /// # Safety
    /// `ptr` must point at `length` readable bytes, or be null.
    pub unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(self.ptr, self.length)
        }
    }
}

/// Bytes owned by the module.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> Self {
        Self { ptr: bytes.as_ptr(), length: bytes.len() }
    }

    pub const NULL: Self = Self { ptr: std::ptr::null(), length: 0 };
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

impl EnvoyHeader {
    pub const EMPTY: Self = Self { key_ptr: std::ptr::null(), key_length: 0, value_ptr: std::ptr::null(), value_length: 0 };

    /// # Safety
    /// The pointers must be valid for their lengths, or null.
    pub unsafe fn pair<'a>(self) -> (&'a [u8], &'a [u8]) {
        let key = EnvoyBuffer { ptr: self.key_ptr, length: self.key_length };
        let value = EnvoyBuffer { ptr: self.value_ptr, length: self.value_length };
        (key.bytes(), value.bytes())
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

impl ModuleHeader {
    pub fn of(key: &[u8], value: &[u8]) -> Self {
        Self { key_ptr: key.as_ptr(), key_length: key.len(), value_ptr: value.as_ptr(), value_length: value.len() }
    }
}

// envoy_dynamic_module_type_http_header_type
pub const REQUEST_HEADERS: u32 = 0;
pub const REQUEST_TRAILERS: u32 = 1;
pub const RESPONSE_HEADERS: u32 = 2;
pub const RESPONSE_TRAILERS: u32 = 3;

// envoy_dynamic_module_type_http_body_type
pub const RECEIVED_REQUEST_BODY: u32 = 0;
pub const BUFFERED_REQUEST_BODY: u32 = 1;
pub const RECEIVED_RESPONSE_BODY: u32 = 2;
pub const BUFFERED_RESPONSE_BODY: u32 = 3;

// Header hook statuses (request and response alike).
pub const HEADERS_CONTINUE: u32 = 0;
pub const HEADERS_STOP_ITERATION: u32 = 1;
// Body hook statuses.
pub const BODY_CONTINUE: u32 = 0;
pub const BODY_STOP_ITERATION_AND_BUFFER: u32 = 1;
// Trailer hook statuses.
pub const TRAILERS_CONTINUE: u32 = 0;
pub const TRAILERS_STOP_ITERATION: u32 = 1;

// envoy_dynamic_module_type_http_callout_init_result / _result
pub const CALLOUT_INIT_SUCCESS: u32 = 0;
pub const CALLOUT_SUCCESS: u32 = 0;

// envoy_dynamic_module_type_metrics_result
pub const METRICS_SUCCESS: u32 = 0;

// envoy_dynamic_module_type_log_level: Trace=0 … Critical=5, as proxy-wasm's.

extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);

    pub fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterEnvoy,
        header_type: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        count: *mut usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_headers_size(filter: FilterEnvoy, header_type: u32) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_headers(filter: FilterEnvoy, header_type: u32, result: *mut EnvoyHeader) -> bool;
    pub fn envoy_dynamic_module_callback_http_set_header(filter: FilterEnvoy, header_type: u32, key: ModuleBuffer, value: ModuleBuffer) -> bool;
    pub fn envoy_dynamic_module_callback_http_add_header(filter: FilterEnvoy, header_type: u32, key: ModuleBuffer, value: ModuleBuffer) -> bool;

    pub fn envoy_dynamic_module_callback_http_get_body_chunks_size(filter: FilterEnvoy, body_type: u32) -> usize;
    /// The body's length in bytes (0 when there is none): checked against
    /// the 1.40 binary, which returns `buffer->length()` or 0.
    pub fn envoy_dynamic_module_callback_http_get_body_size(filter: FilterEnvoy, body_type: u32) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks(filter: FilterEnvoy, body_type: u32, result: *mut EnvoyBuffer) -> bool;
    pub fn envoy_dynamic_module_callback_http_append_body(filter: FilterEnvoy, body_type: u32, data: ModuleBuffer) -> bool;
    pub fn envoy_dynamic_module_callback_http_drain_body(filter: FilterEnvoy, body_type: u32, bytes: usize) -> bool;
    pub fn envoy_dynamic_module_callback_http_received_buffered_request_body(filter: FilterEnvoy) -> bool;
    pub fn envoy_dynamic_module_callback_http_received_buffered_response_body(filter: FilterEnvoy) -> bool;

    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoy,
        status: u32,
        headers: *mut ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    pub fn envoy_dynamic_module_callback_http_clear_route_cache(filter: FilterEnvoy);

    pub fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: FilterEnvoy,
        callout_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *mut ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoy,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: ConfigEnvoy,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: ConfigEnvoy,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(config: ConfigEnvoy) -> ConfigScheduler;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler: ConfigScheduler, event: u64);
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: ConfigScheduler);

    pub fn envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
        config: ConfigEnvoy,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: ConfigEnvoy,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_gauge(
        config: ConfigEnvoy,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: ConfigEnvoy,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
        config: ConfigEnvoy,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterEnvoy,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_increment_gauge(
        filter: FilterEnvoy,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_decrement_gauge(
        filter: FilterEnvoy,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_set_gauge(
        filter: FilterEnvoy,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        filter: FilterEnvoy,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
}
