//! JWT bearer tokens: minted here with jwt-simple, for each algorithm and
//! each way a token can be wrong, and checked through `auth::authenticate`.

mod common;

use std::collections::HashMap;

use jwt_simple::prelude::*;
use serde_json::json;
use tollgate::auth::authenticate;
use common::b64url;
use tollgate::config::{compile, parse_yaml, Gateway};

const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!!";

fn gateway(keys_yaml: &str, extra: &str) -> Gateway {
    let yaml = format!(
        r#"
model_list:
  - model_name: m
    litellm_params: {{model: openai/m, api_base: "http://127.0.0.1:9", api_key: os.environ/PROVIDER_KEY}}
user_access:
  - user_id: team-a
    models: [m]
  - user_id: team-b
    models: [m]
auth:
  jwt:
    issuer: https://idp.example.com
    audiences: [tollgate]
    leeway: 5
{extra}    keys:
{keys_yaml}
"#
    );
    let env: HashMap<String, String> =
        [("PROVIDER_KEY", "sk-p"), ("JWT_SECRET", SECRET)].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let file = parse_yaml(&yaml).unwrap();
    match compile(&file, &env) {
        Ok(c) => c.gateway,
        Err(e) => panic!("config refused: {e:?}\n{yaml}"),
    }
}

fn now_ms() -> u64 {
    Clock::now_since_epoch().as_millis()
}

fn claims(team: serde_json::Value) -> JWTClaims<serde_json::Value> {
    Claims::with_custom_claims(json!({"team": team}), Duration::from_mins(10))
        .with_issuer("https://idp.example.com")
        .with_audience("tollgate")
}

fn auth(gw: &Gateway, token: &str) -> Result<usize, String> {
    authenticate(gw, Some(&format!("Bearer {token}")), now_ms()).map_err(|e| {
        assert_eq!(e.status, 401);
        e.message
    })
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("          {l}\n")).collect()
}

#[test]
fn each_algorithm_verifies_its_own_tokens() {
    let hs = HS256Key::from_bytes(SECRET.as_bytes());
    let rs = RS256KeyPair::generate(2048).unwrap().with_key_id("rsa-1");
    let ps = PS256KeyPair::generate(2048).unwrap().with_key_id("ps-1");
    let es = ES256KeyPair::generate().with_key_id("ec-1");
    let es384 = ES384KeyPair::generate().with_key_id("ec-2");
    let ed = Ed25519KeyPair::generate().with_key_id("ed-1");
    let keys = format!(
        "      - secret: os.environ/JWT_SECRET\n      - kid: rsa-1\n        pem: |\n{}      - kid: ps-1\n        pem: |\n{}      - kid: ec-1\n        pem: |\n{}      - kid: ec-2\n        pem: |\n{}      - kid: ed-1\n        pem: |\n{}",
        indent(&rs.public_key().to_pem().unwrap()),
        indent(&ps.public_key().to_pem().unwrap()),
        indent(&es.public_key().to_pem().unwrap()),
        indent(&es384.public_key().to_pem().unwrap()),
        indent(&ed.public_key().to_pem()),
    );
    let gw = gateway(&keys, "");
    assert_eq!(auth(&gw, &hs.authenticate(claims(json!("team-a"))).unwrap()), Ok(0));
    assert_eq!(auth(&gw, &rs.sign(claims(json!("team-b"))).unwrap()), Ok(1));
    assert_eq!(auth(&gw, &ps.sign(claims(json!("team-a"))).unwrap()), Ok(0));
    assert_eq!(auth(&gw, &es.sign(claims(json!("team-a"))).unwrap()), Ok(0));
    assert_eq!(auth(&gw, &es384.sign(claims(json!("team-b"))).unwrap()), Ok(1));
    assert_eq!(auth(&gw, &ed.sign(claims(json!("team-a"))).unwrap()), Ok(0));
    // Team keys still work beside JWTs.
    assert!(authenticate(&gw, Some("Bearer not-a-jwt"), now_ms()).unwrap_err().message.starts_with("Incorrect API key"));
}

#[test]
fn a_jwk_key_and_a_groups_claim() {
    let rs = RS256KeyPair::generate(2048).unwrap().with_key_id("k1");
    let c = rs.public_key().to_components();
    let keys = format!("      - jwk: {{kty: RSA, kid: k1, alg: RS256, n: \"{}\", e: \"{}\"}}\n", b64url(&c.n), b64url(&c.e));
    let gw = gateway(&keys, "    team_claim: groups\n");
    let groups = Claims::with_custom_claims(json!({"groups": ["staff", "team-b", "team-a"]}), Duration::from_mins(5))
        .with_issuer("https://idp.example.com")
        .with_audience("tollgate");
    // The first group that is a team.
    assert_eq!(auth(&gw, &rs.sign(groups).unwrap()), Ok(1));
    let none = Claims::with_custom_claims(json!({"groups": ["staff"]}), Duration::from_mins(5))
        .with_issuer("https://idp.example.com")
        .with_audience("tollgate");
    assert_eq!(auth(&gw, &rs.sign(none).unwrap()), Err("Invalid token: no entry of the token's groups claim names a team here.".into()));
}

