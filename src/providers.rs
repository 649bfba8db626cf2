//! Providers: what each one's API expects upstream.
//!
//! For now every provider is reached through an OpenAI-compatible chat API:
//! OpenAI itself (and any server that speaks its API via `api_base`), and
//! Anthropic through its OpenAI SDK compatibility endpoint
//! (`https://api.anthropic.com/v1/chat/completions`).

use crate::request::Endpoint;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAI,
    Anthropic,
}

impl Provider {
    pub const ALL: [Provider; 2] = [Self::OpenAI, Self::Anthropic];

    /// The prefix in `litellm_params.model` (`openai/gpt-4`).
    pub fn from_prefix(prefix: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == prefix)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAI => "openai",
            Self::Anthropic => "anthropic",
        }
    }

    pub fn default_api_base(self) -> &'static str {
        match self {
            Self::OpenAI => "https://api.openai.com/v1",
            Self::Anthropic => "https://api.anthropic.com",
        }
    }

    /// The upstream path for an endpoint, or None when the provider has no
    /// such endpoint (Anthropic has no completions or embeddings).
    pub fn upstream_path(self, base_path: &str, endpoint: Endpoint) -> Option<String> {
        match self {
            Self::OpenAI => Some(format!("{base_path}{}", endpoint.suffix())),
            Self::Anthropic => match endpoint {
                Endpoint::ChatCompletions => Some(format!("{base_path}/v1/chat/completions")),
                Endpoint::Completions | Endpoint::Embeddings => None,
            },
        }
    }

    /// The headers that carry the provider's key.
    pub fn auth_headers(self, key: &str) -> Vec<(String, String)> {
        match self {
            // Anthropic's OpenAI-compatible endpoint takes the key as a bearer
            // token, as the OpenAI SDK sends it.
            Self::OpenAI | Self::Anthropic => {
                vec![("authorization".to_string(), format!("Bearer {key}"))]
            }
        }
    }
}

/// Headers a client may use to carry credentials. None of them may reach a
/// provider: the gateway removes them all and sets the provider's own.
pub const CLIENT_CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

/// Headers that pick an account at the provider. Requests go out on the
/// gateway's key, so a client may not pick the organisation or project it is
/// billed to.
pub const CLIENT_ACCOUNT_HEADERS: [&str; 2] = ["openai-organization", "openai-project"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_per_provider() {
        assert_eq!(
            Provider::OpenAI.upstream_path("/v1", Endpoint::Embeddings).as_deref(),
            Some("/v1/embeddings")
        );
        assert_eq!(
            Provider::Anthropic.upstream_path("", Endpoint::ChatCompletions).as_deref(),
            Some("/v1/chat/completions")
        );
        assert_eq!(Provider::Anthropic.upstream_path("", Endpoint::Embeddings), None);
    }

    #[test]
    fn prefixes() {
        assert_eq!(Provider::from_prefix("openai"), Some(Provider::OpenAI));
        assert_eq!(Provider::from_prefix("anthropic"), Some(Provider::Anthropic));
        assert_eq!(Provider::from_prefix("azure"), None);
    }
}
