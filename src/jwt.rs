//! JWT bearer tokens (`auth.jwt`): verified with jwt-simple against the
//! configured keys, issuer and audiences, with the team taken from a claim.
//!
//! Every refusal says what failed: an unsigned token (`alg: none`), an
//! algorithm that is not allowed or does not match its key (algorithm
//! confusion), an unknown key id, a bad signature, a wrong issuer or
//! audience, a token expired, not valid yet, or without an expiry.

use std::collections::HashSet;

use jwt_simple::prelude::*;
use jwt_simple::JWTError;
use serde_json::{Map, Value};

/// A verifying key and the one algorithm it verifies.
pub enum Verifier {
    HS256(HS256Key),
    HS384(HS384Key),
    HS512(HS512Key),
    RS256(RS256PublicKey),
    RS384(RS384PublicKey),
    RS512(RS512PublicKey),
    PS256(PS256PublicKey),
    PS384(PS384PublicKey),
    PS512(PS512PublicKey),
    ES256(ES256PublicKey),
    ES384(ES384PublicKey),
    EdDSA(Ed25519PublicKey),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.algorithm())
    }
}

/// Every algorithm the gateway verifies, by its JOSE name.
pub const ALGORITHMS: [&str; 12] =
    ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

impl Verifier {
    pub fn algorithm(&self) -> &'static str {
        match self {
            Self::HS256(_) => "HS256",
            Self::HS384(_) => "HS384",
            Self::HS512(_) => "HS512",
            Self::RS256(_) => "RS256",
            Self::RS384(_) => "RS384",
            Self::RS512(_) => "RS512",
            Self::PS256(_) => "PS256",
            Self::PS384(_) => "PS384",
            Self::PS512(_) => "PS512",
            Self::ES256(_) => "ES256",
            Self::ES384(_) => "ES384",
            Self::EdDSA(_) => "EdDSA",
        }
    }

    fn verify(&self, token: &str, options: VerificationOptions) -> Result<JWTClaims<Map<String, Value>>, jwt_simple::Error> {
        let o = Some(options);
        match self {
            Self::HS256(k) => k.verify_token(token, o),
            Self::HS384(k) => k.verify_token(token, o),
            Self::HS512(k) => k.verify_token(token, o),
            Self::RS256(k) => k.verify_token(token, o),
            Self::RS384(k) => k.verify_token(token, o),
            Self::RS512(k) => k.verify_token(token, o),
            Self::PS256(k) => k.verify_token(token, o),
            Self::PS384(k) => k.verify_token(token, o),
            Self::PS512(k) => k.verify_token(token, o),
            Self::ES256(k) => k.verify_token(token, o),
            Self::ES384(k) => k.verify_token(token, o),
            Self::EdDSA(k) => k.verify_token(token, o),
        }
    }
}

#[derive(Debug)]
pub struct Key {
    pub kid: Option<String>,
    pub verifier: Verifier,
}

/// `auth.jwt`, checked and compiled.
#[derive(Debug)]
pub struct JwtAuth {
    pub issuer: Option<String>,
    pub audiences: Option<HashSet<String>>,
    pub algorithms: Vec<&'static str>,
    pub leeway_s: u64,
    pub keys: Vec<Key>,
    /// The claim that names the team: a string, or a list whose first
    /// entry that names a team is taken (as `groups` claims are).
    pub team_claim: String,
    pub user_claim: Option<String>,
    /// Each user's budget (micro-USD), and its period.
    pub user_budget_micro: Option<u64>,
    pub user_period: Option<crate::period::Period>,
    /// Keys fetched from a JWKS URI, besides `keys`.
    pub jwks: Option<Jwks>,
}

/// Where the filter fetches a key set, and how often.
#[derive(Debug)]
pub struct Jwks {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub url: crate::upstream::UpstreamUrl,
    pub refresh_ms: u64,
}

/// A verified token's claims.
#[derive(Debug)]
pub struct Verified {
    pub claims: Map<String, Value>,
}

