//! Set-up as a user meets it: `tollgate check`, and `make envoy-up` /
//! `make envoy-down` on the seed's config.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

type Env = Vec<(&'static str, &'static str)>;

fn seed_env() -> Env {
    vec![
        ("OPENAI_API_KEY", "sk-openai-test"),
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
        ("TEAM_ALPHA_KEY", "team-alpha-token"),
    ]
}

/// Runs `tollgate check` on a config text; returns (success, stderr).
fn check(config: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = scratch_dir("check");
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(cli_bin())
        .arg("check")
        .arg(&path)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn seed() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed-config.yaml")).unwrap()
}

#[test]
fn the_seed_config_is_valid() {
    let (ok, stderr) = check(&seed(), &seed_env());
    assert!(ok, "{stderr}");
}

#[test]
fn invalid_configs_are_refused_with_the_field_path() {
    let seed = seed();
    let cases: Vec<(String, Env, &str)> = vec![
        (
            seed.replace("models: [gpt-4, local-llama]", "models: [gpt-5, local-llama]"),
            seed_env(),
            r#"user_access[1].models[0]: unknown model "gpt-5""#,
        ),
        (
            seed.replace("max_budget: 500.00", "max_budget: 500.00\n    max_bugdet: 1"),
            seed_env(),
            "user_access[0].max_bugdet: unknown field `max_bugdet`",
        ),
        (seed.replace("max_budget: 200.00", "max_budget: lots"), seed_env(), "user_access[1].max_budget: invalid type"),
        (
            seed.replace("sha256:cd7f306ff0f2dd7ef29315f3696fbf7848a00bdeaf9925258c2e91d0b206947d", "sha256:cd7f30"),
            seed_env(),
            "user_access[1].api_keys[0]: \"sha256:cd7f30\" is malformed",
        ),
        (seed.clone(), vec![("ANTHROPIC_API_KEY", "x"), ("TEAM_ALPHA_KEY", "y")], "model_list[0].litellm_params.api_key: environment variable OPENAI_API_KEY is not set"),
        (seed.replace("model: openai/gpt-4\n", "model: gpt-4\n"), seed_env(), "model_list[0].litellm_params.model: \"gpt-4\" must be provider/model"),
        (seed.replace("openai/gpt-4", "vertex/gpt-4"), seed_env(), "unknown provider \"vertex\""),
        (seed.replace("http://127.0.0.1:8000/v1", "127.0.0.1:8000"), seed_env(), "model_list[2].litellm_params.api_base"),
        (seed.replace("usage-based", "fastest"), seed_env(), "router_settings.routing_strategy: unknown strategy \"fastest\""),
        (seed.replace("user_id: team-beta", "user_id: team-alpha"), seed_env(), "user_access[1].user_id: duplicate team \"team-alpha\""),
        (format!("{seed}\nrouter_settings2: {{}}\n"), seed_env(), "unknown field `router_settings2`"),
        (seed.replace("input_cost_per_token: 0.0000001", "input_cost_per_token: -1"), seed_env(), "model_list[2].model_info.input_cost_per_token"),
        (
            seed.replace("      input_cost_per_token: 0.0000001\n", ""),
            seed_env(),
            "user_access[1].models[1]: team \"team-beta\" has a max_budget, but model \"local-llama\" (openai/llama-3.1-8b-instruct) has no known price",
        ),
        (seed.replace("user_id: team-alpha", "user_id: team;alpha"), seed_env(), "user_access[0].user_id: \"team;alpha\" may not contain ';'"),
    ];
    for (config, env, expected) in cases {
        let (ok, stderr) = check(&config, &env);
        assert!(!ok, "accepted a config that should fail with {expected}");
        assert!(stderr.contains(expected), "expected {expected:?} in:\n{stderr}");
    }
    // All errors at once, not just the first.
    let both = seed.replace("[gpt-4, claude-2]", "[gpt-4, claude-9]").replace("[gpt-4, local-llama]", "[gpt-5, local-llama]");
    let (_, stderr) = check(&both, &seed_env());
    assert!(stderr.contains("user_access[0].models[1]") && stderr.contains("user_access[1].models[0]"), "{stderr}");
}

