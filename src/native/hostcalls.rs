//! The proxy-wasm calls the filter makes (through the proxy-wasm SDK),
//! answered natively: headers and bodies through Envoy's dynamic-module
//! callbacks on the stream being served, shared data in process memory,
//! metrics as Envoy stats defined when the config loaded.
//!
//! The SDK panics on a status its wrapper does not expect for a call, so
//! each function returns only the statuses its wrapper accepts (a failure
//! it cannot report is logged instead).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use proxy_wasm::types::Status;

use super::abi::{self, EnvoyBuffer, EnvoyHeader, ModuleBuffer, ModuleHeader};
use super::{log_message, with_worker, Call, MetricSlot};

// proxy-wasm statuses.
const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const BAD_ARGUMENT: u32 = 2;
const CAS_MISMATCH: u32 = 8;
const INTERNAL_FAILURE: u32 = 10;

// proxy-wasm buffer and map types.
const HTTP_REQUEST_BODY: u32 = 0;
const HTTP_RESPONSE_BODY: u32 = 1;
const HTTP_CALL_RESPONSE_BODY: u32 = 4;
const PLUGIN_CONFIGURATION: u32 = 7;
const HTTP_REQUEST_HEADERS: u32 = 0;
const HTTP_REQUEST_TRAILERS: u32 = 1;
const HTTP_RESPONSE_HEADERS: u32 = 2;
const HTTP_RESPONSE_TRAILERS: u32 = 3;
const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;

extern "C" {
    /// The SDK's allocator: what it hands back to `Vec::from_raw_parts`.
    fn proxy_on_memory_allocate(size: usize) -> *mut u8;
}

/// Hands `bytes` to the SDK in memory it owns.
unsafe fn give(bytes: &[u8], data: *mut *mut u8, size: *mut usize) {
    let ptr = proxy_on_memory_allocate(bytes.len());
    if !ptr.is_null() && !bytes.is_empty() {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len());
    }
    *data = ptr;
    *size = bytes.len();
}

unsafe fn slice<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    EnvoyBuffer { ptr, length: len }.bytes()
}

/// proxy-wasm's map serialization: a count, the sizes, then each key and
/// value followed by a NUL.
fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(serialized_size(pairs));
    serialize_into(pairs, &mut out);
    out
}

fn serialized_size(pairs: &[(&[u8], &[u8])]) -> usize {
    4 + pairs.iter().map(|(k, v)| k.len() + v.len() + 10).sum::<usize>()
}

fn serialize_into(pairs: &[(&[u8], &[u8])], out: &mut Vec<u8>) {
    out.extend_from_slice(&u32::try_from(pairs.len()).unwrap_or(u32::MAX).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&u32::try_from(k.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
}

/// Hands a map to the SDK, serialized straight into memory it owns (one
/// copy of the headers, not two).
unsafe fn give_map(pairs: &[(&[u8], &[u8])], data: *mut *mut u8, size: *mut usize) {
    let len = serialized_size(pairs);
    let ptr = proxy_on_memory_allocate(len);
    if ptr.is_null() {
        *data = ptr;
        *size = 0;
        return;
    }
    // SAFETY: the SDK allocated `len` bytes at `ptr` for us to fill; the
    // vector never grows past them (`serialized_size` is exact), and is
    // forgotten so that the SDK alone frees the memory.
    let mut out = std::mem::ManuallyDrop::new(Vec::from_raw_parts(ptr, 0, len));
    serialize_into(pairs, &mut out);
    *data = out.as_mut_ptr();
    *size = out.len();
}

/// The inverse of [`serialize`]; stops at the first malformed entry.
pub(super) fn deserialize(bytes: &[u8]) -> Vec<(&[u8], &[u8])> {
    let word = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(b)).ok()
    };
    let mut out = Vec::new();
    let Some(count) = word(0) else { return out };
    let Some(mut at) = count.checked_mul(8).and_then(|n| n.checked_add(4)) else { return out };
    for i in 0..count {
        let (Some(klen), Some(vlen)) = (word(4 + i * 8), word(8 + i * 8)) else { break };
        let Some(key) = at.checked_add(klen).and_then(|end| bytes.get(at..end)) else { break };
        at = at.saturating_add(klen).saturating_add(1);
        let Some(value) = at.checked_add(vlen).and_then(|end| bytes.get(at..end)) else { break };
        at = at.saturating_add(vlen).saturating_add(1);
        out.push((key, value));
    }
    out
}

fn header_type(map_type: u32) -> Option<u32> {
    match map_type {
        HTTP_REQUEST_HEADERS => Some(abi::REQUEST_HEADERS),
        HTTP_REQUEST_TRAILERS => Some(abi::REQUEST_TRAILERS),
        HTTP_RESPONSE_HEADERS => Some(abi::RESPONSE_HEADERS),
        HTTP_RESPONSE_TRAILERS => Some(abi::RESPONSE_TRAILERS),
        _ => None,
    }
}

/// All of a header map, as (key, value) pairs pointing into Envoy.
unsafe fn envoy_headers<'a>(filter: abi::FilterEnvoy, kind: u32) -> Vec<(&'a [u8], &'a [u8])> {
    let n = abi::envoy_dynamic_module_callback_http_get_headers_size(filter, kind);
    if n == 0 {
        return Vec::new();
    }
    let mut headers = vec![EnvoyHeader::EMPTY; n];
    if !abi::envoy_dynamic_module_callback_http_get_headers(filter, kind, headers.as_mut_ptr()) {
        return Vec::new();
    }
    headers.iter().map(|h| h.pair()).collect()
}

/// Headers a map usually holds at most: listed on the stack.
const STACK_HEADERS: usize = 32;

