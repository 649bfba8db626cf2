//! Who is calling: the bearer token, matched against the team keys.
//!
//! Only SHA-256 digests of team keys are held. A presented key is hashed, its
//! digest's first 8 bytes pick a bucket, and the digests in that bucket are
//! compared in constant time. What the lookup's timing can reveal is whether
//! some stored digest shares 8 bytes with the digest of the presented key,
//! which is of no use without a SHA-256 preimage.

use crate::config::{key_bucket, secret::sha256, Gateway, TeamKey};
use crate::errors::ApiError;
use crate::jwt;

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// The configured key a presented key matches, compared in constant time.
fn lookup<'g>(gw: &'g Gateway, key: &str) -> Option<&'g TeamKey> {
    let digest = sha256(key.as_bytes());
    let mut found = None;
    for candidate in gw.keys_in_bucket(key_bucket(&digest)) {
        if constant_time_eq(&candidate.digest, &digest) {
            found = Some(candidate);
        }
    }
    found
}

/// Who a request comes from: its team, and the key's own rules if the key
/// has any (`Gateway::key_rules`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub team: usize,
    pub key: Option<usize>,
    /// From a JWT's `user_claim`, made safe for a stats label.
    pub user: Option<String>,
}

/// A team key's caller, unless the key has expired.
fn caller_for_key(gw: &Gateway, key: &str, now_ms: u64) -> Result<Caller, ApiError> {
    let Some(found) = lookup(gw, key) else {
        return Err(ApiError::unauthenticated(format!(
            "Incorrect API key provided: {}. Use the key your platform team issued to your team.",
            mask(key)
        )));
    };
    if let Some(rule) = found.rules.and_then(|r| gw.key_rules.get(r)) {
        if let Some(expiry) = rule.expires_ms.filter(|e| now_ms >= *e) {
            return Err(ApiError::unauthenticated(format!(
                "The key \"{}\" expired at {}. Ask your platform team for a new one.",
                rule.alias,
                crate::period::rfc3339(expiry)
            )));
        }
    }
    Ok(Caller { team: found.team, key: found.rules, user: None })
}

/// Authenticates a request from its `Authorization` header.
pub fn authenticate(gw: &Gateway, authorization: Option<&str>, now_ms: u64) -> Result<usize, ApiError> {
    identify(gw, authorization, now_ms, &[]).map(|c| c.team)
}

/// Authenticates a request from its `Authorization` header: a team key, or
/// (with `auth.jwt`) a JWT, verified with the configured keys and those
/// `fetched` from the JWKS URI.
pub fn identify(gw: &Gateway, authorization: Option<&str>, now_ms: u64, fetched: &[jwt::Key]) -> Result<Caller, ApiError> {
    let Some(header) = authorization else {
        return Err(ApiError::unauthenticated(
            "No API key provided. Send your team key in the header 'Authorization: Bearer <key>'.",
        ));
    };
    let Some(token) = bearer_token(header) else {
        return Err(ApiError::unauthenticated(
            "The Authorization header must be 'Bearer <key>', with your team key.",
        ));
    };
    if let Some(auth) = gw.jwt.as_deref().filter(|_| jwt::looks_like_jwt(token)) {
        return caller_for_jwt(gw, auth, fetched, token, now_ms);
    }
    caller_for_key(gw, token, now_ms)
}

/// A JWT's team, once the token is verified.
fn caller_for_jwt(gw: &Gateway, auth: &jwt::JwtAuth, fetched: &[jwt::Key], token: &str, now_ms: u64) -> Result<Caller, ApiError> {
    let refuse = |why: String| ApiError::unauthenticated(format!("Invalid token: {why}."));
    let verified = jwt::verify(auth, fetched, token, now_ms / 1000).map_err(refuse)?;
    let team = jwt::team_claim(&verified, &auth.team_claim, |t| gw.team_index.contains_key(t)).map_err(refuse)?;
    let team = gw.team_index.get(team).copied().ok_or_else(|| refuse(format!("no team \"{team}\"")))?;
    let user = match &auth.user_claim {
        None => None,
        Some(claim) => Some(jwt::user_claim(&verified, claim).map_err(refuse)?),
    };
    Ok(Caller { team, key: None, user })
}

/// Authenticates a key sent bare, as Anthropic's SDKs send `x-api-key`.
pub fn identify_key(gw: &Gateway, key: &str, now_ms: u64) -> Result<Caller, ApiError> {
    caller_for_key(gw, key.trim(), now_ms)
}

/// A key shown in an error: enough to recognise it, not enough to use it.
pub fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 12 {
        return "****".to_string();
    }
    let head: String = chars.iter().take(4).collect();
    let tail: String = chars.iter().skip(chars.len().saturating_sub(4)).collect();
    format!("{head}****{tail}")
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    // Keep the compiler from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer  "), None);
    }

    #[test]
    fn masks_keys() {
        assert_eq!(mask("team-beta-token"), "team****oken");
        assert_eq!(mask("short"), "****");
    }

    #[test]
    fn compares_whole_digests() {
        let a = sha256(b"a");
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
    }
}
