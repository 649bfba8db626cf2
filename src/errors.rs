//! Errors as clients see them: OpenAI's JSON error shape, with the status,
//! `type` and `code` its SDKs map to exceptions.

use serde::Serialize;

/// Why a request was refused; becomes the `reason` label of
/// `tollgate_denied_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    Unauthenticated,
    ModelNotFound,
    ModelNotAllowed,
    BudgetExceeded,
    RateLimited,
    BadRequest,
    PayloadTooLarge,
    /// Not a refusal: the gateway failed. Not counted as a denial.
    Internal,
}

impl DenyReason {
    pub fn label(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::ModelNotFound => "model_not_found",
            Self::ModelNotAllowed => "model_not_allowed",
            Self::BudgetExceeded => "budget_exceeded",
            Self::RateLimited => "rate_limited",
            Self::BadRequest => "bad_request",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
    pub reason: DenyReason,
    /// Whose error shape the body takes.
    pub shape: Shape,
    /// Response headers besides `content-type` (`retry-after`, rate limits).
    pub headers: Vec<(&'static str, String)>,
}

/// The error shape a client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// `{"error": {"message", "type", "param", "code"}}`
    #[default]
    OpenAI,
    /// `{"type": "error", "error": {"type", "message"}}`, for `/v1/messages`.
    Anthropic,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    fn new(status: u16, reason: DenyReason, message: String) -> Self {
        Self { status, message, kind: "invalid_request_error", param: None, code: None, reason, shape: Shape::OpenAI, headers: Vec::new() }
    }

    /// The shape the clients of `endpoint` read.
    pub fn for_endpoint(self, endpoint: crate::request::Endpoint) -> Self {
        let shape = match endpoint {
            crate::request::Endpoint::Messages => Shape::Anthropic,
            _ => Shape::OpenAI,
        };
        Self { shape, ..self }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, DenyReason::BadRequest, message.into())
    }

    pub fn bad_param(param: &'static str, message: impl Into<String>) -> Self {
        Self { param: Some(param), ..Self::bad_request(message) }
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self { code: Some("invalid_api_key"), ..Self::new(401, DenyReason::Unauthenticated, message.into()) }
    }

    pub fn model_not_allowed(message: impl Into<String>) -> Self {
        Self {
            kind: "permission_error",
            param: Some("model"),
            code: Some("model_not_allowed"),
            ..Self::new(403, DenyReason::ModelNotAllowed, message.into())
        }
    }

    pub fn model_not_found(message: impl Into<String>) -> Self {
        Self {
            param: Some("model"),
            code: Some("model_not_found"),
            ..Self::new(404, DenyReason::ModelNotFound, message.into())
        }
    }

    /// 429 with OpenAI's own code for exhausted quota.
    pub fn budget_exceeded(team: &str, spent_micro: u64, reserved_micro: u64, budget_micro: u64) -> Self {
        Self::over_budget(&format!("Team \"{team}\""), "max_budget in user_access", spent_micro, reserved_micro, budget_micro)
    }

    /// Someone over a budget: `who` ("The key \"ci\"") and the `setting` to raise.
    pub fn over_budget(who: &str, setting: &str, spent_micro: u64, reserved_micro: u64, budget_micro: u64) -> Self {
        let usd = |micro: u64| micro as f64 / 1e6;
        let in_flight = if reserved_micro > 0 {
            format!(" (plus ${:.6} held by requests in flight)", usd(reserved_micro))
        } else {
            String::new()
        };
        Self {
            kind: "insufficient_quota",
            code: Some("insufficient_quota"),
            ..Self::new(
                429,
                DenyReason::BudgetExceeded,
                format!(
                    "{who} has used its budget: ${:.6} spent of ${:.6}{in_flight}. Ask your platform team to raise {setting}.",
                    usd(spent_micro),
                    usd(budget_micro)
                ),
            )
        }
    }

    pub fn too_large(size: u64, limit: usize) -> Self {
        let limit_mb = limit as f64 / (1024.0 * 1024.0);
        Self::new(
            413,
            DenyReason::PayloadTooLarge,
            format!(
                "The request body is {size} bytes; this gateway accepts at most {limit} bytes ({limit_mb} MiB, general_settings.max_request_size_mb). Send a smaller request."
            ),
        )
    }