/// Whether a bearer credential is a JWT rather than a team key: three
/// base64url parts, the first a JSON object (`eyJ`).
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ")
        && token.bytes().filter(|b| *b == b'.').count() == 2
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Verifies a token at `now_s` (seconds since the epoch). The error is the
/// message for the 401.
pub fn verify(auth: &JwtAuth, fetched: &[Key], token: &str, now_s: u64) -> Result<Verified, String> {
    let meta = Token::decode_metadata(token).map_err(|_| "the token is not a well-formed JWT".to_string())?;
    let alg = meta.algorithm();
    if alg.eq_ignore_ascii_case("none") {
        return Err("the token is unsigned (alg: none); the gateway accepts only signed tokens".to_string());
    }
    if !auth.algorithms.contains(&alg) {
        return Err(format!("the token's algorithm {alg} is not allowed here; allowed: {}", auth.algorithms.join(", ")));
    }
    let all = || auth.keys.iter().chain(fetched.iter());
    let candidates: Vec<&Key> = match meta.key_id() {
        Some(kid) => {
            let with_kid: Vec<&Key> = all().filter(|k| k.kid.as_deref() == Some(kid)).collect();
            if with_kid.is_empty() {
                if auth.jwks.is_some() && fetched.is_empty() {
                    return Err("the key set (jwks_uri) has not been fetched yet; retry shortly".to_string());
                }
                return Err(format!("unknown key id (kid) \"{kid}\""));
            }
            with_kid
        }
        None => all().collect(),
    };
    let matching: Vec<&Key> = candidates.iter().copied().filter(|k| k.verifier.algorithm() == alg).collect();
    if matching.is_empty() {
        let have: Vec<&str> = candidates.iter().map(|k| k.verifier.algorithm()).collect();
        return Err(format!(
            "the token's algorithm {alg} does not match its key ({}); a token must be signed with its key's own algorithm",
            have.join(", ")
        ));
    }
    let options = || VerificationOptions {
        allowed_issuers: auth.issuer.as_ref().map(|i| HashSet::from([i.clone()])),
        allowed_audiences: auth.audiences.clone(),
        time_tolerance: Some(Duration::from_secs(auth.leeway_s)),
        artificial_time: Some(UnixTimeStamp::from_secs(now_s)),
        ..VerificationOptions::default()
    };
    let mut last = String::new();
    for key in matching {
        match key.verifier.verify(token, options()) {
            Ok(claims) => {
                if claims.expires_at.is_none() {
                    return Err("the token has no expiry (exp); the gateway accepts only tokens that expire".to_string());
                }
                return Ok(Verified { claims: claims.custom });
            }
            Err(e) => last = explain(&e, auth),
        }
    }
    Err(last)
}

fn explain(e: &jwt_simple::Error, auth: &JwtAuth) -> String {
    match e.downcast_ref::<JWTError>() {
        Some(JWTError::TokenHasExpired) => "the token has expired".to_string(),
        Some(JWTError::TokenNotValidYet) => "the token is not valid yet (nbf or iat is in the future)".to_string(),
        Some(JWTError::RequiredIssuerMismatch | JWTError::RequiredIssuerMissing) => {
            format!("wrong issuer: the token must be issued by \"{}\"", auth.issuer.as_deref().unwrap_or_default())
        }
        Some(JWTError::RequiredAudienceMismatch | JWTError::RequiredAudienceMissing) => {
            let mut want: Vec<&str> = auth.audiences.iter().flatten().map(String::as_str).collect();
            want.sort_unstable();
            format!("wrong audience: the token must be for one of {}", want.join(", "))
        }
        Some(JWTError::InvalidSignature) => "the signature does not verify".to_string(),
        Some(JWTError::AlgorithmMismatch) => "the token's algorithm does not match its key".to_string(),
        _ => format!("the token could not be verified: {e}"),
    }
}