/// Lends all of a header map to `f`, as (key, value) pairs pointing into
/// Envoy. A map of up to [`STACK_HEADERS`] is listed on the stack, without
/// allocating (a request's headers are read this way once each); a larger
/// one in vectors.
unsafe fn with_envoy_headers<R>(filter: abi::FilterEnvoy, kind: u32, f: impl FnOnce(&[(&[u8], &[u8])]) -> R) -> R {
    let n = abi::envoy_dynamic_module_callback_http_get_headers_size(filter, kind);
    if n > STACK_HEADERS {
        return f(&envoy_headers(filter, kind));
    }
    let mut headers = [EnvoyHeader::EMPTY; STACK_HEADERS];
    let Some(headers) = headers.get_mut(..n) else { return f(&[]) };
    if n == 0 || !abi::envoy_dynamic_module_callback_http_get_headers(filter, kind, headers.as_mut_ptr()) {
        return f(&[]);
    }
    let mut pairs: [(&[u8], &[u8]); STACK_HEADERS] = [(&[], &[]); STACK_HEADERS];
    for (pair, header) in pairs.iter_mut().zip(headers.iter()) {
        *pair = header.pair();
    }
    f(pairs.get(..n).unwrap_or_default())
}

/// Notes a change to the request headers: the route is matched again
/// before the request leaves (as Envoy does for wasm filters).
fn changed(kind: u32) {
    if kind == abi::REQUEST_HEADERS {
        with_worker(|w| w.request_headers_changed = true);
    }
}

#[no_mangle]
pub extern "C" fn proxy_log(level: u32, message: *const u8, size: usize) -> u32 {
    log_message(level, unsafe { slice(message, size) });
    OK
}

#[no_mangle]
pub extern "C" fn proxy_get_log_level(level: *mut u32) -> u32 {
    // The SDK filters by its own level; Envoy filters again.
    unsafe { *level = 0 };
    OK
}

#[no_mangle]
pub extern "C" fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    unsafe { *time = nanos };
    OK
}

/// There is no timer for an HTTP filter: the native build sends stats at
/// once and takes no key set from a URL, so the filter needs none.
#[no_mangle]
pub extern "C" fn proxy_set_tick_period_milliseconds(_period: u32) -> u32 {
    OK
}

/// The (buffered, received) body types of the request or the response.
fn body_types(request: bool) -> (u32, u32) {
    if request {
        (abi::BUFFERED_REQUEST_BODY, abi::RECEIVED_REQUEST_BODY)
    } else {
        (abi::BUFFERED_RESPONSE_BODY, abi::RECEIVED_RESPONSE_BODY)
    }
}

/// The body types [`for_each_chunk`] reads, in order: the received chunk
/// alone when Envoy already moved it into the buffer, else the buffer and
/// then the chunk.
unsafe fn body_kinds(filter: abi::FilterEnvoy, request: bool) -> ([u32; 2], usize) {
    let (buffered, received) = body_types(request);
    if received_is_buffer(filter, request) {
        ([received, received], 1)
    } else {
        ([buffered, received], 2)
    }
}

/// Where a body lies in Envoy (the body types of [`body_kinds`]) and how
/// much each holds: asked of Envoy once a hook, and kept for the hook's
/// later reads until the filter changes the body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyView {
    request: bool,
    kinds: [u32; 2],
    sizes: [usize; 2],
    n: usize,
}

impl BodyView {
    fn total(&self) -> usize {
        self.sizes.iter().take(self.n).fold(0, |total, &size| total.saturating_add(size))
    }
}

/// The current hook's [`BodyView`] of the request's or the response's body.
unsafe fn body_view(filter: abi::FilterEnvoy, request: bool) -> BodyView {
    if let Some(view) = with_worker(|w| w.body_view.filter(|v| v.request == request)) {
        return view;
    }
    let (kinds, n) = body_kinds(filter, request);
    let mut sizes = [0usize; 2];
    for (size, &kind) in sizes.iter_mut().zip(kinds.iter()).take(n) {
        *size = abi::envoy_dynamic_module_callback_http_get_body_size(filter, kind);
    }
    let view = BodyView { request, kinds, sizes, n };
    with_worker(|w| w.body_view = Some(view));
    view
}

/// The length of the body [`for_each_chunk`] reads, without reading it.
pub(super) unsafe fn body_size(filter: abi::FilterEnvoy, request: bool) -> usize {
    body_view(filter, request).total()
}

/// Calls `f` with the slices of [`for_each_chunk`], listed on the stack
/// when there are a few (as a rule), in a vector past that.
unsafe fn with_chunks<R>(filter: abi::FilterEnvoy, request: bool, f: impl FnOnce(&[&[u8]]) -> R) -> R {
    let mut small: [&[u8]; 4] = [&[]; 4];
    let mut large: Vec<&[u8]> = Vec::new();
    let mut n = 0usize;
    for_each_chunk(filter, request, |c| {
        if large.is_empty() {
            if let Some(slot) = small.get_mut(n) {
                *slot = c;
                n = n.saturating_add(1);
                return;
            }
            large.extend_from_slice(&small);
        }
        large.push(c);
    });
    if large.is_empty() {
        f(small.get(..n).unwrap_or_default())
    } else {
        f(&large)
    }
}

/// Calls `each` with every slice of the body a wasm filter would see, in
/// order: what Envoy buffered so far, and the chunk now arriving (unless
/// Envoy already moved it into the buffer).
unsafe fn for_each_chunk<'a>(filter: abi::FilterEnvoy, request: bool, mut each: impl FnMut(&'a [u8])) {
    let view = body_view(filter, request);
    // A body is a few chunks as a rule: their list is read onto the stack.
    let mut small = [EnvoyBuffer::EMPTY; 16];
    for (&kind, &size) in view.kinds.iter().zip(view.sizes.iter()).take(view.n) {
        if size == 0 {
            continue;
        }
        let n = abi::envoy_dynamic_module_callback_http_get_body_chunks_size(filter, kind);
        if n == 0 {
            continue;
        }
        let mut large = Vec::new();
        let chunks: &mut [EnvoyBuffer] = match small.get_mut(..n) {
            Some(s) => s,
            None => {
                large.resize(n, EnvoyBuffer::EMPTY);
                &mut large
            }
        };
        if abi::envoy_dynamic_module_callback_http_get_body_chunks(filter, kind, chunks.as_mut_ptr()) {
            for c in chunks.iter() {
                each(c.bytes());
            }
        }
    }
}

