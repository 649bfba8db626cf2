//! JWT bearer tokens through a real Envoy: a mesh workload's signed token
//! reaches its team's models; a bad one gets a 401 that says why.

mod common;

use jwt_simple::prelude::*;
use serde_json::json;

use common::upstream::Upstream;
use common::*;

#[test]
fn a_signed_jwt_reaches_its_teams_models_only() {
    let up = Upstream::openai();
    let ec = ES256KeyPair::generate().with_key_id("mesh-1");
    let pem: String = ec.public_key().to_pem().unwrap().lines().map(|l| format!("          {l}\n")).collect();
    let config = format!(
        r#"
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{}/v1", api_key: os.environ/TEST_PROVIDER_KEY}}
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: "{}/v1", api_key: os.environ/TEST_PROVIDER_KEY}}
user_access:
  - user_id: team-alpha
    models: [gpt-4o-mini]
    max_budget: 10
auth:
  jwt:
    issuer: https://idp.mesh.local
    audiences: [tollgate]
    team_claim: groups
    keys:
      - kid: mesh-1
        pem: |
{pem}"#,
        up.base_url(),
        up.base_url()
    );
    let gw = Gateway::start(&config, &standard_env());
    let token = |valid_for: Duration| {
        let claims = Claims::with_custom_claims(json!({"groups": ["eng", "team-alpha"]}), valid_for)
            .with_issuer("https://idp.mesh.local")
            .with_audience("tollgate")
            .with_subject("spiffe://cluster.local/ns/apps/sa/checkout");
        ec.sign(claims).unwrap()
    };
    let good = token(Duration::from_mins(5));
    let r = gw.chat(&good, "gpt-4o-mini");
    assert_eq!(r.status, 200, "{}", r.body);
    // The token never reaches the provider.
    let req = &up.requests()[0];
    assert!(req.headers.iter().all(|(_, v)| !v.contains(&good)));
    assert_eq!(req.header("authorization"), Some(format!("Bearer {PROVIDER_KEY}").as_str()));
    // Its team may not use gpt-4o.
    gw.chat(&good, "gpt-4o").assert_error(403, Some("model_not_allowed"));

    // Expired (beyond the default 60 s of leeway).
    let mut claims = Claims::with_custom_claims(json!({"groups": ["team-alpha"]}), Duration::from_mins(5))
        .with_issuer("https://idp.mesh.local")
        .with_audience("tollgate");
    claims.expires_at = Some(Clock::now_since_epoch() - Duration::from_mins(5));
    let v = gw.chat(&ec.sign(claims).unwrap(), "gpt-4o-mini").assert_error(401, Some("invalid_api_key"));
    assert_eq!(v["error"]["message"], "Invalid token: the token has expired.");
    // Signed by someone else with the same kid.
    let forged = ES256KeyPair::generate().with_key_id("mesh-1").sign(
        Claims::with_custom_claims(json!({"groups": ["team-alpha"]}), Duration::from_mins(5))
            .with_issuer("https://idp.mesh.local")
            .with_audience("tollgate"),
    );
    let v = gw.chat(&forged.unwrap(), "gpt-4o-mini").assert_error(401, Some("invalid_api_key"));
    assert_eq!(v["error"]["message"], "Invalid token: the signature does not verify.");
    assert_eq!(up.requests().len(), 1);
}


