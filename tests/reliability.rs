//! Routing strategies, cooldowns, retries, timeouts and team rate limits,
//! through a real Envoy with fake upstreams.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::upstream::{openai_reply, Recorded, Reply, Upstream};
use common::*;


/// A model "m" with one deployment per (api_base, extra params) entry, and
/// team-alpha allowed to call it, with extra team settings.
fn config(router: &str, deployments: &[(String, &str)], team: &str) -> String {
    let mut out = String::from("model_list:\n");
    for (i, (base, extra)) in deployments.iter().enumerate() {
        out.push_str(&format!(
            "  - model_name: m\n    litellm_params: {{model: openai/dep-{i}, api_base: \"{base}\", api_key: os.environ/TEST_PROVIDER_KEY{extra}}}\n    model_info: {{input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}}\n"
        ));
    }
    out.push_str(&format!(
        "router_settings: {{{router}}}\nuser_access:\n  - user_id: team-alpha\n    models: [m]\n    api_keys: [os.environ/TEAM_ALPHA_KEY]\n{team}general_settings: {{stats_flush_interval_ms: 0}}\n"
    ));
    out
}

/// Which deployment served each request, by its upstream model name.
fn served(up: &Upstream) -> Vec<String> {
    up.requests().iter().map(|r| r.json()["model"].as_str().unwrap_or("").to_string()).collect()
}

fn count(v: &[String], name: &str) -> usize {
    v.iter().filter(|m| *m == name).count()
}

#[test]
fn simple_shuffle_splits_by_weight() {
    let up = Upstream::openai();
    let base = format!("{}/v1", up.base_url());
    let gw = Gateway::start(
        &config("routing_strategy: simple-shuffle", &[(base.clone(), ", weight: 3"), (base, ", weight: 1")], ""),
        &standard_env(),
    );
    for _ in 0..400 {
        assert_eq!(gw.chat(ALPHA_KEY, "m").status, 200);
    }
    let s = served(&up);
    // 300 expected; the binomial spread is about 9.
    let heavy = count(&s, "dep-0");
    assert!((250..=350).contains(&heavy), "dep-0 served {heavy} of 400");
    assert_eq!(heavy + count(&s, "dep-1"), 400);
}

/// An upstream where `dep-0` always answers 500 and `dep-1` works.
fn half_broken(req: &Recorded) -> Reply {
    if req.json()["model"] == "dep-0" {
        Reply::openai_error(500, "internal error", "server_error")
    } else {
        openai_reply(req)
    }
}

#[test]
fn a_failing_deployment_is_cooled_down_across_workers() {
    let up = Upstream::start(half_broken);
    let base = format!("{}/v1", up.base_url());
    let gw = Gateway::start(
        &config("routing_strategy: simple-shuffle, allowed_fails: 1, cooldown_time: 60", &[(base.clone(), ""), (base, "")], ""),
        &standard_env(),
    );
    // Requests until dep-0 has failed twice (shuffled, it is picked at
    // random: within ten requests only 99% of the time), then twenty more.
    let mut statuses: Vec<u16> = Vec::new();
    while statuses.iter().filter(|&&st| st == 500).count() < 2 && statuses.len() < 200 {
        statuses.push(gw.chat(ALPHA_KEY, "m").status);
    }
    statuses.extend((0..20).map(|_| gw.chat(ALPHA_KEY, "m").status));
    let s = served(&up);
    // A second failure (more than allowed_fails: 1) puts dep-0 out for a
    // minute, on both workers.
    assert_eq!(count(&s, "dep-0"), 2, "{s:?}");
    assert_eq!(statuses.iter().filter(|&&st| st == 500).count(), 2, "{statuses:?}");
    assert!(statuses.iter().rev().take(20).all(|&st| st == 200), "{statuses:?}");
    let series = format!(
        r#"tollgate_deployment_cooldowns_total{{model="m",provider="openai",deployment="127.0.0.1:{}"}}"#,
        up.port()
    );
    assert_eq!(gw.metric(&series), Some(1.0));
}