/// Lends the first `size` bytes of the request's or the response's body
/// (what `proxy_get_buffer_bytes` would copy out) to `f`. A body Envoy
/// holds in one slice, as a chunk of a stream or a small request is, is
/// read where it lies; one in several slices is joined into one copy.
/// None when no stream is being served.
///
/// The slices are valid until Envoy's buffer changes, so `f` must not
/// change the body (no `proxy_set_buffer_bytes` inside it).
pub(crate) fn with_body<R>(request: bool, size: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    let filter = with_worker(|w| w.filter);
    if filter.is_null() {
        return None;
    }
    let lend = |whole: &[u8]| f(whole.get(..size).unwrap_or(whole));
    // SAFETY: `filter` is the stream being served; the slices Envoy lends
    // are read before this function returns, and nothing here changes them.
    Some(unsafe {
        with_chunks(filter, request, |chunks| {
            let mut parts = chunks.iter().filter(|c| !c.is_empty());
            match (parts.next(), parts.next()) {
                (None, _) => lend(&[]),
                (Some(one), None) => lend(one),
                _ => lend(&chunks.concat()),
            }
        })
    })
}

/// Copies bytes `start..start + out.len()` of `chunks`, taken as one
/// buffer, into `out`; returns how many there were.
fn copy_range(chunks: &[&[u8]], start: usize, out: &mut [u8]) -> usize {
    let end = start.saturating_add(out.len());
    let (mut at, mut written) = (0usize, 0usize);
    for chunk in chunks {
        let chunk_end = at.saturating_add(chunk.len());
        let (from, to) = (start.max(at), end.min(chunk_end));
        if from < to {
            if let (Some(part), Some(dest)) = (chunk.get(from - at..to - at), out.get_mut(written..written + (to - from))) {
                dest.copy_from_slice(part);
                written += part.len();
            }
        }
        at = chunk_end;
    }
    written
}

/// `chunks`, taken as one buffer, with `size` bytes at `start` replaced by
/// `data`: built in one pass.
fn splice(chunks: &[&[u8]], start: usize, size: usize, data: &[u8]) -> Vec<u8> {
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let cut = start.min(total);
    let tail = cut.saturating_add(size).min(total);
    let mut new = Vec::with_capacity(total.saturating_sub(tail - cut).saturating_add(data.len()));
    let (mut at, mut placed) = (0usize, false);
    for chunk in chunks {
        let end = at.saturating_add(chunk.len());
        if at < cut {
            new.extend_from_slice(chunk.get(..cut.min(end) - at).unwrap_or_default());
        }
        if !placed && end >= cut {
            new.extend_from_slice(data);
            placed = true;
        }
        if end > tail {
            new.extend_from_slice(chunk.get(tail.max(at) - at..).unwrap_or_default());
        }
        at = end;
    }
    if !placed {
        new.extend_from_slice(data);
    }
    new
}

/// Hands bytes `start..start + max` of `chunks` to the SDK, copied once.
unsafe fn give_range(chunks: &[&[u8]], start: usize, max: usize, data: *mut *mut u8, size: *mut usize) {
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let len = start.saturating_add(max).min(total).saturating_sub(start);
    let ptr = proxy_on_memory_allocate(len);
    let written = if ptr.is_null() || len == 0 { 0 } else { copy_range(chunks, start, std::slice::from_raw_parts_mut(ptr, len)) };
    *data = ptr;
    *size = written;
}

#[no_mangle]
pub extern "C" fn proxy_get_buffer_bytes(buffer: u32, start: usize, max: usize, data: *mut *mut u8, size: *mut usize) -> u32 {
    let whole: Vec<u8> = match buffer {
        HTTP_REQUEST_BODY | HTTP_RESPONSE_BODY => {
            let filter = with_worker(|w| w.filter);
            if filter.is_null() {
                return NOT_FOUND;
            }
            unsafe { with_chunks(filter, buffer == HTTP_REQUEST_BODY, |chunks| give_range(chunks, start, max, data, size)) };
            return OK;
        }
        HTTP_CALL_RESPONSE_BODY => {
            let given = with_worker(|w| w.call.as_ref().map(|c| unsafe { give_range(&[c.body.as_slice()], start, max, data, size) }));
            return if given.is_some() { OK } else { NOT_FOUND };
        }
        PLUGIN_CONFIGURATION => match with_worker(|w| w.config_bytes.clone()) {
            Some(bytes) => bytes.to_vec(),
            None => return NOT_FOUND,
        },
        _ => return NOT_FOUND,
    };
    let end = start.saturating_add(max).min(whole.len());
    let part = whole.get(start.min(end)..end).unwrap_or_default();
    unsafe { give(part, data, size) };
    OK
}

