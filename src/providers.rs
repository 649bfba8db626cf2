//! Providers: what each one's API expects upstream.
//!
//! Three wire APIs:
//! - OpenAI's: OpenAI itself, and every OpenAI-compatible server (`openai/`
//!   with an `api_base`, or a named prefix with its default base, below);
//! - Azure OpenAI's: OpenAI's bodies, with the deployment and the API version
//!   in the path and the key in `api-key`;
//! - Anthropic's Messages API: OpenAI chat requests are translated to it and
//!   back (`crate::anthropic`), and `POST /v1/messages` passes through.

use crate::request::Endpoint;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAI,
    Anthropic,
    Azure,
    Groq,
    Mistral,
    DeepSeek,
    TogetherAI,
    Fireworks,
    XAI,
    OpenRouter,
    Perplexity,
    Gemini,
    Cohere,
    Ollama,
    Vllm,
}

/// The API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAI,
    Azure,
    Anthropic,
}

impl Provider {
    pub const ALL: [Provider; 15] = [
        Self::OpenAI,
        Self::Anthropic,
        Self::Azure,
        Self::Groq,
        Self::Mistral,
        Self::DeepSeek,
        Self::TogetherAI,
        Self::Fireworks,
        Self::XAI,
        Self::OpenRouter,
        Self::Perplexity,
        Self::Gemini,
        Self::Cohere,
        Self::Ollama,
        Self::Vllm,
    ];

    /// The prefix in `litellm_params.model` (`openai/gpt-4`), as LiteLLM
    /// spells it; `ollama_chat` is taken as `ollama`.
    pub fn from_prefix(prefix: &str) -> Option<Self> {
        if prefix == "ollama_chat" {
            return Some(Self::Ollama);
        }
        Self::ALL.into_iter().find(|p| p.name() == prefix)
    }

    /// The prefix, also the `provider` label of the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAI => "openai",
            Self::Anthropic => "anthropic",
            Self::Azure => "azure",
            Self::Groq => "groq",
            Self::Mistral => "mistral",
            Self::DeepSeek => "deepseek",
            Self::TogetherAI => "together_ai",
            Self::Fireworks => "fireworks_ai",
            Self::XAI => "xai",
            Self::OpenRouter => "openrouter",
            Self::Perplexity => "perplexity",
            Self::Gemini => "gemini",
            Self::Cohere => "cohere",
            Self::Ollama => "ollama",
            Self::Vllm => "hosted_vllm",
        }
    }

    pub fn api(self) -> Api {
        match self {
            Self::Anthropic => Api::Anthropic,
            Self::Azure => Api::Azure,
            _ => Api::OpenAI,
        }
    }

    /// The `api_base` used when a deployment sets none. None: the deployment
    /// must set one (an Azure resource, a vLLM server).
    pub fn default_api_base(self) -> Option<&'static str> {
        match self {
            Self::OpenAI => Some("https://api.openai.com/v1"),
            Self::Anthropic => Some("https://api.anthropic.com"),
            Self::Azure | Self::Vllm => None,
            Self::Groq => Some("https://api.groq.com/openai/v1"),
            Self::Mistral => Some("https://api.mistral.ai/v1"),
            Self::DeepSeek => Some("https://api.deepseek.com/v1"),
            Self::TogetherAI => Some("https://api.together.xyz/v1"),
            Self::Fireworks => Some("https://api.fireworks.ai/inference/v1"),
            Self::XAI => Some("https://api.x.ai/v1"),
            Self::OpenRouter => Some("https://openrouter.ai/api/v1"),
            Self::Perplexity => Some("https://api.perplexity.ai"),
            Self::Gemini => Some("https://generativelanguage.googleapis.com/v1beta/openai"),
            Self::Cohere => Some("https://api.cohere.ai/compatibility/v1"),
            Self::Ollama => Some("http://localhost:11434/v1"),
        }
    }

    /// Whether the provider serves an endpoint at all.
    fn serves(self, endpoint: Endpoint) -> bool {
        match (self.api(), endpoint) {
            (Api::Anthropic, Endpoint::ChatCompletions | Endpoint::Messages) => true,
            (Api::Anthropic, _) => false,
            (_, Endpoint::Messages) => false,
            (_, Endpoint::Completions) => !matches!(
                self,
                Self::Groq | Self::Mistral | Self::Perplexity | Self::Gemini | Self::Cohere | Self::XAI
            ),
            (_, Endpoint::Embeddings) => !matches!(
                self,
                Self::Groq | Self::DeepSeek | Self::Perplexity | Self::XAI | Self::OpenRouter
            ),
            (_, Endpoint::ChatCompletions) => true,
        }
    }

    /// The upstream path (with its query) for an endpoint, or None when the
    /// provider has no such endpoint. `deployment` is the upstream model
    /// (Azure puts it in the path); `api_version` is Azure's.
    pub fn upstream_path(
        self,
        base_path: &str,
        endpoint: Endpoint,
        deployment: &str,
        api_version: Option<&str>,
    ) -> Option<String> {
        if !self.serves(endpoint) {
            return None;
        }
        Some(match self.api() {
            Api::OpenAI => format!("{base_path}{}", endpoint.suffix()),
            Api::Azure => format!(
                "{base_path}/openai/deployments/{}{}?api-version={}",
                percent_encode_segment(deployment),
                endpoint.suffix(),
                percent_encode_segment(api_version.unwrap_or(AZURE_DEFAULT_API_VERSION))
            ),
            // Chat completions are translated to Messages.
            Api::Anthropic => format!("{base_path}/v1/messages"),
        })
    }

    /// The headers that carry the provider's key.
    pub fn auth_headers(self, key: &str) -> Vec<(&'static str, String)> {
        match self.api() {
            Api::OpenAI => vec![("authorization", format!("Bearer {key}"))],
            Api::Azure => vec![("api-key", key.to_string())],
            Api::Anthropic => vec![("x-api-key", key.to_string())],
        }
    }
}