#[test]
fn latency_based_prefers_the_fast_deployment() {
    let slow = Upstream::start(|req: &Recorded| match openai_reply(req) {
        Reply::Full { status, headers, body } => {
            Reply::Chunked { status, headers, parts: vec![(Duration::from_millis(150), body)] }
        }
        other => other,
    });
    let fast = Upstream::openai();
    let gw = Gateway::start(
        &config(
            "routing_strategy: latency-based",
            &[(format!("{}/v1", slow.base_url()), ""), (format!("{}/v1", fast.base_url()), "")],
            "",
        ),
        &standard_env(),
    );
    for _ in 0..20 {
        assert_eq!(gw.chat(ALPHA_KEY, "m").status, 200);
    }
    // Each is tried while it has no latency on record; then the fast one wins.
    assert!(slow.requests().len() <= 2, "slow served {}", slow.requests().len());
    assert!(fast.requests().len() >= 18, "fast served {}", fast.requests().len());
}

#[test]
fn cost_based_takes_the_cheapest() {
    let up = Upstream::openai();
    let base = format!("{}/v1", up.base_url());
    let yaml = format!(
        r#"
model_list:
  - model_name: m
    litellm_params: {{model: openai/dep-0, api_base: "{base}", api_key: os.environ/TEST_PROVIDER_KEY}}
    model_info: {{input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}}
  - model_name: m
    litellm_params: {{model: openai/dep-1, api_base: "{base}", api_key: os.environ/TEST_PROVIDER_KEY}}
    model_info: {{input_cost_per_token: 0.0000001, output_cost_per_token: 0.0000002}}
router_settings: {{routing_strategy: cost-based}}
user_access:
  - user_id: team-alpha
    models: [m]
    api_keys: [os.environ/TEAM_ALPHA_KEY]
"#
    );
    let gw = Gateway::start(&yaml, &standard_env());
    for _ in 0..10 {
        assert_eq!(gw.chat(ALPHA_KEY, "m").status, 200);
    }
    assert_eq!(count(&served(&up), "dep-1"), 10);
}

#[test]
fn retries_and_timeouts_follow_the_router_settings() {
    // The first attempt of each request fails; the retry succeeds.
    let attempts = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&attempts);
    let up = Upstream::start(move |req: &Recorded| {
        if seen.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            Reply::openai_error(503, "try again", "server_error")
        } else if req.json()["messages"][0]["content"] == "slow" {
            // No answer at all within the deployment's timeout.
            std::thread::sleep(Duration::from_millis(800));
            openai_reply(req)
        } else {
            openai_reply(req)
        }
    });
    let base = format!("{}/v1", up.base_url());
    let gw = Gateway::start(&config("num_retries: 1, timeout: 0.3", &[(base, "")], ""), &standard_env());
    let r = gw.chat(ALPHA_KEY, "m");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    // The router's own headers do not reach the provider.
    assert!(up.requests().iter().all(|r| r.header("x-envoy-max-retries").is_none()));

    let slow = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "slow"}]});
    let r = gw.post("/v1/chat/completions", Some(ALPHA_KEY), &slow.to_string());
    assert_eq!(r.status, 504, "{}", r.body);
}

