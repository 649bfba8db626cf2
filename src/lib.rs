//! Tollgate: an AI model gateway that runs inside Envoy as a proxy-wasm filter.
//!
//! The decisions live in plain modules that never call the host:
//!
//! | module | decides |
//! |---|---|
//! | [`config`] | what the config file says, checked and indexed |
//! | [`request`] | which endpoint a path is |
//! | [`header_list`] | request headers as the host serialized them, read in place |
//! | [`json_scan`] | where the model is in a body, without parsing it all |
//! | [`json_skim`] | one value read out of a provider's JSON, without checking it all |
//! | [`auth`] | which team a key or a JWT belongs to |
//! | [`jwt`] | JWT verification: keys, algorithms, claims |
//! | [`access`] | whether that team may use that model |
//! | [`routing`] | which deployment serves the request: strategies, cooldowns |
//! | [`limits`] | team rate limits: requests and tokens a minute, requests in flight |
//! | [`shared`] | records shared by all workers, updated by compare-and-swap |
//! | [`budget`] | team budgets: reserve, settle, compare-and-swap |
//! | [`accounting`] | what a request cost, once its response is known |
//! | [`pricing`] | prices and the cost of a request |
//! | [`usage`] | token counts in provider responses |
//! | [`metrics`] | metric names and their Prometheus labels |
//! | [`sse`] | server-sent events, parsed across chunk boundaries |
//! | [`streaming`] | usage and content counted in streamed responses |
//! | [`response`] | how a response is read: copied, metered or translated |
//! | [`providers`] | what each provider expects upstream |
//! | [`anthropic`] | OpenAI chat completions to and from Anthropic Messages |
//! | [`upstream`] | api_base URLs and cluster names |
//! | [`admission`] | the request path, step by step |
//! | [`errors`] | OpenAI-shaped errors |
//! | [`key_info`] | the caller's own standing, for `GET /v1/key/info` |
//! | [`period`] | budget periods: when spend starts again |
//!
//! `filter` (wasm32, or feature `native`) maps proxy-wasm callbacks onto
//! them; `native` (feature `native`) serves those callbacks from Envoy's
//! dynamic-module ABI; `render` (feature `cli`) writes the Envoy config.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)
)]

pub mod access;
pub mod accounting;
pub mod admission;
pub mod anthropic;
pub mod auth;
pub mod budget;
pub mod config;
pub mod errors;
pub mod fast_hash;
pub mod header_list;
pub mod json_scan;
pub mod json_skim;
pub mod key_info;
pub mod jwt;
pub mod limits;
pub mod metrics;
pub mod period;
pub mod pricing;
pub mod providers;
pub mod request;
pub mod response;
pub mod routing;
pub mod shared;
pub mod sse;
pub mod streaming;
pub mod upstream;
pub mod usage;

#[cfg(any(all(target_arch = "wasm32", not(feature = "bench-floor")), feature = "native"))]
mod filter;

/// The native build (`--features native`): the same filter as an Envoy
/// dynamic module.
#[cfg(feature = "native")]
mod native;

/// For `make bench` only: a filter that does nothing but hold the headers
/// and buffer the body, to show what the wasm runtime itself costs.
#[cfg(all(target_arch = "wasm32", feature = "bench-floor"))]
mod floor;

#[cfg(feature = "cli")]
pub mod render;