/// Replaces `size` bytes at `start` of the body Envoy holds with `data`.
#[no_mangle]
pub extern "C" fn proxy_set_buffer_bytes(buffer: u32, start: usize, size: usize, data: *const u8, len: usize) -> u32 {
    let request = match buffer {
        HTTP_REQUEST_BODY => true,
        HTTP_RESPONSE_BODY => false,
        _ => return OK,
    };
    let filter = with_worker(|w| w.filter);
    if filter.is_null() {
        return OK;
    }
    unsafe {
        let data = slice(data, len);
        if edit_where_it_lies(filter, request, start, size, data) {
            with_worker(|w| w.body_view = None);
            return OK;
        }
        let new = with_chunks(filter, request, |chunks| splice(chunks, start, size, data));
        let (buffered, received) = body_types(request);
        let held = |kind| abi::envoy_dynamic_module_callback_http_get_body_size(filter, kind);
        let (in_buffer, in_received) = (held(buffered), held(received));
        // The new body goes where the old one was held: the buffer if
        // Envoy keeps one, else the arriving chunk.
        let target = if in_buffer > 0 { buffered } else { received };
        if in_buffer > 0 {
            abi::envoy_dynamic_module_callback_http_drain_body(filter, buffered, in_buffer);
        }
        if in_received > 0 && !(target == buffered && received_is_buffer(filter, request)) {
            abi::envoy_dynamic_module_callback_http_drain_body(filter, received, in_received);
        }
        if !abi::envoy_dynamic_module_callback_http_append_body(filter, target, ModuleBuffer::of(&new)) && !new.is_empty() {
            log_message(3, b"rewriting a body failed");
        }
    }
    // The body changed: the next read asks Envoy where it lies.
    with_worker(|w| w.body_view = None);
    OK
}

/// The most an edit may lengthen a body and still be made where the body
/// lies (the bytes pushed past its end are appended from the stack).
const TAIL_MAX: usize = 512;

/// Makes the edit of [`proxy_set_buffer_bytes`] in the slice Envoy holds
/// the body in, when it holds it in one (a small request, a response read
/// whole as a rule): Envoy lets a module write its body buffers in place.
/// What the edit moves past the slice's end is appended, and a shortened
/// body is drained from its front, so no copy of the body is made in the
/// module or in Envoy. False, with nothing changed, when the body lies in
/// several slices or the edit does not fit; the caller then rewrites it
/// whole.
unsafe fn edit_where_it_lies(filter: abi::FilterEnvoy, request: bool, start: usize, size: usize, data: &[u8]) -> bool {
    let Some((kind, chunk)) = sole_chunk(filter, request) else {
        return false;
    };
    let mut tail = [0u8; TAIL_MAX];
    let Some(done) = edit_in_place(chunk, start, size, data, &mut tail) else {
        return false;
    };
    let drained = done.drain == 0 || abi::envoy_dynamic_module_callback_http_drain_body(filter, kind, done.drain);
    let appended = tail
        .get(..done.append)
        .is_some_and(|t| t.is_empty() || abi::envoy_dynamic_module_callback_http_append_body(filter, kind, ModuleBuffer::of(t)));
    if !(drained && appended) {
        log_message(3, b"rewriting a body where it lies failed");
    }
    true
}

/// The body type and the one slice a body lies in, when it lies in one.
unsafe fn sole_chunk<'a>(filter: abi::FilterEnvoy, request: bool) -> Option<(u32, &'a mut [u8])> {
    let view = body_view(filter, request);
    let mut held = view.kinds.iter().zip(view.sizes.iter()).take(view.n).filter(|(_, &size)| size > 0);
    let (&kind, _) = held.next()?;
    if held.next().is_some() || abi::envoy_dynamic_module_callback_http_get_body_chunks_size(filter, kind) != 1 {
        return None;
    }
    let mut chunk = [EnvoyBuffer::EMPTY];
    if !abi::envoy_dynamic_module_callback_http_get_body_chunks(filter, kind, chunk.as_mut_ptr()) {
        return None;
    }
    let [chunk] = chunk;
    if chunk.ptr.is_null() || chunk.length == 0 {
        return None;
    }
    // SAFETY: Envoy lends the slice, writable (its SDK hands it out as a
    // mutable buffer), until the body changes; nothing else holds it.
    Some((kind, std::slice::from_raw_parts_mut(chunk.ptr.cast_mut(), chunk.length)))
}

/// What is left to do after [`edit_in_place`]: bytes to drain from the
/// body's front, and bytes (the start of the tail) to append at its end.
#[derive(Debug, PartialEq, Eq)]
struct InPlace {
    drain: usize,
    append: usize,
}

/// Replaces `body[start..start + size]` with `data` within `body`'s own
/// bytes. A shorter result is moved to the end of `body` (only the bytes
/// before the edit move), leaving `drain` bytes at the front to drop; a
/// longer one keeps its first `body.len()` bytes in `body` and puts the
/// rest in `tail`, to append. None, with `body` untouched, when the edit
/// reaches past the body or lengthens it by more than `tail` holds.
fn edit_in_place(body: &mut [u8], start: usize, size: usize, data: &[u8], tail: &mut [u8]) -> Option<InPlace> {
    let total = body.len();
    let end = start.checked_add(size).filter(|&end| end <= total)?;
    let len = data.len();
    if len <= size {
        let drain = size - len;
        // The bytes before the edit move right by `drain`; the edit's
        // bytes then end where the replaced ones ended.
        // `new_start` is at most `end`, so the move stays inside `body`
        // (`copy_within` panics otherwise).
        let new_start = start.checked_add(drain).filter(|&s| s <= end)?;
        body.copy_within(..start, drain);
        body.get_mut(new_start..end)?.copy_from_slice(data);
        return Some(InPlace { drain, append: 0 });
    }
    let grow = len - size;
    let tail = tail.get_mut(..grow)?;
    let data_end = start.checked_add(len)?;
    if data_end >= total {
        // The edit runs past the body's end: the rest of it, then all the
        // bytes after the replaced ones, are appended.
        let (inside, outside) = data.split_at_checked(total - start)?;
        let (from_data, from_body) = tail.split_at_mut_checked(outside.len())?;
        from_data.copy_from_slice(outside);
        from_body.copy_from_slice(body.get(end..)?);
        body.get_mut(start..)?.copy_from_slice(inside);
    } else {
        // The body's last `grow` bytes are appended; the bytes after the
        // edit move right by `grow` to end where the body ends.
        // `end + grow == data_end < total`: the moved bytes and their new
        // place both lie inside `body`.
        let kept = total - grow;
        tail.copy_from_slice(body.get(kept..)?);
        body.copy_within(end..kept, data_end);
        body.get_mut(start..data_end)?.copy_from_slice(data);
    }
    Some(InPlace { drain: 0, append: grow })
}

