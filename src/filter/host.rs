//! Hostcalls. The SDK's trait helpers unwrap every status, and its string
//! getters panic on non-UTF-8 values, so the filter calls `hostcalls::*`
//! through these functions instead. Those return an error for the statuses
//! the ABI documents for each call (NotFound, CasMismatch, ...), which are
//! handled here; the SDK still panics on a status outside that list, which
//! Envoy does not return for the calls and phases the filter uses (the
//! tests exercise each one).

use std::time::{Duration, UNIX_EPOCH};

use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};

use crate::admission::HeaderEdit;
use crate::errors::ApiError;
use crate::header_list::HeaderList;

extern "C" {
    /// The proxy-wasm ABI call behind the SDK's `get_map_bytes`, called
    /// directly so that the map stays in the one buffer the host filled.
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
}

/// All request headers, in one hostcall, kept as the host serialized them.
pub fn request_headers() -> HeaderList {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a buffer it allocated through the SDK's
    // `proxy_on_memory_allocate` (a boxed slice of exactly `size` bytes),
    // which this function then owns, as the SDK's own wrapper does.
    let status = unsafe { proxy_get_header_map_pairs(MapType::HttpRequestHeaders as u32, &mut data, &mut size) };
    if status != 0 {
        warn!("reading the request headers failed: status {status}");
        return HeaderList::default();
    }
    if data.is_null() || size == 0 {
        return HeaderList::default();
    }
    HeaderList::from_serialized(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// A header's value among `headers`. A value that is not text is returned as
/// an empty string, so the checks refuse it instead of treating it as absent.
pub fn find<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| std::str::from_utf8(v).unwrap_or_default())
}

/// Applies the forward's header changes to the request Envoy holds: one
/// hostcall for each header that actually changes (`admission::each_header_edit`).
pub fn rewrite_request_headers(headers: &HeaderList, changes: &[(&'static str, Option<std::borrow::Cow<'_, str>>)]) -> bool {
    crate::admission::each_header_edit(headers, changes, |name, edit| match edit {
        HeaderEdit::Add(value) => match hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value) {
            Ok(()) => true,
            Err(status) => {
                warn!("adding header {name} failed: {status:?}");
                false
            }
        },
        HeaderEdit::Set(value) => set_request_header(name, Some(value)),
        HeaderEdit::Remove => set_request_header(name, None),
    })
}

/// Lends a response header's value (None if absent) to `f`: where Envoy
/// holds it in the native build, a copy in wasm.
pub fn with_response_header<R>(name: &str, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
    #[cfg(feature = "native")]
    {
        crate::native::with_response_header(name.as_bytes(), f)
    }
    #[cfg(not(feature = "native"))]
    {
        match hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name) {
            Ok(value) => f(value.as_deref()),
            Err(status) => {
                warn!("reading header {name} failed: {status:?}");
                f(None)
            }
        }
    }
}

/// The response's status code.
pub fn response_status() -> Option<u16> {
    with_response_header(":status", |v| std::str::from_utf8(v?).ok()?.parse().ok())
}

pub fn set_request_header(name: &str, value: Option<&str>) -> bool {
    set_header(MapType::HttpRequestHeaders, name, value)
}

pub fn set_response_header(name: &str, value: Option<&str>) -> bool {
    set_header(MapType::HttpResponseHeaders, name, value)
}

/// Sets (or, with `None`, removes) a header.
fn set_header(map: MapType, name: &str, value: Option<&str>) -> bool {
    match hostcalls::set_map_value(map, name, value) {
        Ok(()) => true,
        Err(status) => {
            warn!("setting header {name} failed: {status:?}");
            false
        }
    }
}

/// The first `size` bytes of a body. An empty one costs no hostcall: Envoy
/// often ends a body with an empty chunk, and every hostcall counts.
pub fn body(buffer: BufferType, size: usize) -> Result<Vec<u8>, Status> {
    if size == 0 {
        return Ok(Vec::new());
    }
    hostcalls::get_buffer(buffer, 0, size).map(Option::unwrap_or_default)
}

/// Lends the first `size` bytes of the request's or the response's body to
/// `f`. The native build reads them where Envoy holds them when they lie
/// in one slice; wasm copies them into the VM, as it must. `f` must not
/// change the body: the bytes it is lent may be Envoy's own.
pub fn with_body<R>(buffer: BufferType, size: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R, Status> {
    if size == 0 {
        return Ok(f(&[]));
    }
    #[cfg(feature = "native")]
    {
        let request = match buffer {
            BufferType::HttpRequestBody => Some(true),
            BufferType::HttpResponseBody => Some(false),
            _ => None,
        };
        if let Some(request) = request {
            return crate::native::with_body(request, size, f).ok_or(Status::NotFound);
        }
    }
    body(buffer, size).map(|bytes| f(&bytes))
}

/// Sends an HTTP call to `cluster`; its answer comes to the context's
/// `on_http_call_response` with the token returned. The native build makes
/// the call itself: the SDK's would file the token under the context its
/// dispatcher last served, which the native build does not use.
pub fn dispatch_http_call(cluster: &str, headers: Vec<(&str, &str)>, body: &[u8], timeout: Duration) -> Result<u32, Status> {
    #[cfg(feature = "native")]
    {
        let headers: Vec<(&[u8], &[u8])> = headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect();
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        crate::native::http_call(cluster.as_bytes(), &headers, body, timeout_ms)
    }
    #[cfg(not(feature = "native"))]
    {
        hostcalls::dispatch_http_call(cluster, headers, Some(body), vec![], timeout)
    }
}

pub fn send_json(status: u16, body: &str) {
    let headers = vec![("content-type", "application/json")];
    if let Err(s) = hostcalls::send_http_response(u32::from(status), headers, Some(body.as_bytes())) {
        warn!("sending a local response failed: {s:?}");
    }
}

pub fn send_error(error: &ApiError) {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(error.headers.iter().map(|(k, v)| (*k, v.as_str())));
    if let Err(s) = hostcalls::send_http_response(u32::from(error.status), headers, Some(error.body().as_bytes())) {
        warn!("sending a local response failed: {s:?}");
    }
}

/// Milliseconds since the epoch, from the host's clock.
pub fn now_ms() -> u64 {
    match hostcalls::get_current_time() {
        Ok(t) => t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        Err(status) => {
            warn!("reading the clock failed: {status:?}");
            0
        }
    }
}

/// proxy-wasm shared data: one store for every worker VM of this plugin.
pub struct SharedData;

impl crate::shared::Store for SharedData {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String> {
        hostcalls::get_shared_data(key).map_err(|s| format!("reading shared data {key}: {s:?}"))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, String> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(true),
            Err(Status::CasMismatch) => Ok(false),
            Err(s) => Err(format!("writing shared data {key}: {s:?}")),
        }
    }

    /// The native build keeps shared data in its own memory: a record is
    /// read and rewritten there under its lock, in one step.
    #[cfg(feature = "native")]
    fn modify(&self, key: &str, f: &mut crate::shared::Rewrite<'_>) -> Option<Result<(), String>> {
        Some(if crate::native::modify_shared_data(key.as_bytes(), f) {
            Ok(())
        } else {
            Err(format!("updating shared data {key}: its lock is poisoned"))
        })
    }
}