#[test]
fn a_team_over_its_rpm_is_told_when_to_retry() {
    let up = Upstream::openai();
    let base = format!("{}/v1", up.base_url());
    let gw = Gateway::start(&config("", &[(base, "")], "    rpm_limit: 3\n"), &standard_env());
    for _ in 0..3 {
        assert_eq!(gw.chat(ALPHA_KEY, "m").status, 200);
    }
    let r = gw.chat(ALPHA_KEY, "m");
    let v = r.assert_error(429, Some("rate_limit_exceeded"));
    assert!(v["error"]["message"].as_str().unwrap().contains("rpm_limit of 3"), "{v}");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("3"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(up.requests().len(), 3);
    assert_eq!(gw.metric(r#"tollgate_denied_total{team="team-alpha",reason="rate_limited"}"#), Some(1.0));
}

#[test]
fn tpm_and_parallel_limits() {
    // Usage is 15 tokens a request; 20 a minute lets two through.
    let up = Upstream::openai();
    let base = format!("{}/v1", up.base_url());
    let gw = Gateway::start(&config("", &[(base, "")], "    tpm_limit: 20\n"), &standard_env());
    assert_eq!(gw.chat(ALPHA_KEY, "m").status, 200);
    assert_eq!(gw.chat(ALPHA_KEY, "m").status, 200);
    let r = gw.chat(ALPHA_KEY, "m");
    r.assert_error(429, Some("rate_limit_exceeded"));
    assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("20"));
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("0"));

    // One request at a time: a second one while the first is in flight waits.
    let slow = Upstream::start(|req: &Recorded| match openai_reply(req) {
        Reply::Full { status, headers, body } => {
            Reply::Chunked { status, headers, parts: vec![(Duration::from_millis(600), body)] }
        }
        other => other,
    });
    let base = format!("{}/v1", slow.base_url());
    let gw = Arc::new(Gateway::start(&config("", &[(base, "")], "    max_parallel_requests: 1\n"), &standard_env()));
    let first = {
        let gw = Arc::clone(&gw);
        std::thread::spawn(move || gw.chat(ALPHA_KEY, "m").status)
    };
    slow.wait_for(1, Duration::from_secs(5));
    let r = gw.chat(ALPHA_KEY, "m");
    r.assert_error(429, Some("rate_limit_exceeded"));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(first.join().unwrap(), 200);
    // Once it is done, the next one goes.
    assert_eq!(gw.chat(ALPHA_KEY, "m").status, 200);
}

#[test]
fn a_failing_model_answers_through_its_fallback_on_another_provider() {
    // "primary" always fails; its fallback is Claude, behind Anthropic's API.
    let up = Upstream::start(|req: &Recorded| {
        if req.path_only().ends_with("/chat/completions") && req.json()["model"] == "broken-1" {
            Reply::openai_error(500, "internal error", "server_error")
        } else {
            openai_reply(req)
        }
    });
    let base = up.base_url();
    let yaml = format!(
        r#"
model_list:
  - model_name: primary
    litellm_params: {{model: openai/broken-1, api_base: "{base}/v1", api_key: os.environ/TEST_PROVIDER_KEY}}
    model_info: {{input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}}
  - model_name: backup
    litellm_params: {{model: anthropic/claude-3-5-haiku-20241022, api_base: "{base}", api_key: os.environ/TEST_PROVIDER_KEY}}
router_settings: {{allowed_fails: 1, cooldown_time: 60, fallbacks: [{{primary: [backup]}}]}}
user_access:
  - user_id: team-alpha
    models: [primary, backup]
    max_budget: 10
    api_keys: [os.environ/TEAM_ALPHA_KEY]
  - user_id: team-beta
    models: [primary, backup]
    rpm_limit: 1
    api_keys: ["sha256:{BETA_DIGEST}"]
general_settings: {{stats_flush_interval_ms: 0}}
"#
    );
    let gw = Gateway::start(&yaml, &standard_env());
    for i in 0..8 {
        let r = gw.chat(ALPHA_KEY, "primary");
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert_eq!(r.json()["object"], "chat.completion");
        assert_eq!(r.json()["choices"][0]["message"]["content"], "Hello from the fake upstream.");
    }
    let reqs = up.requests();
    let broken = reqs.iter().filter(|r| r.path_only() == "/v1/chat/completions").count();
    // Two failures put the broken deployment in cooldown; after that the
    // requests go straight to the fallback.
    assert_eq!(broken, 2, "{:?}", reqs.iter().map(|r| r.path.clone()).collect::<Vec<_>>());
    let claude: Vec<_> = reqs.iter().filter(|r| r.path_only() == "/v1/messages").collect();
    assert_eq!(claude.len(), 8);
    for r in &claude {
        // Anthropic's shape, path and key.
        assert_eq!(r.header("x-api-key"), Some(PROVIDER_KEY));
        assert_eq!(r.header("authorization"), None);
        assert_eq!(r.json()["model"], "claude-3-5-haiku-20241022");
        assert!(r.json()["max_tokens"].is_u64());
    }
    assert_eq!(gw.metric(r#"tollgate_fallbacks_total{model="primary",fallback="backup"}"#), Some(8.0));
    // Every attempt is a request, by the status it got.
    assert_eq!(gw.metric(r#"tollgate_requests_total{team="team-alpha",model="primary",provider="openai",code="500"}"#), Some(2.0));
    assert_eq!(gw.metric(r#"tollgate_requests_total{team="team-alpha",model="backup",provider="anthropic",code="200"}"#), Some(8.0));
    // A request refused after its fallback was chosen was not sent on: not counted.
    assert_eq!(gw.chat(BETA_KEY, "primary").status, 200);
    let refused = gw.chat(BETA_KEY, "primary");
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(gw.metric(r#"tollgate_fallbacks_total{model="primary",fallback="backup"}"#), Some(9.0));
    // Tokens are counted for the model that answered.
    assert_eq!(
        gw.metric(r#"tollgate_tokens_total{team="team-alpha",model="backup",provider="anthropic",type="output"}"#),
        Some(40.0)
    );

    // A stream falls back too (its events arrive together).
    let stream = serde_json::json!({"model": "primary", "stream": true, "messages": [{"role": "user", "content": "Hi"}]});
    let r = gw.post("/v1/chat/completions", Some(ALPHA_KEY), &stream.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("text/event-stream")), "{:?}", r.headers);
    assert!(r.body.contains("chat.completion.chunk") && r.body.trim_end().ends_with("data: [DONE]"), "{}", r.body);
}

#[test]
fn usage_based_and_least_busy_spread_by_load() {
    // usage-based: dep-0 may take 2 requests a minute, dep-1 20; after dep-0
    // has used its share, dep-1 has the most headroom.
    let up = Upstream::openai();
    let base = format!("{}/v1", up.base_url());
    let gw = Gateway::start(
        &config("routing_strategy: usage-based", &[(base.clone(), ", rpm: 2"), (base, ", rpm: 20")], ""),
        &standard_env(),
    );
    for _ in 0..12 {
        assert_eq!(gw.chat(ALPHA_KEY, "m").status, 200);
    }
    let s = served(&up);
    // dep-0 is at 50% of its rpm after one request, dep-1 only after ten.
    assert!(count(&s, "dep-0") <= 2, "{s:?}");

    // least-busy: while a slow request holds dep-0, the next goes to dep-1.
    let slow = Upstream::start(|req: &Recorded| {
        std::thread::sleep(Duration::from_millis(500));
        openai_reply(req)
    });
    let fast = Upstream::openai();
    let gw = Arc::new(Gateway::start(
        &config(
            "routing_strategy: least-busy",
            &[(format!("{}/v1", slow.base_url()), ""), (format!("{}/v1", fast.base_url()), "")],
            "",
        ),
        &standard_env(),
    ));
    // Ties go in turn, per worker; send until one lands on the slow one.
    let mut held = None;
    for _ in 0..4 {
        let gw2 = Arc::clone(&gw);
        let t = std::thread::spawn(move || gw2.chat(ALPHA_KEY, "m").status);
        std::thread::sleep(Duration::from_millis(100));
        if !slow.requests().is_empty() {
            held = Some(t);
            break;
        }
        assert_eq!(t.join().unwrap(), 200);
    }
    let held = held.expect("a request reached the slow deployment");
    let before = fast.requests().len();
    for _ in 0..3 {
        assert_eq!(gw.chat(ALPHA_KEY, "m").status, 200);
    }
    assert_eq!(fast.requests().len(), before + 3, "busy deployment was picked");
    assert_eq!(slow.requests().len(), 1);
    assert_eq!(held.join().unwrap(), 200);
}
