//! Renders the Envoy bootstrap that runs the gateway: one listener with the
//! wasm filter, one cluster per distinct upstream, and the admin interface.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::admission::CLUSTER_HEADER;
use crate::config::{Compiled, ConfigFile};
use crate::upstream::UpstreamUrl;

/// Where the rendered Envoy listens and finds things.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub listen_address: String,
    pub port: u16,
    pub admin_address: String,
    pub admin_port: u16,
    /// Absolute path of tollgate.wasm, or of libtollgate.so with `native`.
    pub wasm_path: String,
    /// Load the native build (an Envoy dynamic module) instead of the wasm.
    pub native: bool,
    /// CA bundle for TLS upstreams.
    pub ca_file: String,
    /// Timeout for a whole upstream response (LLM answers are slow).
    pub route_timeout_secs: u64,
    /// Also serve a stand-in OpenAI-compatible provider on this port (demo).
    pub demo_provider_port: Option<u16>,
}

/// CA bundles in the places common distributions keep them.
pub const CA_CANDIDATES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

pub fn default_ca_file() -> String {
    CA_CANDIDATES
        .iter()
        .find(|p| Path::new(p).exists())
        .map_or(CA_CANDIDATES[0], |p| *p)
        .to_string()
}

const ROOT_ID: &str = "tollgate";

/// The Envoy bootstrap, as a JSON value (serialised to YAML by the CLI).
pub fn bootstrap(file: &ConfigFile, compiled: &Compiled, opts: &RenderOptions) -> Value {
    let gw = &compiled.gateway;
    // One cluster per distinct upstream, in a stable order.
    let mut upstreams: BTreeMap<&str, &UpstreamUrl> = BTreeMap::new();
    for d in &gw.deployments {
        upstreams.entry(d.cluster.as_str()).or_insert(&d.url);
    }
    // The JWKS URI's host, for the filter's key fetches.
    if let Some(jwks) = gw.jwt.as_ref().and_then(|j| j.jwks.as_ref()) {
        upstreams.entry(jwks.cluster.as_str()).or_insert(&jwks.url);
    }
    let mut clusters: Vec<Value> = upstreams
        .iter()
        .map(|(name, url)| upstream_cluster(name, url, &opts.ca_file))
        .collect();
    clusters.push(json!({
        "name": "tollgate_admin",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "tollgate_admin",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket(&opts.admin_address, opts.admin_port)}}]}]
        }
    }));

    // The filter gets the user's config as JSON; secrets stay os.environ/ references.
    let plugin_config = serde_json::to_string(file).unwrap_or_default();
    let not_found = crate::errors::ApiError::unknown_path().body();

    let filter = if opts.native {
        // The same filter as a native dynamic module; it reads the
        // environment itself, so no keys are passed on.
        json!({
            "name": "tollgate",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
                "dynamic_module_config": {
                    "module": {"local": {"filename": opts.wasm_path}},
                    "do_not_close": true
                },
                "filter_name": ROOT_ID,
                "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": plugin_config}
            }
        })
    } else {
        json!({
            "name": "tollgate",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": ROOT_ID,
                    "root_id": ROOT_ID,
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": plugin_config
                    },
                    "vm_config": {
                        "vm_id": ROOT_ID,
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": opts.wasm_path}},
                        "environment_variables": {"host_env_keys": compiled.env_keys}
                    },
                    "allow_on_headers_stop_iteration": true
                }
            }
        })
    };
    let hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "tollgate",
        "codec_type": "AUTO",
        "local_reply_config": local_reply_config(gw.max_body_bytes),
        "route_config": {
            "name": "tollgate",
            "virtual_hosts": [{
                "name": "tollgate",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"prefix": "/", "headers": [{"name": CLUSTER_HEADER, "present_match": true}]},
                        "route": {
                            "cluster_header": CLUSTER_HEADER,
                            "timeout": format!("{}s", opts.route_timeout_secs),
                        },
                        "request_headers_to_remove": [CLUSTER_HEADER]
                    },
                    {
                        "match": {"path": "/metrics"},
                        "route": {"cluster": "tollgate_admin", "prefix_rewrite": "/stats/prometheus"}
                    },
                    {
                        "match": {"prefix": "/"},
                        "direct_response": {"status": 404, "body": {"inline_string": not_found}},
                        "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}]
                    }
                ]
            }]
        },
        "http_filters": [
            filter,
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
            }
        ]
    });

    // Room for a whole request of the largest allowed size. A larger body may
    // meet this limit before the filter sees it (Envoy checks it as data
    // arrives); that 413 is reshaped by local_reply_config, so the client
    // gets the same OpenAI-shaped error either way.
    let buffer_limit = gw.max_body_bytes.saturating_add(1024 * 1024);
    let mut listeners = vec![json!({
        "name": "tollgate",
        "address": socket(&opts.listen_address, opts.port),
        "per_connection_buffer_limit_bytes": buffer_limit,
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]
    })];
    if let Some(port) = opts.demo_provider_port {
        listeners.push(demo_provider(&opts.listen_address, port));
    }
    let stats_tags: Vec<Value> = crate::metrics::stats_tags()
        .into_iter()
        .map(|(tag, regex)| json!({"tag_name": tag, "regex": regex}))
        .collect();
    let mut bootstrap = json!({
        "node": {"id": "tollgate", "cluster": "tollgate"},
        "stats_config": {"stats_tags": stats_tags, "use_all_default_tags": true},
        "admin": {"address": socket(&opts.admin_address, opts.admin_port)},
        "static_resources": {
            "listeners": listeners,
            "clusters": clusters
        }
    });
    if opts.native {
        // A dynamic module's stats are named as a wasm filter's
        // (`tollgate_requests_total`, not under `envoy_dynamicmodulescustom_`).
        if let Some(b) = bootstrap.as_object_mut() {
            b.insert(
                "layered_runtime".to_string(),
                json!({"layers": [{"name": "tollgate", "static_layer": {
                    "envoy.reloadable_features.dynamic_modules_strip_custom_stat_prefix": true
                }}]}),
            );
        }
    }
    bootstrap
}

