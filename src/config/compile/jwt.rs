//! `auth.jwt`: keys parsed, algorithms fixed, claims named, when the config
//! is loaded.

use std::collections::HashSet;

use super::Ctx;
use crate::config::schema::JwtSettings;
use crate::config::secret::KeyRef;
use crate::jwt::{self, Jwks, JwtAuth, Key, ALGORITHMS};
use crate::upstream::{ClusterNaming, UpstreamUrl};

const DEFAULT_LEEWAY_S: u64 = 60;
const DEFAULT_JWKS_REFRESH_S: u64 = 300;

pub(super) fn compile(cx: &mut Ctx<'_>, s: &JwtSettings, naming: ClusterNaming) -> Option<JwtAuth> {
    let base = "auth.jwt";
    let jwks = s.jwks_uri.as_deref().and_then(|uri| match UpstreamUrl::parse(uri) {
        Ok(url) => Some(Jwks {
            cluster: url.cluster_name(naming),
            authority: url.authority(),
            path: if url.base_path.is_empty() { "/".to_string() } else { url.base_path.clone() },
            refresh_ms: s.jwks_refresh_seconds.unwrap_or(DEFAULT_JWKS_REFRESH_S).max(1).saturating_mul(1000),
            url,
        }),
        Err(msg) => {
            cx.error(format!("{base}.jwks_uri"), msg);
            None
        }
    });
    let allowed: Vec<&'static str> = match &s.algorithms {
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match ALGORITHMS.iter().find(|known| **known == a.as_str()) {
                Some(known) => Some(*known),
                None => {
                    cx.error(format!("{base}.algorithms[{i}]"), format!("unknown or unsafe algorithm \"{a}\"; use one of {}", ALGORITHMS.join(", ")));
                    None
                }
            })
            .collect(),
        None => ALGORITHMS.to_vec(),
    };
    if s.keys.is_empty() && s.jwks_uri.is_none() {
        cx.error(format!("{base}.keys"), "list at least one key (pem, jwk or secret), or give a jwks_uri");
    }
    let mut keys = Vec::new();
    for (i, entry) in s.keys.iter().enumerate() {
        let path = format!("{base}.keys[{i}]");
        let given = [entry.pem.is_some(), entry.jwk.is_some(), entry.secret.is_some()].iter().filter(|x| **x).count();
        if given != 1 {
            cx.error(path, "give exactly one of pem, jwk or secret");
            continue;
        }
        let kid = entry.kid.clone().or_else(|| entry.jwk.as_ref().and_then(|j| j.get("kid")?.as_str().map(str::to_string)));
        let mut found = Vec::new();
        let mut last_error = String::new();
        if let Some(raw) = &entry.secret {
            let secret = match cx.resolve(&format!("{path}.secret"), raw, false) {
                Some(KeyRef::Literal(v)) => v,
                Some(_) => {
                    cx.error(format!("{path}.secret"), "a secret is os.environ/NAME or a literal");
                    continue;
                }
                None => continue,
            };
            if secret.len() < 32 {
                cx.error(format!("{path}.secret"), "an HMAC secret must be at least 32 bytes");
                continue;
            }
            for alg in allowed.iter().filter(|a| a.starts_with("HS")) {
                if let Ok(v) = jwt::key_from_secret(secret.as_bytes(), alg) {
                    found.push(v);
                }
            }
        } else {
            for alg in allowed.iter().filter(|a| !a.starts_with("HS")) {
                let parsed = match (&entry.pem, &entry.jwk) {
                    (Some(pem), _) => jwt::key_from_pem(pem, alg),
                    (_, Some(jwk)) => jwt::key_from_jwk(jwk, alg),
                    _ => continue,
                };
                match parsed {
                    Ok(v) => found.push(v),
                    Err(e) => last_error = e,
                }
            }
        }
        if found.is_empty() {
            let why = if last_error.is_empty() { String::new() } else { format!(" ({last_error})") };
            cx.error(path, format!("this key verifies none of the allowed algorithms ({}){why}", allowed.join(", ")));
            continue;
        }
        keys.extend(found.into_iter().map(|verifier| Key { kid: kid.clone(), verifier }));
    }
    // Only the algorithms some key verifies (a fetched set may bring any
    // public-key algorithm allowed).
    let algorithms: Vec<&'static str> = allowed
        .iter()
        .copied()
        .filter(|a| keys.iter().any(|k| k.verifier.algorithm() == *a) || (jwks.is_some() && !a.starts_with("HS")))
        .collect();
    if s.user_max_budget.is_some() && s.user_claim.is_none() {
        cx.error(format!("{base}.user_max_budget"), "a budget per user needs user_claim to name the user");
    }
    super::check_usd(cx, &format!("{base}.user_max_budget"), s.user_max_budget);
    let audiences = s.audiences.as_ref().filter(|a| !a.is_empty()).map(|a| a.iter().cloned().collect::<HashSet<_>>());
    if s.audiences.is_none() {
        cx.warnings.push(format!("{base}: no audiences, so a token issued for any audience is accepted"));
    }
    if s.issuer.is_none() {
        cx.warnings.push(format!("{base}: no issuer, so a token from any issuer the keys verify is accepted"));
    }
    Some(JwtAuth {
        issuer: s.issuer.clone(),
        audiences,
        algorithms,
        leeway_s: s.leeway.unwrap_or(DEFAULT_LEEWAY_S),
        keys,
        team_claim: s.team_claim.clone().unwrap_or_else(|| "team".to_string()),
        user_claim: s.user_claim.clone(),
        user_budget_micro: s.user_max_budget.map(crate::budget::usd_to_micro),
        user_period: super::parse_period(cx, &format!("{base}.user_budget_duration"), s.user_budget_duration.as_deref()),
        jwks,
    })
}