unsafe fn received_is_buffer(filter: abi::FilterEnvoy, request: bool) -> bool {
    if request {
        abi::envoy_dynamic_module_callback_http_received_buffered_request_body(filter)
    } else {
        abi::envoy_dynamic_module_callback_http_received_buffered_response_body(filter)
    }
}

#[no_mangle]
pub extern "C" fn proxy_get_header_map_pairs(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32 {
    if map_type == HTTP_CALL_RESPONSE_HEADERS {
        let bytes = with_worker(|w| {
            w.call.as_ref().map_or_else(
                || serialize(&[]),
                |c: &Call| serialize(&c.headers.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect::<Vec<_>>()),
            )
        });
        unsafe { give(&bytes, data, size) };
        return OK;
    }
    let filter = with_worker(|w| w.filter);
    unsafe {
        match header_type(map_type) {
            Some(kind) if !filter.is_null() => with_envoy_headers(filter, kind, |pairs| give_map(pairs, data, size)),
            _ => give_map(&[], data, size),
        }
    }
    OK
}

#[no_mangle]
pub extern "C" fn proxy_set_header_map_pairs(map_type: u32, data: *const u8, size: usize) -> u32 {
    let filter = with_worker(|w| w.filter);
    let Some(kind) = header_type(map_type).filter(|_| !filter.is_null()) else { return OK };
    let wanted = deserialize(unsafe { slice(data, size) });
    unsafe {
        let current: Vec<Vec<u8>> = envoy_headers(filter, kind).into_iter().map(|(k, _)| k.to_vec()).collect();
        for key in current.iter().filter(|k| !wanted.iter().any(|(w, _)| w == &k.as_slice())) {
            abi::envoy_dynamic_module_callback_http_set_header(filter, kind, ModuleBuffer::of(key), ModuleBuffer::NULL);
        }
        let mut set: Vec<&[u8]> = Vec::new();
        for (key, value) in &wanted {
            if set.contains(key) {
                abi::envoy_dynamic_module_callback_http_add_header(filter, kind, ModuleBuffer::of(key), ModuleBuffer::of(value));
            } else {
                abi::envoy_dynamic_module_callback_http_set_header(filter, kind, ModuleBuffer::of(key), ModuleBuffer::of(value));
                set.push(key);
            }
        }
    }
    changed(kind);
    OK
}

#[no_mangle]
pub extern "C" fn proxy_get_header_map_value(map_type: u32, key: *const u8, key_size: usize, data: *mut *mut u8, size: *mut usize) -> u32 {
    let key = unsafe { slice(key, key_size) };
    if map_type == HTTP_CALL_RESPONSE_HEADERS {
        let value = with_worker(|w| w.call.as_ref().and_then(|c| c.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())));
        return match value {
            Some(v) => {
                unsafe { give(&v, data, size) };
                OK
            }
            None => NOT_FOUND,
        };
    }
    let filter = with_worker(|w| w.filter);
    let Some(kind) = header_type(map_type).filter(|_| !filter.is_null()) else { return NOT_FOUND };
    let mut value = EnvoyBuffer::EMPTY;
    let found = unsafe {
        abi::envoy_dynamic_module_callback_http_get_header(filter, kind, ModuleBuffer::of(key), &mut value, 0, std::ptr::null_mut())
    };
    if !found {
        return NOT_FOUND;
    }
    unsafe { give(value.bytes(), data, size) };
    OK
}

/// Lends a response header's first value (None if absent) to `f`, read
/// where Envoy holds it.
pub(crate) fn with_response_header<R>(key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
    let filter = with_worker(|w| w.filter);
    if filter.is_null() {
        return f(None);
    }
    let mut value = EnvoyBuffer::EMPTY;
    // SAFETY: `filter` is the stream being served; the value Envoy lends
    // is read before this function returns, and nothing here changes it.
    let found = unsafe {
        abi::envoy_dynamic_module_callback_http_get_header(filter, abi::RESPONSE_HEADERS, ModuleBuffer::of(key), &mut value, 0, std::ptr::null_mut())
    };
    if found {
        f(Some(unsafe { value.bytes() }))
    } else {
        f(None)
    }
}

/// Sets (`add` false), appends (`add` true) or, with a null value, removes
/// a header of the current stream.
fn edit_header(map_type: u32, key: &[u8], value: ModuleBuffer, add: bool) -> u32 {
    let filter = with_worker(|w| w.filter);
    if let Some(kind) = header_type(map_type).filter(|_| !filter.is_null()) {
        unsafe {
            if add {
                abi::envoy_dynamic_module_callback_http_add_header(filter, kind, ModuleBuffer::of(key), value);
            } else {
                abi::envoy_dynamic_module_callback_http_set_header(filter, kind, ModuleBuffer::of(key), value);
            }
        }
        changed(kind);
    }
    OK
}

#[no_mangle]
pub extern "C" fn proxy_replace_header_map_value(map_type: u32, key: *const u8, key_size: usize, value: *const u8, value_size: usize) -> u32 {
    unsafe { edit_header(map_type, slice(key, key_size), ModuleBuffer::of(slice(value, value_size)), false) }
}

#[no_mangle]
pub extern "C" fn proxy_remove_header_map_value(map_type: u32, key: *const u8, key_size: usize) -> u32 {
    unsafe { edit_header(map_type, slice(key, key_size), ModuleBuffer::NULL, false) }
}

