//! `/v1/completions` request body: the common fields plus `prompt`.

use serde_json::Value;

use super::fields::Fields;
use super::sampling::Common;
use crate::error::ApiError;
use crate::safety::Mode;

/// A validated text completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    pub common: Common,
    pub prompt: String,
    /// Extension, as on chat completions: the safety mode the prompt is judged in.
    pub safety_mode: Option<Mode>,
}

impl CompletionRequest {
    pub fn parse(body: &Value, max_tokens_cap: u32) -> Result<Self, ApiError> {
        let f = Fields::of(body)?;
        let common = Common::parse(f, max_tokens_cap)?;
        if f.bool("echo")? == Some(true) {
            return Err(ApiError::unsupported("echo", "echo is not supported."));
        }
        if f.string("suffix")?.is_some() {
            return Err(ApiError::unsupported("suffix", "suffix is not supported."));
        }
        let prompt = match f.get("prompt") {
            None => return Err(ApiError::missing("prompt")),
            Some(Value::String(s)) => s.clone(),
            // A batch of one prompt is common in client libraries; larger batches would need n choices.
            Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
                items[0].as_str().unwrap_or_default().to_string()
            }
            Some(Value::Array(_)) => {
                return Err(ApiError::unsupported(
                    "prompt",
                    "Only a single string prompt is supported.",
                ))
            }
            Some(_) => return Err(ApiError::invalid_type("prompt", "a string")),
        };
        if prompt.is_empty() {
            return Err(ApiError::invalid_value(
                "prompt",
                "'prompt' must not be empty.",
            ));
        }
        let safety_mode = f
            .string("safety_mode")?
            .map(Mode::parse_field)
            .transpose()?;
        Ok(Self {
            common,
            prompt,
            safety_mode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompt_forms() {
        let r =
            CompletionRequest::parse(&json!({"model": "m", "prompt": ["hi"]}), 10).expect("valid");
        assert_eq!(r.prompt, "hi");
        for (body, param) in [
            (json!({"model": "m"}), "prompt"),
            (json!({"model": "m", "prompt": ""}), "prompt"),
            (json!({"model": "m", "prompt": ["a", "b"]}), "prompt"),
            (json!({"model": "m", "prompt": [1, 2]}), "prompt"),
            (json!({"model": "m", "prompt": "x", "echo": true}), "echo"),
        ] {
            let err = CompletionRequest::parse(&body, 10).expect_err(&body.to_string());
            assert_eq!(err.param.as_deref(), Some(param));
        }
    }
}
