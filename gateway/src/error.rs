//! Every gateway error, mapped to HTTP in one place: OpenAI's error body
//! `{"error": {"message", "type", "param", "code"}}` with a stable `code` that metrics reuse.

use cada_core::store::StoreError;
use cada_core::EngineError;
use hyper::StatusCode;
use serde_json::json;

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI's `type` (`invalid_request_error`, `server_error`, ...).
    pub kind: &'static str,
    /// Stable machine-readable code (also the metric label).
    pub code: &'static str,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    pub message: String,
    /// Headers the error response carries (`retry-after`, the caller's rate-limit state).
    pub headers: Vec<(&'static str, String)>,
}

const INVALID: &str = "invalid_request_error";

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            param: None,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn invalid_json(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            INVALID,
            "invalid_json",
            format!("We could not parse the JSON body of your request: {detail}"),
        )
    }

    pub fn invalid_value(param: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID, "invalid_value", message).with_param(param)
    }

    pub fn invalid_type(param: &str, expected: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            INVALID,
            "invalid_type",
            format!("Invalid type for '{param}': expected {expected}."),
        )
        .with_param(param)
    }

    pub fn missing(param: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            INVALID,
            "missing_required_parameter",
            format!("Missing required parameter: '{param}'."),
        )
        .with_param(param)
    }

    pub fn unsupported(param: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            INVALID,
            "unsupported_parameter",
            message,
        )
        .with_param(param)
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            INVALID,
            "model_not_found",
            format!("The model '{model}' does not exist or you do not have access to it."),
        )
        .with_param("model")
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            INVALID,
            "request_too_large",
            format!("The request body exceeds the limit of {limit} bytes."),
        )
    }

    pub fn unknown_url(method: &hyper::Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            INVALID,
            "unknown_url",
            format!("Invalid URL ({method} {path})"),
        )
    }

    pub fn method_not_allowed(method: &hyper::Method, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            INVALID,
            "method_not_allowed",
            format!("Method {method} is not allowed on {path}"),
        )
    }

    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "model_not_ready",
            "The model is still loading; retry shortly.",
        )
    }

    /// An adapter version the gateway checked or tried to load and would not serve.
    pub fn adapter_refused(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_error",
            "adapter_refused",
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            message,
        )
    }

    /// The HTTP response: the JSON body, `Retry-After` and any extra headers.
    pub fn response(&self) -> crate::server::Response {
        let mut resp = crate::server::json_response(self.status, &self.body());
        let h = resp.headers_mut();
        for (name, value) in &self.headers {
            if let Ok(v) = hyper::header::HeaderValue::from_str(value) {
                h.insert(*name, v);
            }
        }
        resp
    }

    /// The JSON error body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let (status, kind, param) = match e {
            EngineError::ContextLengthExceeded { .. } => {
                (StatusCode::BAD_REQUEST, INVALID, Some("messages"))
            }
            EngineError::EmptyPrompt => (StatusCode::BAD_REQUEST, INVALID, Some("prompt")),
            EngineError::Template(_) => (StatusCode::BAD_REQUEST, INVALID, None),
            EngineError::Overloaded { .. } | EngineError::ShutDown | EngineError::Failed { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "server_error", None)
            }
            EngineError::Backend(_)
            | EngineError::ModelLoad { .. }
            | EngineError::Context(_)
            | EngineError::Decode(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        };
        Self {
            status,
            kind,
            code: e.code(),
            param: param.map(str::to_string),
            message: e.to_string(),
            headers: Vec::new(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::Invalid(_) | StoreError::Jsonl { .. } => StatusCode::BAD_REQUEST,
            StoreError::Busy
            | StoreError::Full { .. }
            | StoreError::Overloaded { .. }
            | StoreError::ShutDown
            | StoreError::Timeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let kind = if status.is_client_error() {
            INVALID
        } else {
            "server_error"
        };
        Self::new(status, kind, e.code(), e.to_string())
    }
}

impl ApiError {
    /// The same error with a message written for this endpoint.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// 401: no key, or one the gateway does not know (never echoed).
    pub fn invalid_api_key(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            INVALID,
            "invalid_api_key",
            message,
        )
    }

    /// 403: a valid key whose scope does not cover the endpoint.
    pub fn insufficient_permissions(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            INVALID,
            "insufficient_permissions",
            message,
        )
    }

    /// 429 with `Retry-After`; `what` is `requests` or `tokens`.
    pub fn rate_limited(
        what: &'static str,
        message: impl Into<String>,
        retry_after: std::time::Duration,
    ) -> Self {
        // OpenAI's `type` names the budget: `requests` or `tokens`.
        let kind = if what == "tokens" {
            "tokens"
        } else {
            "requests"
        };
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            kind,
            "rate_limit_exceeded",
            message,
        );
        // Whole seconds, rounded up, so a client that waits exactly this long gets through.
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        e.headers.push(("retry-after", secs.max(1).to_string()));
        e
    }

    /// 408 `request_timeout`: the body did not arrive in time.
    pub fn request_timeout(within: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            INVALID,
            "request_timeout",
            format!(
                "The request body did not arrive within {} s (limits.body_timeout_secs).",
                within.as_secs()
            ),
        )
    }

    /// 503 `overloaded` with `Retry-After: 1`: the gateway holds as many requests as it admits.
    pub fn overloaded(message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "overloaded",
            message,
        );
        e.headers.push(("retry-after", "1".to_owned()));
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = ApiError::invalid_value("temperature", "too hot");
        let b = e.body();
        assert_eq!(b["error"]["type"], "invalid_request_error");
        assert_eq!(b["error"]["param"], "temperature");
        assert_eq!(b["error"]["code"], "invalid_value");
        assert_eq!(b["error"]["message"], "too hot");
        let n = ApiError::not_ready().body();
        assert!(n["error"]["param"].is_null());
    }

    #[test]
    fn engine_errors_map_to_statuses() {
        let ctx = ApiError::from(EngineError::ContextLengthExceeded {
            limit: 10,
            requested: 20,
            prompt: 15,
            completion: 5,
        });
        assert_eq!(
            (ctx.status, ctx.code),
            (StatusCode::BAD_REQUEST, "context_length_exceeded")
        );
        let busy = ApiError::from(EngineError::Overloaded { queued: 3 });
        assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.code, "overloaded");
    }
}