#[no_mangle]
pub extern "C" fn proxy_add_header_map_value(map_type: u32, key: *const u8, key_size: usize, value: *const u8, value_size: usize) -> u32 {
    unsafe { edit_header(map_type, slice(key, key_size), ModuleBuffer::of(slice(value, value_size)), true) }
}

/// A local reply is held until the filter's callback returns (as Envoy
/// does for wasm): sending it runs Envoy's hooks for the stream at once,
/// and the filter must not be re-entered.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn proxy_send_local_response(
    status: u32,
    details: *const u8,
    details_size: usize,
    body: *const u8,
    body_size: usize,
    headers: *const u8,
    headers_size: usize,
    _grpc_status: i32,
) -> u32 {
    let reply = unsafe {
        super::Reply {
            status,
            headers: deserialize(slice(headers, headers_size)).into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect(),
            body: slice(body, body_size).to_vec(),
            details: slice(details, details_size).to_vec(),
        }
    };
    with_worker(|w| w.reply = Some(reply));
    OK
}

/// The proxy-wasm form of [`http_call`], for a call made through the SDK
/// (the root context's key-set fetch, which the native build refuses at
/// configuration: a root has no stream to carry it).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn proxy_http_call(
    upstream: *const u8,
    upstream_size: usize,
    headers: *const u8,
    headers_size: usize,
    body: *const u8,
    body_size: usize,
    _trailers: *const u8,
    _trailers_size: usize,
    timeout_ms: u32,
    token: *mut u32,
) -> u32 {
    let called = unsafe {
        http_call(slice(upstream, upstream_size), &deserialize(slice(headers, headers_size)), slice(body, body_size), u64::from(timeout_ms))
    };
    match called {
        Ok(t) => {
            unsafe { *token = t };
            OK
        }
        Err(Status::InternalFailure) => INTERNAL_FAILURE,
        Err(_) => BAD_ARGUMENT,
    }
}

/// An HTTP call from the filter: Envoy's callout on the current stream,
/// answered in `on_http_filter_http_callout_done` with the token returned.
pub(crate) fn http_call(upstream: &[u8], headers: &[(&[u8], &[u8])], body: &[u8], timeout_ms: u64) -> Result<u32, Status> {
    let (filter, context) = with_worker(|w| (w.filter, w.context));
    if filter.is_null() || context == 0 {
        // No stream to carry the call (a root context's call).
        return Err(Status::InternalFailure);
    }
    let mut headers: Vec<ModuleHeader> = headers.iter().map(|(k, v)| ModuleHeader::of(k, v)).collect();
    let mut id: u64 = 0;
    let result = unsafe {
        abi::envoy_dynamic_module_callback_http_filter_http_callout(
            filter,
            &mut id,
            ModuleBuffer::of(upstream),
            headers.as_mut_ptr(),
            headers.len(),
            ModuleBuffer::of(body),
            timeout_ms,
        )
    };
    if result != abi::CALLOUT_INIT_SUCCESS {
        log_message(3, format!("an HTTP call to cluster {} could not start ({result})", String::from_utf8_lossy(upstream)).as_bytes());
        return Err(Status::BadArgument);
    }
    Ok(with_worker(|w| {
        w.next_token = w.next_token.wrapping_add(1).max(1);
        w.calls.insert((context, id), w.next_token);
        w.next_token
    }))
}

/// Shared data, as Envoy keeps it for wasm: one map for the process, a
/// version per key, compare-and-swap on the version (and, natively, a
/// record rewritten in one step under the lock: `modify_shared_data`).
type SharedMap = crate::fast_hash::FastMap<Vec<u8>, (Vec<u8>, u32)>;

fn shared() -> &'static Mutex<SharedMap> {
    static SHARED: OnceLock<Mutex<SharedMap>> = OnceLock::new();
    SHARED.get_or_init(|| Mutex::new(SharedMap::default()))
}

static NEXT_CAS: AtomicU32 = AtomicU32::new(1);

/// The SDK names the context an HTTP call's answer is for; the hook that
/// delivers it has already made that stream current.
#[no_mangle]
pub extern "C" fn proxy_set_effective_context(_context_id: u32) -> u32 {
    OK
}

#[no_mangle]
pub extern "C" fn proxy_get_shared_data(key: *const u8, key_size: usize, data: *mut *mut u8, size: *mut usize, cas: *mut u32) -> u32 {
    let key = unsafe { slice(key, key_size) };
    let Ok(map) = shared().lock() else { return NOT_FOUND };
    match map.get(key) {
        Some((value, version)) => {
            unsafe {
                give(value, data, size);
                *cas = *version;
            }
            OK
        }
        None => NOT_FOUND,
    }
}

#[no_mangle]
pub extern "C" fn proxy_set_shared_data(key: *const u8, key_size: usize, value: *const u8, value_size: usize, cas: u32) -> u32 {
    let (key, value) = unsafe { (slice(key, key_size), slice(value, value_size)) };
    let Ok(mut map) = shared().lock() else { return CAS_MISMATCH };
    let version = NEXT_CAS.fetch_add(1, Ordering::Relaxed).max(1);
    match map.get_mut(key) {
        Some((_, current)) if cas != 0 && cas != *current => CAS_MISMATCH,
        Some((held, current)) => {
            // The value's buffer is reused: a record keeps its size.
            held.clear();
            held.extend_from_slice(value);
            *current = version;
            OK
        }
        None => {
            map.insert(key.to_vec(), (value.to_vec(), version));
            OK
        }
    }
}