#[test]
fn unpriced_models_need_an_explicit_allowance() {
    let unpriced = seed().replace("    model_info:\n      input_cost_per_token: 0.0000001\n      output_cost_per_token: 0.0000002\n", "");
    let (ok, _) = check(&unpriced, &seed_env());
    assert!(!ok);
    // Without a budget, a team may use unpriced models.
    let (ok, stderr) = check(&unpriced.replace("    max_budget: 200.00\n", ""), &seed_env());
    assert!(ok, "{stderr}");
    let allowed = format!("{unpriced}general_settings:\n  allow_unpriced_models: true\n");
    let (ok, stderr) = check(&allowed, &seed_env());
    assert!(ok, "{stderr}");
}

#[test]
fn literal_keys_are_accepted_with_a_warning() {
    let config = seed().replace("os.environ/TEAM_ALPHA_KEY", "team-alpha-literal");
    let (ok, stderr) = check(&config, &seed_env());
    assert!(ok, "{stderr}");
    assert!(stderr.contains("warning: user_access[0].api_keys[0]: a literal key"), "{stderr}");
}

/// Runs `make envoy-down` for its port when dropped.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = make(&["envoy-down", &format!("PORT={}", self.0)], &[]);
    }
}

fn make(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    // `-o build`: the tests already run on a fresh build, and cargo's lock is held.
    let out = Command::new("make")
        .args(["--no-print-directory", "-o", "build", "-o", "venv"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn make_envoy_up_runs_the_seed_config_unchanged() {
    let port = free_port();
    let admin = free_port();
    let (p, a) = (port.to_string(), admin.to_string());
    let (ok, out) = make(
        &["envoy-up", "CONFIG=examples/seed-config.yaml", &format!("PORT={p}"), &format!("ADMIN_PORT={a}"), "CONCURRENCY=1"],
        &seed_env(),
    );
    let down = Down(p.clone());
    assert!(ok, "{out}");
    assert!(out.contains(&format!("Tollgate is up on http://127.0.0.1:{p}")), "{out}");

    let models = get(&format!("http://127.0.0.1:{p}/v1/models"), Some(BETA_KEY)).unwrap();
    assert_eq!(models.status, 200);
    let ids: Vec<_> = models.json()["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["gpt-4", "local-llama"]);
    let forbidden = post_bytes(&format!("http://127.0.0.1:{p}/chat/completions"), Some(BETA_KEY), chat_body("claude-2").as_bytes(), &[]).unwrap();
    forbidden.assert_error(403, Some("model_not_allowed"));
    let alpha = get(&format!("http://127.0.0.1:{p}/v1/models"), Some("team-alpha-token")).unwrap();
    assert_eq!(alpha.status, 200);

    // A second envoy-up on the same port is refused, and the first keeps running.
    let (ok, out) = make(&["envoy-up", "CONFIG=examples/seed-config.yaml", &format!("PORT={p}"), &format!("ADMIN_PORT={a}")], &seed_env());
    assert!(!ok && out.contains("already runs on port"), "{out}");

    drop(down);
    assert!(get(&format!("http://127.0.0.1:{p}/v1/models"), Some(BETA_KEY)).is_err(), "Envoy still answers after envoy-down");
}

/// The demo works on any port: its models follow the stand-in provider
/// to wherever it listens (PORT + 10, or DEMO_PROVIDER_PORT).
#[test]
fn make_envoy_up_serves_the_demo_on_another_port() {
    let (p, a, d) = (free_port().to_string(), free_port().to_string(), free_port().to_string());
    let (ok, out) = make(&["envoy-up", &format!("PORT={p}"), &format!("ADMIN_PORT={a}"), "CONCURRENCY=1"], &[("DEMO_PROVIDER_PORT", d.as_str())]);
    let _down = Down(p.clone());
    assert!(ok, "{out}");
    let r = post_bytes(&format!("http://127.0.0.1:{p}/v1/chat/completions"), Some("team-alpha-token"), chat_body("gpt-4o-mini").as_bytes(), &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Tollgate demo provider"), "{}", r.body);
}

#[test]
fn make_envoy_up_refuses_a_bad_config_before_starting_envoy() {
    let port = free_port().to_string();
    let env: Vec<(&str, &str)> = seed_env().into_iter().filter(|(k, _)| *k != "OPENAI_API_KEY").collect();
    let (ok, out) = make(&["envoy-up", "CONFIG=examples/seed-config.yaml", &format!("PORT={port}"), &format!("ADMIN_PORT={}", free_port())], &env);
    assert!(!ok, "{out}");
    assert!(out.contains("environment variable OPENAI_API_KEY is not set"), "{out}");
    assert!(out.contains("Envoy was not started"), "{out}");
    let run = Path::new(env!("CARGO_MANIFEST_DIR")).join(".run").join(&port).join("envoy.pid");
    assert!(!run.exists());
}

#[test]
fn make_envoy_up_reports_an_envoy_that_does_not_come_up() {
    // A port already taken is refused before Envoy starts.
    let busy = loopback_listener();
    let port = busy.local_addr().unwrap().port().to_string();
    let (ok, out) = make(&["envoy-up", "CONFIG=examples/seed-config.yaml", &format!("PORT={port}"), &format!("ADMIN_PORT={}", free_port())], &seed_env());
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("port {port} is already in use")), "{out}");

    // An Envoy that exits during start-up (here: a listen address it cannot
    // use) is reported with the end of its log, and nothing is left behind.
    let port = free_port().to_string();
    let (ok, out) = make(
        &["envoy-up", "CONFIG=examples/seed-config.yaml", &format!("PORT={port}"), &format!("ADMIN_PORT={}", free_port()), "LISTEN=127.0.0.999"],
        &seed_env(),
    );
    assert!(!ok, "{out}");
    assert!(out.contains("Envoy exited during start-up"), "{out}");
    assert!(out.contains("127.0.0.999"), "the log's end names the cause: {out}");
    let pid = Path::new(env!("CARGO_MANIFEST_DIR")).join(".run").join(&port).join("envoy.pid");
    assert!(!pid.exists());
}

/// The filter runs the same checks when Envoy loads it: a config that is
/// wrong where Envoy runs (here: a key variable Envoy's environment lacks)
/// stops Envoy with the field path in its log, rather than serving requests.
#[test]
fn envoy_refuses_a_config_the_filter_rejects() {
    let dir = scratch_dir("filter-check");
    let config = dir.join("config.yaml");
    std::fs::write(&config, seed()).unwrap();
    let rendered = dir.join("envoy.yaml");
    let out = Command::new(cli_bin())
        .arg("render")
        .arg(&config)
        .args(["--wasm", wasm_path().to_str().unwrap(), "--out", rendered.to_str().unwrap()])
        .args(["--port", &free_port().to_string(), "--admin-port", &free_port().to_string()])
        .env_clear()
        .envs(seed_env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Envoy gets every variable but TEAM_ALPHA_KEY.
    let out = Command::new(envoy_bin())
        .arg("-c")
        .arg(&rendered)
        .args(["--disable-hot-restart", "--log-level", "warn"])
        .env_clear()
        .envs(seed_env().into_iter().filter(|(k, _)| *k != "TEAM_ALPHA_KEY"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "Envoy started: {log}");
    assert!(
        log.contains("invalid config: user_access[0].api_keys[0]: environment variable TEAM_ALPHA_KEY is not set"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
