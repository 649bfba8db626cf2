//! The benchmark's floor: a proxy-wasm filter that does what every body-reading
//! filter must (hold the request headers, buffer the body, then let the
//! request go) and nothing else. Compared with plain Envoy it shows the cost
//! of the wasm runtime; compared with Tollgate, the cost of Tollgate's own work.
//!
//! Its plugin configuration, if any, is a number N: the filter then also
//! reads the request headers N times once the body is in (one
//! `proxy_get_header_map_pairs` each, which re-enters the VM to allocate, as
//! most of Tollgate's hostcalls do). `make bench` runs it with N = 10 to
//! price one hostcall.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Floor { hostcalls: 0 }) });
}}

#[derive(Clone, Copy)]
struct Floor {
    /// Header reads per request.
    hostcalls: u32,
}

impl Context for Floor {}

impl RootContext for Floor {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten();
        self.hostcalls = raw.and_then(|r| String::from_utf8(r).ok()).and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(*self))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, _body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        for _ in 0..self.hostcalls {
            // The result is dropped; only the call's cost matters here.
            std::hint::black_box(hostcalls::get_map_bytes(MapType::HttpRequestHeaders)).ok();
        }
        Action::Continue
    }
}