/// Reads and rewrites a shared value under the map's lock: `f` rewrites
/// it where it lies ([`crate::shared::Rewrite`]: no copy out, and its
/// buffer reused), and a value kept gets a new version for any reader's
/// compare-and-swap. False if the lock is poisoned.
pub(crate) fn modify_shared_data(key: &[u8], f: &mut crate::shared::Rewrite<'_>) -> bool {
    let Ok(mut map) = shared().lock() else { return false };
    match map.get_mut(key) {
        Some((value, version)) => {
            if f(value, true) {
                *version = NEXT_CAS.fetch_add(1, Ordering::Relaxed).max(1);
            }
        }
        None => {
            let mut new = Vec::new();
            if f(&mut new, false) {
                map.insert(key.to_vec(), (new, NEXT_CAS.fetch_add(1, Ordering::Relaxed).max(1)));
            }
        }
    }
    true
}

/// A metric by its stat name (`base;label=value;…`): the Envoy metric
/// defined for its base and label names, and its label values.
#[no_mangle]
pub extern "C" fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32 {
    let name = unsafe { slice(name, name_size) };
    let found = with_worker(|w| {
        let key = (w.config_id(), name.to_vec());
        if let Some(&known) = w.metric_ids.get(&key) {
            return known;
        }
        let slot = w.config_metric(kind, name);
        let next = u32::try_from(w.metrics.len()).unwrap_or(u32::MAX);
        w.metrics.push(slot);
        w.metric_ids.insert(key, next);
        next
    });
    unsafe { *id = found };
    OK
}

/// Hands a change to the metric's batch, if its series goes there: `f`
/// gets the batch, the series (its number and its changes) and the
/// metric's kind, and says whether the batch took the change.
fn batched(id: u32, f: impl FnOnce(&super::batch::Batch, &super::batch::SeriesRef, u32) -> bool) -> bool {
    with_worker(|w| {
        let Some(slot) = w.metrics.get(usize::try_from(id).unwrap_or(usize::MAX)) else { return false };
        let Some((batch, series)) = slot.batch.as_ref() else { return false };
        f(batch, series, slot.kind)
    })
}

fn record(id: u32, f: impl FnOnce(abi::FilterEnvoy, &MetricSlot, &mut Vec<ModuleBuffer>) -> u32) -> u32 {
    with_worker(|w| {
        let Some(slot) = w.metrics.get(usize::try_from(id).unwrap_or(usize::MAX)) else { return NOT_FOUND };
        if w.filter.is_null() || slot.envoy_id.is_none() {
            return OK;
        }
        let mut values: Vec<ModuleBuffer> = slot.values.iter().map(|v| ModuleBuffer::of(v)).collect();
        if f(w.filter, slot, &mut values) != abi::METRICS_SUCCESS {
            log_message(3, format!("recording metric {} failed", String::from_utf8_lossy(&slot.name)).as_bytes());
        }
        OK
    })
}

#[no_mangle]
pub extern "C" fn proxy_increment_metric(id: u32, offset: i64) -> u32 {
    if batched(id, |batch, series, kind| match kind {
        super::HISTOGRAM => offset >= 0 && batch.record(series, offset.unsigned_abs()),
        _ => {
            batch.add(series, offset);
            true
        }
    }) {
        return OK;
    }
    record(id, |filter, slot, values| {
        let (n, ptr, len) = (slot.envoy_id.unwrap_or_default(), values.as_mut_ptr(), values.len());
        let by = offset.unsigned_abs();
        unsafe {
            match (slot.kind, offset >= 0) {
                (super::COUNTER, _) => abi::envoy_dynamic_module_callback_http_filter_increment_counter(filter, n, ptr, len, by),
                (super::GAUGE, true) => abi::envoy_dynamic_module_callback_http_filter_increment_gauge(filter, n, ptr, len, by),
                (super::GAUGE, false) => abi::envoy_dynamic_module_callback_http_filter_decrement_gauge(filter, n, ptr, len, by),
                _ => abi::envoy_dynamic_module_callback_http_filter_record_histogram_value(filter, n, ptr, len, by),
            }
        }
    })
}

#[no_mangle]
pub extern "C" fn proxy_record_metric(id: u32, value: u64) -> u32 {
    if batched(id, |batch, series, kind| match kind {
        super::HISTOGRAM => batch.record(series, value),
        _ => {
            batch.set(series, value);
            true
        }
    }) {
        return OK;
    }
    record(id, |filter, slot, values| {
        let (n, ptr, len) = (slot.envoy_id.unwrap_or_default(), values.as_mut_ptr(), values.len());
        unsafe {
            match slot.kind {
                super::GAUGE => abi::envoy_dynamic_module_callback_http_filter_set_gauge(filter, n, ptr, len, value),
                super::HISTOGRAM => abi::envoy_dynamic_module_callback_http_filter_record_histogram_value(filter, n, ptr, len, value),
                _ => abi::envoy_dynamic_module_callback_http_filter_increment_counter(filter, n, ptr, len, value),
            }
        }
    })
}

// Calls the SDK can make but the filter never does (queues, gRPC,
// properties, foreign functions, stream control). They are answered "not
// found", or "done" where the SDK's wrapper accepts nothing else.

/// Envoy gives a module no way to read a metric back.
#[no_mangle]
pub extern "C" fn proxy_get_metric(_id: u32, _value: *mut u64) -> u32 {
    NOT_FOUND
}

#[no_mangle]
pub extern "C" fn proxy_call_foreign_function(_name: *const u8, _name_size: usize, _args: *const u8, _args_size: usize, _data: *mut *mut u8, _size: *mut usize) -> u32 {
    NOT_FOUND
}

#[no_mangle]
pub extern "C" fn proxy_close_stream(_stream_type: u32) -> u32 {
    OK
}

#[no_mangle]
pub extern "C" fn proxy_continue_stream(_stream_type: u32) -> u32 {
    OK
}

#[no_mangle]
pub extern "C" fn proxy_done() -> u32 {
    OK
}


