//! Accounting through a real Envoy: tokens, spend, budgets and denials, read
//! back from `/metrics` as Prometheus would.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::upstream::{Reply, Upstream};
use common::*;
use serde_json::json;

/// Prices chosen so every cost is a whole number of micro-USD:
/// 1 µUSD per input token, 0.5 per cached input token, 2 per output token.
/// The fake provider reports 10 prompt tokens (4 of them cached) and 5
/// completion tokens, so one request costs 6×1 + 4×0.5 + 5×2 = 18 µUSD.
const COST: u64 = 18;

fn provider() -> Upstream {
    Upstream::start(|req| {
        let model = req.json()["model"].clone();
        if req.path.ends_with("/embeddings") {
            return Reply::json(200, json!({"object": "list", "model": model,
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}],
                "usage": {"prompt_tokens": 7, "total_tokens": 7}}));
        }
        Reply::json(
            200,
            json!({"id": "c1", "object": "chat.completion", "created": 1, "model": model,
                   "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
                   "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                             "prompt_tokens_details": {"cached_tokens": 4}}}),
        )
    })
}

fn config(up: &Upstream, budget_usd: &str) -> String {
    let base = up.base_url();
    format!(
        r#"
model_list:
  - model_name: gpt-4.1-mini
    litellm_params: {{model: openai/gpt-4.1-mini, api_base: "{base}/v1", api_key: os.environ/TEST_PROVIDER_KEY}}
    model_info: {{input_cost_per_token: 0.000001, output_cost_per_token: 0.000002, cache_read_input_token_cost: 0.0000005}}
  - model_name: text-embedding-3-small
    litellm_params: {{model: openai/text-embedding-3-small, api_base: "{base}/v1", api_key: os.environ/TEST_PROVIDER_KEY}}
    model_info: {{input_cost_per_token: 0.000001, output_cost_per_token: 0}}
user_access:
  - user_id: team.alpha-1
    models: [gpt-4.1-mini, text-embedding-3-small]
    max_budget: {budget_usd}
    api_keys: [os.environ/TEAM_ALPHA_KEY]
  - user_id: team-beta
    models: [text-embedding-3-small]
    api_keys: ["sha256:{BETA_DIGEST}"]
general_settings:
  # Send every stat change at once, so a scrape right after a request sees it.
  stats_flush_interval_ms: 0
"#
    )
}

type Labels = BTreeMap<String, String>;

/// Parses Prometheus text into (name, labels) → value.
fn scrape(gw: &Gateway, path: &str, port: u16) -> BTreeMap<(String, Labels), f64> {
    let text = get(&format!("http://127.0.0.1:{port}{path}"), None).unwrap().body;
    let _ = gw;
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("tollgate_")) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels: Labels = labels
            .split("\",")
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once("=\"").unwrap();
                (k.to_string(), v.trim_end_matches('"').to_string())
            })
            .collect();
        out.insert((name.to_string(), labels), value.parse().unwrap());
    }
    out
}

fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels: Labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    scrape(gw, "/metrics", gw.port).get(&(name.to_string(), labels)).copied()
}

const TEAM: &str = "team.alpha-1";
const MODEL: &str = "gpt-4.1-mini";