/// The team a verified token names: the claim's value, or for a list its
/// first entry that `is_team` accepts.
pub fn team_claim<'c>(verified: &'c Verified, claim: &str, is_team: impl Fn(&str) -> bool) -> Result<&'c str, String> {
    match verified.claims.get(claim) {
        Some(Value::String(team)) if is_team(team) => Ok(team),
        Some(Value::String(team)) => Err(format!("the token's {claim} claim names no team here: \"{team}\"")),
        Some(Value::Array(entries)) => entries
            .iter()
            .filter_map(Value::as_str)
            .find(|e| is_team(e))
            .ok_or_else(|| format!("no entry of the token's {claim} claim names a team here")),
        Some(_) => Err(format!("the token's {claim} claim is neither a string nor a list of strings")),
        None => Err(format!("the token has no {claim} claim to name its team")),
    }
}

/// The shared-data key of a user's ledger.
pub fn user_ledger_key(team: &str, user: &str) -> String {
    format!("tollgate/ledger/user/{team}/{user}")
}

/// The longest user label kept.
const MAX_USER_LABEL: usize = 128;

/// The user a verified token names (`user_claim`), as a stats label:
/// characters that would split labels (`;`) or break them (control
/// characters) become `_`, and it is cut at 128 bytes.
pub fn user_claim(verified: &Verified, claim: &str) -> Result<String, String> {
    let value = match verified.claims.get(claim) {
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        Some(_) => return Err(format!("the token's {claim} claim is not a non-empty string")),
        None => return Err(format!("the token has no {claim} claim to name its user")),
    };
    let mut out = String::with_capacity(value.len().min(MAX_USER_LABEL));
    for c in value.chars() {
        if out.len() + c.len_utf8() > MAX_USER_LABEL {
            break;
        }
        out.push(if c == ';' || c.is_control() { '_' } else { c });
    }
    Ok(out)
}

/// A key from a JWK (RFC 7517): RSA (`n`, `e`), EC P-256/P-384 (`x`, `y`)
/// or OKP Ed25519 (`x`), for `alg` (the JWK's own `alg`, if it has one,
/// must agree).
pub fn key_from_jwk(jwk: &Map<String, Value>, alg: &str) -> Result<Verifier, String> {
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let text = jwk.get(name).and_then(Value::as_str).ok_or_else(|| format!("the JWK has no \"{name}\""))?;
        base64url(text).ok_or_else(|| format!("the JWK's \"{name}\" is not base64url"))
    };
    if let Some(own) = jwk.get("alg").and_then(Value::as_str) {
        if own != alg {
            return Err(format!("the JWK is for {own}, not {alg}"));
        }
    }
    let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or_default();
    let bad = |e: jwt_simple::Error| format!("the JWK is not a valid {kty} key: {e}");
    let point = |x: Vec<u8>, y: Vec<u8>| {
        let mut p = vec![4u8];
        p.extend(x);
        p.extend(y);
        p
    };
    match (kty, alg) {
        ("RSA", _) => {
            let (n, e) = (field("n")?, field("e")?);
            Ok(match alg {
                "RS256" => Verifier::RS256(RS256PublicKey::from_components(&n, &e).map_err(bad)?),
                "RS384" => Verifier::RS384(RS384PublicKey::from_components(&n, &e).map_err(bad)?),
                "RS512" => Verifier::RS512(RS512PublicKey::from_components(&n, &e).map_err(bad)?),
                "PS256" => Verifier::PS256(PS256PublicKey::from_components(&n, &e).map_err(bad)?),
                "PS384" => Verifier::PS384(PS384PublicKey::from_components(&n, &e).map_err(bad)?),
                "PS512" => Verifier::PS512(PS512PublicKey::from_components(&n, &e).map_err(bad)?),
                _ => return Err(format!("an RSA key cannot verify {alg}")),
            })
        }
        ("EC", "ES256") => Ok(Verifier::ES256(ES256PublicKey::from_bytes(&point(field("x")?, field("y")?)).map_err(bad)?)),
        ("EC", "ES384") => Ok(Verifier::ES384(ES384PublicKey::from_bytes(&point(field("x")?, field("y")?)).map_err(bad)?)),
        ("OKP", "EdDSA") => Ok(Verifier::EdDSA(Ed25519PublicKey::from_bytes(&field("x")?).map_err(bad)?)),
        _ => Err(format!("a {kty:?} JWK cannot verify {alg}")),
    }
}