#[no_mangle]
pub extern "C" fn proxy_get_property(_path: *const u8, _path_size: usize, _data: *mut *mut u8, _size: *mut usize) -> u32 {
    NOT_FOUND
}

#[no_mangle]
pub extern "C" fn proxy_set_property(_path: *const u8, _path_size: usize, _value: *const u8, _value_size: usize) -> u32 {
    NOT_FOUND
}

#[no_mangle]
pub extern "C" fn proxy_get_status(_code: *mut u32, _data: *mut *mut u8, _size: *mut usize) -> u32 {
    NOT_FOUND
}

#[no_mangle]
pub extern "C" fn proxy_register_shared_queue(_name: *const u8, _name_size: usize, _id: *mut u32) -> u32 {
    NOT_FOUND
}

#[no_mangle]
pub extern "C" fn proxy_resolve_shared_queue(_vm: *const u8, _vm_size: usize, _name: *const u8, _name_size: usize, _id: *mut u32) -> u32 {
    NOT_FOUND
}

#[no_mangle]
pub extern "C" fn proxy_enqueue_shared_queue(_queue: u32, _value: *const u8, _value_size: usize) -> u32 {
    NOT_FOUND
}

#[no_mangle]
pub extern "C" fn proxy_dequeue_shared_queue(_queue: u32, _data: *mut *mut u8, _size: *mut usize) -> u32 {
    NOT_FOUND
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn proxy_grpc_call(
    _upstream: *const u8,
    _upstream_size: usize,
    _service: *const u8,
    _service_size: usize,
    _method: *const u8,
    _method_size: usize,
    _metadata: *const u8,
    _metadata_size: usize,
    _message: *const u8,
    _message_size: usize,
    _timeout: u32,
    _id: *mut u32,
) -> u32 {
    BAD_ARGUMENT
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn proxy_grpc_stream(
    _upstream: *const u8,
    _upstream_size: usize,
    _service: *const u8,
    _service_size: usize,
    _method: *const u8,
    _method_size: usize,
    _metadata: *const u8,
    _metadata_size: usize,
    _id: *mut u32,
) -> u32 {
    BAD_ARGUMENT
}

#[no_mangle]
pub extern "C" fn proxy_grpc_send(_token: u32, _message: *const u8, _message_size: usize, _end: bool) -> u32 {
    NOT_FOUND
}

#[no_mangle]
pub extern "C" fn proxy_grpc_cancel(_token: u32) -> u32 {
    NOT_FOUND
}

#[no_mangle]
pub extern "C" fn proxy_grpc_close(_token: u32) -> u32 {
    NOT_FOUND
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_read_and_spliced_across_chunks() {
        let body = b"{\"model\":\"gpt-4o-mini\",\"messages\":[]}";
        for a in 0..=body.len() {
            for b in a..=body.len() {
                let chunks: Vec<&[u8]> = vec![&body[..a], &body[a..b], &body[b..]];
                for (start, size) in [(0, 0), (0, 5), (9, 13), (body.len(), 0), (3, 100)] {
                    let mut want = body.to_vec();
                    let cut = start.min(body.len());
                    want.splice(cut..(cut + size).min(body.len()), b"XY".iter().copied());
                    assert_eq!(splice(&chunks, start, size, b"XY"), want, "chunks at {a},{b}; {start}+{size}");
                }
                let mut out = vec![0u8; 7];
                assert_eq!(copy_range(&chunks, 5, &mut out), 7);
                assert_eq!(&out, &body[5..12]);
            }
        }
        assert_eq!(splice(&[], 0, 0, b"new"), b"new");
    }

    #[test]
    fn edits_made_where_the_body_lies() {
        let body = b"{\"model\":\"gpt-4o-mini\",\"messages\":[]}";
        let datas: [&[u8]; 5] = [b"", b"X", b"XYZ", b"{\"model\":\"gpt-4o-mini-2024-07-18\"", &[b'#'; 60]];
        for start in 0..=body.len() {
            for size in 0..=body.len() - start {
                for data in datas {
                    let mut want = body.to_vec();
                    want.splice(start..start + size, data.iter().copied());
                    let mut held = body.to_vec();
                    let mut tail = [0u8; 64];
                    let done = edit_in_place(&mut held, start, size, data, &mut tail).unwrap();
                    // What Envoy then does: drain the front, append the tail.
                    let mut got = held[done.drain..].to_vec();
                    got.extend_from_slice(&tail[..done.append]);
                    assert_eq!(got, want, "{start}+{size} with {} bytes", data.len());
                }
            }
        }
    }

    #[test]
    fn edits_that_do_not_fit_leave_the_body_alone() {
        let body = b"0123456789";
        let mut held = body.to_vec();
        let mut tail = [0u8; 4];
        // Past the end, or longer by more than the tail holds.
        assert_eq!(edit_in_place(&mut held, 8, 3, b"x", &mut tail), None);
        assert_eq!(edit_in_place(&mut held, 11, 0, b"x", &mut tail), None);
        assert_eq!(edit_in_place(&mut held, 2, 1, b"abcdef", &mut tail), None);
        assert_eq!(&held, body);
        // Longer by exactly the tail: made.
        assert_eq!(edit_in_place(&mut held, 2, 1, b"abcde", &mut tail), Some(InPlace { drain: 0, append: 4 }));
        assert_eq!([&held[..], &tail[..]].concat(), b"01abcde3456789");
    }

    #[test]
    fn maps_round_trip() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b":status", b"200"), (b"x", b""), (b"set-cookie", b"a=1")];
        assert_eq!(deserialize(&serialize(&pairs)), pairs);
        assert!(deserialize(&[]).is_empty());
        // Truncated: what is whole is kept.
        let bytes = serialize(&pairs);
        assert_eq!(deserialize(&bytes[..bytes.len() - 5]).len(), 2);
    }
}