fn chat(gw: &Gateway, max_tokens: u32) -> Resp {
    let body = json!({"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "Hello!"}]});
    gw.post("/v1/chat/completions", Some(ALPHA_KEY), &body.to_string())
}

#[test]
fn tokens_and_spend_are_exact_after_n_requests() {
    let up = provider();
    let gw = Gateway::start(&config(&up, "1000.0"), &standard_env());
    let n = 7u64;
    for _ in 0..n {
        assert_eq!(chat(&gw, 64).status, 200);
    }
    for _ in 0..3 {
        let r = gw.post("/v1/embeddings", Some(ALPHA_KEY), r#"{"model":"text-embedding-3-small","input":"hi"}"#);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let chat_labels = |kind: &'static str| [("team", TEAM), ("model", MODEL), ("provider", "openai"), ("type", kind)];
    assert_eq!(metric(&gw, "tollgate_tokens_total", &chat_labels("input")), Some((n * 6) as f64));
    assert_eq!(metric(&gw, "tollgate_tokens_total", &chat_labels("cached_input")), Some((n * 4) as f64));
    assert_eq!(metric(&gw, "tollgate_tokens_total", &chat_labels("output")), Some((n * 5) as f64));
    assert_eq!(
        metric(&gw, "tollgate_requests_total", &[("team", TEAM), ("model", MODEL), ("provider", "openai"), ("code", "200")]),
        Some(n as f64)
    );
    assert_eq!(metric(&gw, "tollgate_spend_micro_usd_total", &[("team", TEAM), ("model", MODEL)]), Some((n * COST) as f64));

    let emb = "text-embedding-3-small";
    assert_eq!(
        metric(&gw, "tollgate_tokens_total", &[("team", TEAM), ("model", emb), ("provider", "openai"), ("type", "input")]),
        Some(21.0)
    );
    assert_eq!(metric(&gw, "tollgate_spend_micro_usd_total", &[("team", TEAM), ("model", emb)]), Some(21.0));

    // The gauge: 1000 USD less what was spent.
    let spent = n * COST + 21;
    assert_eq!(
        metric(&gw, "tollgate_budget_remaining_micro_usd", &[("team", TEAM)]),
        Some((1_000_000_000 - spent) as f64)
    );
    // The admin's /stats/prometheus says the same.
    let admin = scrape(&gw, "/stats/prometheus", gw.admin_port);
    assert_eq!(admin, scrape(&gw, "/metrics", gw.port));

    // Durations: a histogram, merged by Envoy on its flush timer.
    let deadline = Instant::now() + Duration::from_secs(12);
    let labels = [("team", TEAM), ("model", MODEL), ("provider", "openai")];
    while metric(&gw, "tollgate_request_duration_milliseconds_count", &labels) != Some(n as f64) {
        assert!(Instant::now() < deadline, "histogram never reached {n}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_team_at_its_budget_gets_429_insufficient_quota() {
    let up = provider();
    // 50 µUSD. Each request reserves ~13 prompt tokens + 5 output = ~23 µUSD
    // and settles at 18: admitted at 0, 18, 36; refused at 54.
    let gw = Gateway::start(&config(&up, "0.00005"), &standard_env());
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(chat(&gw, 5).status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    let r = chat(&gw, 5);
    let v = r.assert_error(429, Some("insufficient_quota"));
    assert_eq!(v["error"]["type"], "insufficient_quota");
    assert!(v["error"]["message"].as_str().unwrap().contains("team.alpha-1"), "{v}");
    assert_eq!(up.requests().len(), 3, "refused requests never reach the provider");

    let spent = metric(&gw, "tollgate_spend_micro_usd_total", &[("team", TEAM), ("model", MODEL)]).unwrap();
    assert_eq!(spent, (3 * COST) as f64);
    assert!(spent <= (50 + COST) as f64, "spend passed the budget by more than one request");
    assert_eq!(metric(&gw, "tollgate_budget_remaining_micro_usd", &[("team", TEAM)]), Some(0.0));
    assert_eq!(metric(&gw, "tollgate_denied_total", &[("team", TEAM), ("reason", "budget_exceeded")]), Some(4.0));
    // Teams without a budget are not held back.
    let r = gw.post("/v1/embeddings", Some(BETA_KEY), r#"{"model":"text-embedding-3-small","input":"hi"}"#);
    assert_eq!(r.status, 200);
}

#[test]
fn forty_concurrent_requests_cannot_overrun_a_nearly_spent_budget() {
    // The provider answers slowly, so all 40 requests are in flight together.
    let slow = Upstream::start(|req| {
        std::thread::sleep(Duration::from_millis(400));
        let model = req.json()["model"].clone();
        Reply::json(200, json!({"object": "chat.completion", "model": model, "choices": [],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4}}}))
    });
    // 100 µUSD. Each request reserves its worst case w (~32 µUSD), and is
    // admitted while spent + reserved < 100: so exactly ceil(100 / w) are
    // admitted, however the 40 interleave across the two workers.
    let gw = Gateway::start_with(&config(&slow, "0.0001"), &standard_env(), 2);
    let worst = {
        // The reservation: prompt bytes / 4 at 1 µUSD, plus max_tokens at 2 µUSD.
        let body = json!({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "Hello!"}]}).to_string();
        (body.len() as u64).div_ceil(4) + 5 * 2
    };
    let barrier = Arc::new(Barrier::new(40));
    let url = gw.url("/v1/chat/completions");
    let handles: Vec<_> = (0..40)
        .map(|_| {
            let (barrier, url) = (Arc::clone(&barrier), url.clone());
            std::thread::spawn(move || {
                let body = json!({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "Hello!"}]});
                barrier.wait();
                post_bytes(&url, Some(ALPHA_KEY), body.to_string().as_bytes(), &[]).unwrap().status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let admitted = statuses.iter().filter(|s| **s == 200).count() as u64;
    assert_eq!(statuses.iter().filter(|s| **s == 429).count() as u64, 40 - admitted, "{statuses:?}");
    assert_eq!(admitted, 100u64.div_ceil(worst), "reservations of {worst} µUSD against 100: {statuses:?}");
    assert_eq!(slow.requests().len() as u64, admitted);

    let spent = metric(&gw, "tollgate_spend_micro_usd_total", &[("team", TEAM), ("model", MODEL)]).unwrap() as u64;
    assert_eq!(spent, admitted * COST);
    assert!(spent <= 100 + COST, "spend {spent} passed the budget by more than one request");
    assert_eq!(metric(&gw, "tollgate_denied_total", &[("team", TEAM), ("reason", "budget_exceeded")]), Some((40 - admitted) as f64));
    // Every reservation was settled: with room left, the next request passes.
    assert_eq!(
        metric(&gw, "tollgate_budget_remaining_micro_usd", &[("team", TEAM)]),
        Some(100u64.saturating_sub(spent) as f64)
    );
}

#[test]
fn failed_and_usage_less_responses() {
    let up = Upstream::start(|req| {
        let body = req.json();
        match body["user"].as_str() {
            Some("fail") => Reply::json(500, json!({"error": {"message": "boom", "type": "server_error", "param": null, "code": null}})),
            _ => Reply::json(200, json!({"object": "chat.completion", "model": body["model"], "choices": []})),
        }
    });
    let gw = Gateway::start(&config(&up, "1000.0"), &standard_env());
    let body = |user: &str| json!({"model": MODEL, "user": user, "messages": []}).to_string();
    assert_eq!(gw.post("/v1/chat/completions", Some(ALPHA_KEY), &body("fail")).status, 500);
    assert_eq!(
        metric(&gw, "tollgate_requests_total", &[("team", TEAM), ("model", MODEL), ("provider", "openai"), ("code", "500")]),
        Some(1.0)
    );
    assert_eq!(metric(&gw, "tollgate_spend_micro_usd_total", &[("team", TEAM), ("model", MODEL)]), None, "errors cost nothing");
    assert_eq!(metric(&gw, "tollgate_budget_remaining_micro_usd", &[("team", TEAM)]), Some(1e9), "the reservation was released");

    // A 2xx without usage is billed on the prompt estimate, and flagged.
    let b = body("ok");
    assert_eq!(gw.post("/v1/chat/completions", Some(ALPHA_KEY), &b).status, 200);
    let estimate = (b.len() as u64).div_ceil(4);
    assert_eq!(
        metric(&gw, "tollgate_tokens_total", &[("team", TEAM), ("model", MODEL), ("provider", "openai"), ("type", "input")]),
        Some(estimate as f64)
    );
    assert_eq!(metric(&gw, "tollgate_estimated_requests_total", &[("team", TEAM), ("model", MODEL)]), Some(1.0));
}

#[test]
fn denials_are_counted_by_team_and_reason() {
    let up = provider();
    let gw = Gateway::start(&config(&up, "1000.0"), &standard_env());
    let chat_body = chat_body(MODEL);
    gw.post("/v1/chat/completions", None, &chat_body);
    gw.post("/v1/chat/completions", Some("wrong"), &chat_body);
    gw.post("/v1/chat/completions", Some(ALPHA_KEY), &common::chat_body("gpt-9"));
    gw.post("/v1/chat/completions", Some(BETA_KEY), &chat_body);
    gw.post("/v1/chat/completions", Some(ALPHA_KEY), "[1]");
    let big = json!({"model": MODEL, "pad": "x".repeat(17 << 20)}).to_string();
    assert_eq!(raw_post(gw.port, "/v1/chat/completions", ALPHA_KEY, big.as_bytes()).0, 413);
    let denied = |team: &str, reason: &str| metric(&gw, "tollgate_denied_total", &[("team", team), ("reason", reason)]);
    assert_eq!(denied("unknown", "unauthenticated"), Some(2.0));
    assert_eq!(denied(TEAM, "model_not_found"), Some(1.0));
    assert_eq!(denied("team-beta", "model_not_allowed"), Some(1.0));
    assert_eq!(denied(TEAM, "bad_request"), Some(1.0));
    assert_eq!(denied(TEAM, "payload_too_large"), Some(1.0));
    assert!(up.requests().is_empty());
    // Only configured teams and models appear as label values.
    for ((_, labels), _) in scrape(&gw, "/metrics", gw.port) {
        if let Some(team) = labels.get("team") {
            assert!(["unknown", TEAM, "team-beta"].contains(&team.as_str()), "{team}");
        }
        if let Some(model) = labels.get("model") {
            assert!([MODEL, "text-embedding-3-small"].contains(&model.as_str()), "{model}");
        }
    }
}