/// The keys of a JSON Web Key Set (`{"keys": [...]}`) for the allowed
/// algorithms: each JWK for its own `alg`, or every allowed algorithm its
/// type can verify. Keys that fit none are skipped; a set with no usable key
/// is an error (and the last good set is kept).
pub fn keys_from_jwks(body: &[u8], allowed: &[&'static str]) -> Result<Vec<Key>, String> {
    let set: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let jwks = set.get("keys").and_then(Value::as_array).ok_or("no \"keys\" list")?;
    let mut keys = Vec::new();
    for jwk in jwks.iter().filter_map(Value::as_object) {
        let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_string);
        for alg in allowed.iter().filter(|a| !a.starts_with("HS")) {
            if let Ok(verifier) = key_from_jwk(jwk, alg) {
                keys.push(Key { kid: kid.clone(), verifier });
            }
        }
    }
    if keys.is_empty() {
        return Err("no key in the set verifies an allowed algorithm".to_string());
    }
    Ok(keys)
}

/// A PEM public key for `alg`.
pub fn key_from_pem(pem: &str, alg: &str) -> Result<Verifier, String> {
    let bad = |e: jwt_simple::Error| format!("not a PEM public key for {alg}: {e}");
    Ok(match alg {
        "RS256" => Verifier::RS256(RS256PublicKey::from_pem(pem).map_err(bad)?),
        "RS384" => Verifier::RS384(RS384PublicKey::from_pem(pem).map_err(bad)?),
        "RS512" => Verifier::RS512(RS512PublicKey::from_pem(pem).map_err(bad)?),
        "PS256" => Verifier::PS256(PS256PublicKey::from_pem(pem).map_err(bad)?),
        "PS384" => Verifier::PS384(PS384PublicKey::from_pem(pem).map_err(bad)?),
        "PS512" => Verifier::PS512(PS512PublicKey::from_pem(pem).map_err(bad)?),
        "ES256" => Verifier::ES256(ES256PublicKey::from_pem(pem).map_err(bad)?),
        "ES384" => Verifier::ES384(ES384PublicKey::from_pem(pem).map_err(bad)?),
        "EdDSA" => Verifier::EdDSA(Ed25519PublicKey::from_pem(pem).map_err(bad)?),
        _ => return Err(format!("a PEM key cannot verify {alg}; HS* keys are secrets")),
    })
}

/// An HMAC secret for `alg`.
pub fn key_from_secret(secret: &[u8], alg: &str) -> Result<Verifier, String> {
    Ok(match alg {
        "HS256" => Verifier::HS256(HS256Key::from_bytes(secret)),
        "HS384" => Verifier::HS384(HS384Key::from_bytes(secret)),
        "HS512" => Verifier::HS512(HS512Key::from_bytes(secret)),
        _ => return Err(format!("a secret cannot verify {alg}; use a public key")),
    })
}

/// Base64url without padding (padding tolerated), as JWKs use it.
fn base64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_decodes() {
        assert_eq!(base64url("AQAB"), Some(vec![1, 0, 1]));
        assert_eq!(base64url("_-8"), Some(vec![0xff, 0xef]));
        assert_eq!(base64url("a+b"), None);
    }

    #[test]
    fn spots_jwts() {
        assert!(looks_like_jwt("eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.c2ln"));
        assert!(!looks_like_jwt("sk-team-key"));
        assert!(!looks_like_jwt("eyJ.a"));
    }
}