/// The Azure OpenAI API version used when a deployment sets no
/// `api_version` (the newest GA version when this was written).
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// Percent-encodes what may not stand in a path segment or a query value.
fn percent_encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
        let path = |p: Provider, base: &str, e| p.upstream_path(base, e, "dep-1", None);
        assert_eq!(path(Provider::OpenAI, "/v1", Endpoint::Embeddings).as_deref(), Some("/v1/embeddings"));
        assert_eq!(path(Provider::Anthropic, "", Endpoint::ChatCompletions).as_deref(), Some("/v1/messages"));
        assert_eq!(path(Provider::Anthropic, "", Endpoint::Messages).as_deref(), Some("/v1/messages"));
        assert_eq!(path(Provider::Anthropic, "", Endpoint::Embeddings), None);
        assert_eq!(path(Provider::OpenAI, "/v1", Endpoint::Messages), None);
        assert_eq!(
            path(Provider::Azure, "", Endpoint::ChatCompletions).as_deref(),
            Some("/openai/deployments/dep-1/chat/completions?api-version=2024-10-21")
        );
        assert_eq!(
            Provider::Azure
                .upstream_path("", Endpoint::Embeddings, "my emb", Some("2024-06-01"))
                .as_deref(),
            Some("/openai/deployments/my%20emb/embeddings?api-version=2024-06-01")
        );
        assert_eq!(
            path(Provider::Gemini, "/v1beta/openai", Endpoint::ChatCompletions).as_deref(),
            Some("/v1beta/openai/chat/completions")
        );
        assert_eq!(path(Provider::Groq, "/openai/v1", Endpoint::Embeddings), None);
    }

    #[test]
    fn prefixes() {
        for p in Provider::ALL {
            assert_eq!(Provider::from_prefix(p.name()), Some(p));
        }
        assert_eq!(Provider::from_prefix("ollama_chat"), Some(Provider::Ollama));
        assert_eq!(Provider::from_prefix("bedrock"), None);
    }

    #[test]
    fn keys_go_where_each_api_expects() {
        assert_eq!(Provider::Groq.auth_headers("k"), vec![("authorization", "Bearer k".to_string())]);
        assert_eq!(Provider::Azure.auth_headers("k"), vec![("api-key", "k".to_string())]);
        assert_eq!(Provider::Anthropic.auth_headers("k"), vec![("x-api-key", "k".to_string())]);
    }
}
