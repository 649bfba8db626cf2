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