#[test]
fn keys_come_from_a_jwks_uri_refreshed_and_kept_when_a_fetch_fails() {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration as StdDuration, Instant};

    use common::upstream::{openai_reply, Reply};

    let jwk = |k: &RS256KeyPair, kid: &str| {
        let c = k.public_key().to_components();
        json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64url(&c.n), "e": b64url(&c.e)})
    };
    let first = RS256KeyPair::generate(2048).unwrap().with_key_id("r1");
    let second = RS256KeyPair::generate(2048).unwrap().with_key_id("r2");
    // What the identity provider serves: a key set, or (None) an error.
    let served: Arc<Mutex<Option<serde_json::Value>>> = Arc::new(Mutex::new(Some(json!({"keys": [jwk(&first, "r1")]}))));
    let idp = Arc::clone(&served);
    let up = Upstream::start(move |req| {
        if req.path_only() == "/.well-known/jwks.json" {
            match idp.lock().unwrap().clone() {
                Some(set) => Reply::json(200, set),
                None => Reply::text(503, "unavailable"),
            }
        } else {
            openai_reply(req)
        }
    });
    let config = format!(
        r#"
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{base}/v1", api_key: os.environ/TEST_PROVIDER_KEY}}
user_access:
  - user_id: team-alpha
    models: [gpt-4o-mini]
auth:
  jwt:
    issuer: https://idp.mesh.local
    audiences: [tollgate]
    jwks_uri: "{base}/.well-known/jwks.json"
    jwks_refresh_seconds: 1
"#,
        base = up.base_url()
    );
    if native() {
        // No timer to fetch on: the native build refuses the config, saying why.
        let err = render_error(&config, &standard_env());
        assert!(err.contains("auth.jwt.jwks_uri: the native build cannot fetch a key set"), "{err}");
        return;
    }
    let gw = Gateway::start(&config, &standard_env());
    let token = |k: &RS256KeyPair| {
        k.sign(
            Claims::with_custom_claims(json!({"team": "team-alpha"}), Duration::from_mins(5))
                .with_issuer("https://idp.mesh.local")
                .with_audience("tollgate"),
        )
        .unwrap()
    };
    let until_status = |k: &RS256KeyPair, want: u16| {
        let deadline = Instant::now() + StdDuration::from_secs(10);
        loop {
            let r = gw.chat(&token(k), "gpt-4o-mini");
            if r.status == want {
                return r;
            }
            assert!(Instant::now() < deadline, "still {}: {}", r.status, r.body);
            std::thread::sleep(StdDuration::from_millis(200));
        }
    };
    until_status(&first, 200);
    // The provider fails: the last good set is kept.
    *served.lock().unwrap() = None;
    std::thread::sleep(StdDuration::from_millis(2500));
    assert_eq!(gw.chat(&token(&first), "gpt-4o-mini").status, 200);
    // The keys rotate: the new key is picked up, the old one refused.
    *served.lock().unwrap() = Some(json!({"keys": [jwk(&second, "r2")]}));
    until_status(&second, 200);
    let r = until_status(&first, 401);
    assert!(r.body.contains("unknown key id (kid) \\\"r1\\\""), "{}", r.body);
}

#[test]
fn each_user_has_a_label_and_a_budget_of_its_own() {
    let up = Upstream::openai();
    let ec = ES256KeyPair::generate().with_key_id("mesh-1");
    let pem: String = ec.public_key().to_pem().unwrap().lines().map(|l| format!("          {l}\n")).collect();
    let config = format!(
        r#"
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{}/v1", api_key: os.environ/TEST_PROVIDER_KEY}}
user_access:
  - user_id: team-alpha
    models: [gpt-4o-mini]
    max_budget: 10
auth:
  jwt:
    issuer: https://idp.mesh.local
    audiences: [tollgate]
    user_claim: email
    user_max_budget: 0.00001
    user_budget_duration: daily
    keys:
      - kid: mesh-1
        pem: |
{pem}"#,
        up.base_url()
    );
    let gw = Gateway::start(&config, &standard_env());
    let token = |email: &str| {
        ec.sign(
            Claims::with_custom_claims(json!({"team": "team-alpha", "email": email}), Duration::from_mins(5))
                .with_issuer("https://idp.mesh.local")
                .with_audience("tollgate"),
        )
        .unwrap()
    };
    // 5 micro-USD a request against 10 each: two requests, then 429.
    let ana = token("ana@example.com");
    assert_eq!(gw.chat(&ana, "gpt-4o-mini").status, 200);
    assert_eq!(gw.chat(&ana, "gpt-4o-mini").status, 200);
    let v = gw.chat(&ana, "gpt-4o-mini").assert_error(429, Some("insufficient_quota"));
    assert!(v["error"]["message"].as_str().unwrap().starts_with("The user \"ana@example.com\" has used its budget"), "{v}");
    // Another user of the same team has a budget of their own.
    assert_eq!(gw.chat(&token("bo@example.com"), "gpt-4o-mini").status, 200);
    gw.wait_metric(
        r#"tollgate_spend_micro_usd_total{team="team-alpha",model="gpt-4o-mini",user="ana@example.com"}"#,
        10.0,
    );
    gw.wait_metric(r#"tollgate_spend_micro_usd_total{team="team-alpha",model="gpt-4o-mini",user="bo@example.com"}"#, 5.0);
    // A token without the user claim is refused, and says why.
    let anonymous = ec
        .sign(
            Claims::with_custom_claims(json!({"team": "team-alpha"}), Duration::from_mins(5))
                .with_issuer("https://idp.mesh.local")
                .with_audience("tollgate"),
        )
        .unwrap();
    let v = gw.chat(&anonymous, "gpt-4o-mini").assert_error(401, Some("invalid_api_key"));
    assert_eq!(v["error"]["message"], "Invalid token: the token has no email claim to name its user.");
}
