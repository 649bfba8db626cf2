//! The three ways a key may be written in the config file.
//!
//! - `os.environ/NAME`: read from the environment. In the filter that is the
//!   Envoy process's environment, passed into the VM through
//!   `vm_config.environment_variables.host_env_keys`.
//! - `sha256:<64 hex>`: team keys only; only the digest is ever stored.
//! - anything else: a literal, accepted with a warning, because it ends up in
//!   Envoy's config dump.

use sha2::{Digest, Sha256};

const ENV_PREFIX: &str = "os.environ/";
const SHA_PREFIX: &str = "sha256:";

/// Where environment variables come from. The CLI and the filter both use
/// [`ProcessEnv`]; tests pass a map.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// `std::env`: the shell for the CLI, the WASI environment inside the VM.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// A key as written, before its value is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    Env(String),
    Digest([u8; 32]),
    Literal(String),
}

/// The name of the environment variable a key refers to, if it is one.
pub fn env_name(raw: &str) -> Option<&str> {
    raw.strip_prefix(ENV_PREFIX)
}

/// Parses one key. `allow_digest` is false for provider keys: the gateway must
/// send those upstream, so it needs the key itself.
pub fn parse_key(raw: &str, allow_digest: bool) -> Result<KeyRef, String> {
    if let Some(name) = raw.strip_prefix(ENV_PREFIX) {
        let valid = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !name.as_bytes().first().is_some_and(u8::is_ascii_digit);
        if !valid {
            return Err(format!(
                "\"{raw}\" is not a valid environment variable reference; write os.environ/NAME with NAME made of letters, digits and '_'"
            ));
        }
        return Ok(KeyRef::Env(name.to_string()));
    }
    if let Some(hex) = raw.strip_prefix(SHA_PREFIX) {
        if !allow_digest {
            return Err(
                "a provider key cannot be a sha256 digest: the gateway must send the key itself upstream"
                    .to_string(),
            );
        }
        return parse_hex32(hex).map(KeyRef::Digest).ok_or_else(|| {
            format!("\"{raw}\" is malformed: write sha256: followed by exactly 64 hex digits")
        });
    }
    if raw.trim().is_empty() {
        return Err("a key must not be empty".to_string());
    }
    if raw.trim() != raw {
        return Err("a key must not start or end with white space".to_string());
    }
    Ok(KeyRef::Literal(raw.to_string()))
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let hi = hex_value(*pair.first()?)?;
        let lo = hex_value(*pair.get(1)?)?;
        *slot = (hi << 4) | lo;
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            if let Some(d) = DIGITS.get(usize::from(nibble)) {
                out.push(char::from(*d));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(parse_key("os.environ/OPENAI_API_KEY", false), Ok(KeyRef::Env("OPENAI_API_KEY".into())));
        let digest = "cd7f306ff0f2dd7ef29315f3696fbf7848a00bdeaf9925258c2e91d0b206947d";
        let parsed = parse_key(&format!("sha256:{digest}"), true).unwrap();
        assert_eq!(parsed, KeyRef::Digest(sha256(b"team-beta-token")));
        assert_eq!(parse_key("sk-123", false), Ok(KeyRef::Literal("sk-123".into())));
    }

    #[test]
    fn rejects_malformed_keys() {
        assert!(parse_key("sha256:abc", true).unwrap_err().contains("64 hex digits"));
        assert!(parse_key(&format!("sha256:{}", "g".repeat(64)), true).is_err());
        assert!(parse_key(&format!("sha256:{}", "a".repeat(64)), false).unwrap_err().contains("provider key"));
        assert!(parse_key("os.environ/", true).is_err());
        assert!(parse_key("os.environ/1ABC", true).is_err());
        assert!(parse_key("os.environ/A-B", true).is_err());
        assert!(parse_key("", true).is_err());
        assert!(parse_key(" key", true).is_err());
    }

    #[test]
    fn hex_round_trips() {
        let d = sha256(b"x");
        assert_eq!(parse_hex32(&to_hex(&d)), Some(d));
        assert_eq!(parse_hex32(&to_hex(&d).to_uppercase()), Some(d));
    }
}
