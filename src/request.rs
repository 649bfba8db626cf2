//! What a request asks for, judged from its method and path alone.

/// The inference endpoints the gateway forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    /// Anthropic's Messages API, passed through to Anthropic deployments.
    Messages,
}

impl Endpoint {
    pub const COUNT: usize = 4;
    pub const ALL: [Endpoint; 4] = [Self::ChatCompletions, Self::Completions, Self::Embeddings, Self::Messages];

    /// The path under an OpenAI-style base (`/v1`).
    pub fn suffix(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
            Self::Messages => "/messages",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Inference(Endpoint),
    /// `GET /v1/models`.
    ListModels,
    /// `GET /v1/models/{model}`.
    RetrieveModel(&'a str),
    /// `GET /v1/key/info`: the caller's own standing.
    KeyInfo,
    /// Not a gateway path; Envoy's own routes decide.
    NotOurs,
}

/// Classifies a `:path`. The query string is ignored; both `/v1/...` and the
/// bare form (`/chat/completions`, as the seed's clients call it) are accepted.
pub fn classify(path: &str) -> Route<'_> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let path = path.strip_prefix("/v1").filter(|p| p.starts_with('/')).unwrap_or(path);
    match path {
        "/chat/completions" => Route::Inference(Endpoint::ChatCompletions),
        "/completions" => Route::Inference(Endpoint::Completions),
        "/embeddings" => Route::Inference(Endpoint::Embeddings),
        "/messages" => Route::Inference(Endpoint::Messages),
        "/models" | "/models/" => Route::ListModels,
        "/key/info" => Route::KeyInfo,
        _ => match path.strip_prefix("/models/") {
            Some(model) if !model.is_empty() => Route::RetrieveModel(model),
            _ => Route::NotOurs,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        assert_eq!(classify("/v1/chat/completions"), Route::Inference(Endpoint::ChatCompletions));
        assert_eq!(classify("/chat/completions"), Route::Inference(Endpoint::ChatCompletions));
        assert_eq!(classify("/v1/completions?x=1"), Route::Inference(Endpoint::Completions));
        assert_eq!(classify("/embeddings"), Route::Inference(Endpoint::Embeddings));
        assert_eq!(classify("/v1/messages"), Route::Inference(Endpoint::Messages));
        assert_eq!(classify("/v1/models"), Route::ListModels);
        assert_eq!(classify("/v1/key/info?key=x"), Route::KeyInfo);
        assert_eq!(classify("/models"), Route::ListModels);
        assert_eq!(classify("/v1/models/gpt-4.1-mini"), Route::RetrieveModel("gpt-4.1-mini"));
        assert_eq!(classify("/v1"), Route::NotOurs);
        assert_eq!(classify("/v1x/chat/completions"), Route::NotOurs);
        assert_eq!(classify("/v1/chat/completions/extra"), Route::NotOurs);
        assert_eq!(classify("/metrics"), Route::NotOurs);
        assert_eq!(classify(""), Route::NotOurs);
    }
}