/// Envoy's own error replies (a body over its buffer limit, an upstream that
/// cannot be reached, a timeout) in OpenAI's error shape, so that SDKs can
/// read them. The filter's replies (with no response code details from the
/// wasm build, `tollgate` from the native one) and direct responses (the 404
/// route) are already JSON, and are left alone.
fn local_reply_config(max_body_bytes: usize) -> Value {
    let cel = |expression: &str| {
        json!({"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": expression
            }
        }})
    };
    let too_large = crate::errors::ApiError::too_large_unknown(max_body_bytes);
    json!({"mappers": [
        {
            "filter": cel("response.code_details == 'request_payload_too_large'"),
            "body_format_override": {"json_format": {"error": {
                "message": too_large.message, "type": too_large.kind, "param": null, "code": null
            }}}
        },
        {
            "filter": cel("response.code_details != '' && response.code_details != 'direct_response' && response.code_details != 'tollgate'"),
            "body_format_override": {"json_format": {"error": {
                "message": "%LOCAL_REPLY_BODY% (%RESPONSE_CODE_DETAILS%)",
                "type": "gateway_error",
                "param": null,
                "code": null
            }}}
        }
    ]})
}

fn socket(address: &str, port: u16) -> Value {
    json!({"socket_address": {"address": address, "port_value": port}})
}

fn upstream_cluster(name: &str, url: &UpstreamUrl, ca_file: &str) -> Value {
    // Envoy's stat tags split names on dots; keep the host's dots out of stats.
    let stat_name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let mut cluster = json!({
        "name": name,
        "alt_stat_name": stat_name,
        "type": if url.is_ip() { "STATIC" } else { "LOGICAL_DNS" },
        "connect_timeout": "10s",
        "dns_lookup_family": "V4_PREFERRED",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket(&url.host, url.port)}}]}]
        }
    });
    if url.tls {
        // A host name goes in SNI and must be a DNS name of the certificate;
        // an IP address cannot be sent as SNI and must be an IP SAN.
        let san_type = if url.is_ip() { "IP_ADDRESS" } else { "DNS" };
        let mut tls = json!({
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "validation_context": {
                    "trusted_ca": {"filename": ca_file},
                    "match_typed_subject_alt_names": [{"san_type": san_type, "matcher": {"exact": url.host}}]
                }
            }
        });
        if let (false, Some(obj)) = (url.is_ip(), tls.as_object_mut()) {
            obj.insert("sni".to_string(), json!(url.host));
        }
        if let Some(obj) = cluster.as_object_mut() {
            obj.insert(
                "transport_socket".to_string(),
                json!({"name": "envoy.transport_sockets.tls", "typed_config": tls}),
            );
        }
    }
    cluster
}

/// A stand-in provider for the demo: fixed OpenAI-shaped answers, served by
/// Envoy itself, so `make envoy-up` works offline.
fn demo_provider(address: &str, port: u16) -> Value {
    let chat = json!({
        "id": "chatcmpl-demo", "object": "chat.completion", "created": 1_700_000_000, "model": "demo",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hello from the Tollgate demo provider."}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17}
    });
    let completion = json!({
        "id": "cmpl-demo", "object": "text_completion", "created": 1_700_000_000, "model": "demo",
        "choices": [{"index": 0, "finish_reason": "stop", "text": "Hello from the Tollgate demo provider."}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 8, "total_tokens": 12}
    });
    let embedding = json!({
        "object": "list", "model": "demo",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
        "usage": {"prompt_tokens": 4, "total_tokens": 4}
    });
    let route = |suffix: &str, body: &Value| {
        json!({
            "match": {"safe_regex": {"regex": format!("(/v1)?{suffix}")}},
            "direct_response": {"status": 200, "body": {"inline_string": body.to_string()}},
            "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}]
        })
    };
    json!({
        "name": "demo_provider",
        "address": socket(address, port),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "demo_provider",
                "route_config": {"virtual_hosts": [{
                    "name": "demo_provider", "domains": ["*"],
                    "routes": [route("/chat/completions", &chat), route("/completions", &completion), route("/embeddings", &embedding)]
                }]},
                "http_filters": [{"name": "envoy.filters.http.router",
                                  "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
            }
        }]}]
    })
}
