//! `GatewayError`: every error the gateway itself answers a client with.
//!
//! Each variant knows its HTTP status, its OpenAI `code`/`type`, and the label it is counted under in
//! `llmproxy_http_request_errors_total{error}`. The body is always OpenAI-shaped:
//! `{"error": {"message": "...", "type": "...", "param": null, "code": "..."}}`.

use bytes::Bytes;
use serde_json::json;

/// An error produced by the gateway (not relayed from an upstream).
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayError {
    /// Malformed JSON, missing or wrongly typed field; `param` names the field.
    InvalidRequest {
        message: String,
        param: Option<&'static str>,
    },
    /// A parameter the model's provider has no equivalent for (`drop_params: true` drops it instead).
    UnsupportedParameter { message: String, param: String },
    /// Missing, unknown or expired key.
    InvalidApiKey(String),
    /// The listener (or key) is not scoped to the model.
    ModelNotAllowed(String),
    /// The listener or key is not scoped to a passthrough route, or the route does not allow the path.
    RouteNotAllowed(String),
    /// Unknown model; the message lists what the caller may use.
    ModelNotFound {
        model: String,
        available: Vec<String>,
    },
    /// No such endpoint on this listener.
    NotFound(String),
    /// Method not allowed on a known path.
    MethodNotAllowed(String),
    /// Body over `server.max_request_body`.
    RequestTooLarge { limit: usize },
    /// A request body `Content-Encoding` the gateway does not decode.
    UnsupportedMediaType(String),
    /// Every deployment of the model is unhealthy.
    NoHealthyUpstream(String),
    /// The upstream did not answer in time.
    UpstreamTimeout(String),
    /// Connect failures after every deployment was tried, or a broken upstream exchange.
    UpstreamError(String),
    /// Client-IP limit, key limit, queue full or queue wait exceeded.
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
    /// Shared state (Redis) unreachable with `state.redis_failure: closed`.
    StateUnavailable(String),
    /// The caller's key spent its `max_budget`.
    BudgetExceeded(String),
    /// Only the master key may do this.
    MasterKeyRequired(String),
    /// The request's end user (`user`) is blocked, or unknown with `keys.require_known_user`.
    UserNotAllowed(String),
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        GatewayError::InvalidRequest {
            message: message.into(),
            param,
        }
    }

    /// HTTP status sent to the client.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::InvalidRequest { .. } | GatewayError::UnsupportedParameter { .. } => 400,
            GatewayError::InvalidApiKey(_) => 401,
            GatewayError::ModelNotAllowed(_) | GatewayError::RouteNotAllowed(_) => 403,
            GatewayError::ModelNotFound { .. } | GatewayError::NotFound(_) => 404,
            GatewayError::MethodNotAllowed(_) => 405,
            GatewayError::RequestTooLarge { .. } => 413,
            GatewayError::UnsupportedMediaType(_) => 415,
            GatewayError::UpstreamError(_) => 502,
            GatewayError::NoHealthyUpstream(_) => 503,
            GatewayError::UpstreamTimeout(_) => 504,
            GatewayError::RateLimited { .. } => 429,
            GatewayError::StateUnavailable(_) => 503,
            GatewayError::BudgetExceeded(_) => 429,
            GatewayError::MasterKeyRequired(_) | GatewayError::UserNotAllowed(_) => 403,
        }
    }

    /// OpenAI `error.code`, also the metric label `error`.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::InvalidRequest { .. } => "invalid_request",
            GatewayError::UnsupportedParameter { .. } => "unsupported_parameter",
            GatewayError::InvalidApiKey(_) => "invalid_api_key",
            GatewayError::ModelNotAllowed(_) => "model_not_allowed",
            GatewayError::RouteNotAllowed(_) => "route_not_allowed",
            GatewayError::ModelNotFound { .. } => "model_not_found",
            GatewayError::NotFound(_) => "not_found",
            GatewayError::MethodNotAllowed(_) => "method_not_allowed",
            GatewayError::RequestTooLarge { .. } => "request_too_large",
            GatewayError::UnsupportedMediaType(_) => "unsupported_media_type",
            GatewayError::NoHealthyUpstream(_) => "no_healthy_upstream",
            GatewayError::UpstreamTimeout(_) => "upstream_timeout",
            GatewayError::UpstreamError(_) => "upstream_error",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::StateUnavailable(_) => "state_unavailable",
            GatewayError::BudgetExceeded(_) => "budget_exceeded",
            GatewayError::MasterKeyRequired(_) => "master_key_required",
            GatewayError::UserNotAllowed(_) => "user_not_allowed",
        }
    }

    /// OpenAI `error.type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            GatewayError::InvalidRequest { .. }
            | GatewayError::UnsupportedParameter { .. }
            | GatewayError::ModelNotFound { .. }
            | GatewayError::NotFound(_)
            | GatewayError::MethodNotAllowed(_)
            | GatewayError::RequestTooLarge { .. }
            | GatewayError::UnsupportedMediaType(_) => "invalid_request_error",
            GatewayError::InvalidApiKey(_) => "authentication_error",
            GatewayError::ModelNotAllowed(_) | GatewayError::RouteNotAllowed(_) => {
                "permission_error"
            }
            GatewayError::NoHealthyUpstream(_)
            | GatewayError::UpstreamTimeout(_)
            | GatewayError::UpstreamError(_)
            | GatewayError::StateUnavailable(_) => "api_error",
            GatewayError::RateLimited { .. } | GatewayError::BudgetExceeded(_) => {
                "rate_limit_error"
            }
            GatewayError::MasterKeyRequired(_) | GatewayError::UserNotAllowed(_) => {
                "permission_error"
            }
        }
    }

    pub fn message(&self) -> String {
        match self {
            GatewayError::InvalidRequest { message, .. }
            | GatewayError::UnsupportedParameter { message, .. } => message.clone(),
            GatewayError::InvalidApiKey(m)
            | GatewayError::ModelNotAllowed(m)
            | GatewayError::RouteNotAllowed(m)
            | GatewayError::NoHealthyUpstream(m)
            | GatewayError::UpstreamTimeout(m)
            | GatewayError::UpstreamError(m)
            | GatewayError::StateUnavailable(m)
            | GatewayError::BudgetExceeded(m)
            | GatewayError::MasterKeyRequired(m)
            | GatewayError::UserNotAllowed(m) => m.clone(),
            GatewayError::RateLimited { message, .. } => message.clone(),
            GatewayError::ModelNotFound { model, available } => format!(
                "The model `{model}` does not exist or you do not have access to it. Available models: {}",
                if available.is_empty() {
                    "(none)".to_string()
                } else {
                    available.join(", ")
                }
            ),
            GatewayError::NotFound(path) => format!("Unknown request URL: {path}"),
            GatewayError::MethodNotAllowed(m) | GatewayError::UnsupportedMediaType(m) => m.clone(),
            GatewayError::RequestTooLarge { limit } => {
                format!("Request body is larger than the limit of {limit} bytes")
            }
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            GatewayError::InvalidRequest { param, .. } => *param,
            GatewayError::UnsupportedParameter { param, .. } => Some(param.as_str()),
            GatewayError::ModelNotFound { .. } | GatewayError::ModelNotAllowed(_) => Some("model"),
            _ => None,
        }
    }

    /// `Retry-After` for the answer, when the client should come back later.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            GatewayError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The OpenAI-shaped JSON body.
    pub fn body(&self) -> Bytes {
        openai_error_body(
            &self.message(),
            self.error_type(),
            self.param(),
            self.code(),
        )
    }

    /// The same error in Anthropic's shape, for callers of `POST /v1/messages` (the Anthropic SDKs
    /// read `error.type`): `{"type":"error","error":{"type":"...","message":"..."}}`.
    pub fn anthropic_body(&self) -> Bytes {
        let kind = match self.status() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        };
        let v = json!({"type": "error", "error": {"type": kind, "message": self.message()}});
        Bytes::from(v.to_string())
    }
}

/// Serialise an OpenAI-shaped error object.
pub fn openai_error_body(message: &str, kind: &str, param: Option<&str>, code: &str) -> Bytes {
    let v = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    Bytes::from(v.to_string())
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status(), self.code(), self.message())
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_openai_shaped() {
        let e = GatewayError::invalid("`model` must be a string", Some("model"));
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["code"], "invalid_request");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn model_not_found_lists_models() {
        let e = GatewayError::ModelNotFound {
            model: "x".into(),
            available: vec!["a".into(), "b".into()],
        };
        assert!(e.message().contains("a, b"));
        assert_eq!(e.status(), 404);
    }
}