    /// Too large, measured by Envoy before the filter saw the whole body.
    pub fn too_large_unknown(limit: usize) -> Self {
        let limit_mb = limit as f64 / (1024.0 * 1024.0);
        Self::new(
            413,
            DenyReason::PayloadTooLarge,
            format!(
                "The request body is larger than this gateway accepts: at most {limit} bytes ({limit_mb} MiB, general_settings.max_request_size_mb). Send a smaller request."
            ),
        )
    }

    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> Self {
        Self::new(
            405,
            DenyReason::BadRequest,
            format!("{method} is not supported on {path}; use {allowed}."),
        )
    }

    /// 500: the gateway itself failed (a hostcall refused, say).
    /// A team over one of its rate limits (`crate::limits`).
    pub fn rate_limited(refusal: crate::limits::Refusal) -> Self {
        let mut headers = vec![("retry-after", refusal.retry_after_s.to_string())];
        headers.extend(refusal.headers);
        Self {
            kind: "requests",
            code: Some("rate_limit_exceeded"),
            headers,
            ..Self::new(429, DenyReason::RateLimited, refusal.message)
        }
    }

    /// A provider's answer the gateway could not use.
    pub fn bad_gateway(message: &str) -> Self {
        Self { kind: "api_error", ..Self::new(502, DenyReason::Internal, format!("Gateway error: {message}.")) }
    }

    pub fn internal(message: &str) -> Self {
        Self { kind: "api_error", ..Self::new(500, DenyReason::Internal, format!("Gateway error: {message}.")) }
    }

    /// For paths the gateway does not serve (rendered into Envoy's routes).
    pub fn unknown_path() -> Self {
        Self {
            code: Some("not_found"),
            ..Self::new(
                404,
                DenyReason::BadRequest,
                "Unknown path. This gateway serves POST /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/messages, and GET /v1/models and /v1/key/info.".to_string(),
            )
        }
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        if self.shape == Shape::Anthropic {
            return self.anthropic_body();
        }
        let envelope = Envelope {
            error: Body { message: &self.message, kind: self.kind, param: self.param, code: self.code },
        };
        serde_json::to_string(&envelope).unwrap_or_else(|_| {
            String::from(r#"{"error":{"message":"internal error","type":"api_error","param":null,"code":null}}"#)
        })
    }
}

#[derive(Serialize)]
struct AnthropicEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicBody<'a>,
}

#[derive(Serialize)]
struct AnthropicBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

impl ApiError {
    /// Anthropic's error shape; its error types go by status.
    fn anthropic_body(&self) -> String {
        let kind = match self.status {
            400 | 405 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            529 | 503 => "overloaded_error",
            _ => "api_error",
        };
        let envelope = AnthropicEnvelope { kind: "error", error: AnthropicBody { kind, message: &self.message } };
        serde_json::to_string(&envelope).unwrap_or_else(|_| {
            String::from(r#"{"type":"error","error":{"type":"api_error","message":"internal error"}}"#)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shape() {
        let e = ApiError::model_not_found("The model \"gpt-5\" does not exist.");
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["error"]["message"], "The model \"gpt-5\" does not exist.");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(e.status, 404);

        let v: serde_json::Value = serde_json::from_str(&ApiError::bad_request("x").body()).unwrap();
        assert!(v["error"]["code"].is_null() && v["error"]["param"].is_null());
    }

    #[test]
    fn anthropic_shape_for_messages() {
        let e = ApiError::unauthenticated("bad key").for_endpoint(crate::request::Endpoint::Messages);
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
        assert_eq!(v["error"]["message"], "bad key");
        let e = ApiError::unauthenticated("bad key").for_endpoint(crate::request::Endpoint::ChatCompletions);
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert!(v.get("type").is_none());
    }

    #[test]
    fn too_large_names_the_setting() {
        let e = ApiError::too_large(40 << 20, 16 << 20);
        assert_eq!(e.status, 413);
        assert!(e.message.contains("max_request_size_mb"), "{}", e.message);
        assert!(e.message.contains("16777216"), "{}", e.message);
    }
}