#[test]
fn every_bad_token_gets_a_401_that_says_why() {
    let rs = RS256KeyPair::generate(2048).unwrap().with_key_id("rsa-1");
    let pem = rs.public_key().to_pem().unwrap();
    let keys = format!("      - kid: rsa-1\n        pem: |\n{}", indent(&pem));
    let gw = gateway(&keys, "    algorithms: [RS256]\n");
    let ok = |c| rs.sign(c).unwrap();
    assert_eq!(auth(&gw, &ok(claims(json!("team-a")))), Ok(0));

    let mut expired = claims(json!("team-a"));
    expired.expires_at = Some(UnixTimeStamp::from_secs(now_ms() / 1000 - 60));
    assert_eq!(auth(&gw, &ok(expired)), Err("Invalid token: the token has expired.".into()));

    let future = claims(json!("team-a")).invalid_before(UnixTimeStamp::from_secs(now_ms() / 1000 + 120));
    assert!(auth(&gw, &ok(future)).unwrap_err().contains("not valid yet"));

    let issuer = claims(json!("team-a")).with_issuer("https://evil.example.com");
    assert!(auth(&gw, &ok(issuer)).unwrap_err().contains("wrong issuer"));

    let audience = claims(json!("team-a")).with_audience("someone-else");
    assert!(auth(&gw, &ok(audience)).unwrap_err().contains("wrong audience"));

    let mut forever = claims(json!("team-a"));
    forever.expires_at = None;
    assert!(auth(&gw, &ok(forever)).unwrap_err().contains("no expiry"));

    assert!(auth(&gw, &ok(claims(json!("team-z")))).unwrap_err().contains("names no team here"));

    // Another key, same kid: the signature does not verify.
    let other = RS256KeyPair::generate(2048).unwrap().with_key_id("rsa-1");
    assert!(auth(&gw, &other.sign(claims(json!("team-a"))).unwrap()).unwrap_err().contains("signature does not verify"));

    // An unknown kid.
    let stranger = RS256KeyPair::generate(2048).unwrap().with_key_id("rsa-9");
    assert_eq!(auth(&gw, &stranger.sign(claims(json!("team-a"))).unwrap()), Err("Invalid token: unknown key id (kid) \"rsa-9\".".into()));

    // alg: none.
    let body = |v: serde_json::Value| b64url(v.to_string().as_bytes());
    let unsigned = format!(
        "{}.{}.",
        body(json!({"alg": "none", "typ": "JWT"})),
        body(json!({"team": "team-a", "iss": "https://idp.example.com", "aud": "tollgate", "exp": now_ms() / 1000 + 600}))
    );
    assert!(auth(&gw, &unsigned).unwrap_err().contains("alg: none"), "{:?}", auth(&gw, &unsigned));

    // Algorithm confusion: HS256 signed with the RSA public key as the secret.
    let confused = HS256Key::from_bytes(pem.as_bytes()).with_key_id("rsa-1");
    let err = auth(&gw, &confused.authenticate(claims(json!("team-a"))).unwrap()).unwrap_err();
    assert_eq!(err, "Invalid token: the token's algorithm HS256 is not allowed here; allowed: RS256.");
}

#[test]
fn confusion_is_refused_even_when_hmac_is_allowed() {
    let rs = RS256KeyPair::generate(2048).unwrap().with_key_id("rsa-1");
    let pem = rs.public_key().to_pem().unwrap();
    let keys = format!("      - secret: os.environ/JWT_SECRET\n        kid: hmac-1\n      - kid: rsa-1\n        pem: |\n{}", indent(&pem));
    let gw = gateway(&keys, "");
    let confused = HS256Key::from_bytes(pem.as_bytes()).with_key_id("rsa-1");
    let err = auth(&gw, &confused.authenticate(claims(json!("team-a"))).unwrap()).unwrap_err();
    assert!(err.contains("does not match its key (RS256"), "{err}");
}

#[test]
fn config_errors_name_the_field() {
    let yaml = |keys: &str, extra: &str| {
        format!("model_list:\n  - model_name: m\n    litellm_params: {{model: openai/m, api_base: \"http://127.0.0.1:9\"}}\nuser_access:\n  - user_id: t\n    models: [m]\nauth:\n  jwt:\n{extra}    keys:\n{keys}")
    };
    let errors = |y: String| -> Vec<String> {
        let env: HashMap<String, String> = [("SHORT".to_string(), "short".to_string())].into();
        compile(&parse_yaml(&y).unwrap(), &env).err().unwrap().iter().map(|e| e.to_string()).collect()
    };
    let e = errors(yaml("      - pem: not a key\n", ""));
    assert!(e.iter().any(|m| m.starts_with("auth.jwt.keys[0]: this key verifies none of the allowed algorithms")), "{e:?}");
    let e = errors(yaml("      - secret: os.environ/SHORT\n", ""));
    assert!(e.iter().any(|m| m == "auth.jwt.keys[0].secret: an HMAC secret must be at least 32 bytes"), "{e:?}");
    let e = errors(yaml("      - secret: os.environ/SHORT\n        pem: x\n", "    algorithms: [none]\n"));
    assert!(e.iter().any(|m| m.starts_with("auth.jwt.algorithms[0]: unknown or unsafe algorithm \"none\"")), "{e:?}");
    assert!(e.iter().any(|m| m == "auth.jwt.keys[0]: give exactly one of pem, jwk or secret"), "{e:?}");
}

