//! `/v1/chat/completions` request body: the common fields plus `messages`.

use cada_core::{ChatMessage, ChatRole};
use serde_json::Value;

use super::fields::Fields;
use super::sampling::Common;
use crate::error::ApiError;
use crate::safety::Mode;

/// A validated chat completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub common: Common,
    pub messages: Vec<ChatMessage>,
    /// Extension: the safety mode for this request (`off`, `cases`, `trained`, `adaptive`).
    pub safety_mode: Option<Mode>,
    /// Extension: return the deliberation as `reasoning_content`.
    pub include_reasoning: bool,
}

impl ChatRequest {
    pub fn parse(body: &Value, max_tokens_cap: u32, max_messages: usize) -> Result<Self, ApiError> {
        let f = Fields::of(body)?;
        let common = Common::parse(f, max_tokens_cap)?;
        if f.get("tools")
            .and_then(Value::as_array)
            .is_some_and(|t| !t.is_empty())
            || f.get("functions").is_some()
        {
            return Err(ApiError::unsupported(
                "tools",
                "Tool and function calling are not supported.",
            ));
        }
        if let Some(rf) = f.object("response_format")? {
            if rf.string("type")?.is_some_and(|t| t != "text") {
                return Err(ApiError::unsupported(
                    "response_format",
                    "Only response_format type 'text' is supported.",
                ));
            }
        }
        let items = match f.get("messages") {
            None => return Err(ApiError::missing("messages")),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(ApiError::invalid_type("messages", "an array")),
        };
        if items.is_empty() {
            return Err(ApiError::invalid_value(
                "messages",
                "'messages' must contain at least one message.",
            ));
        }
        if items.len() > max_messages {
            return Err(ApiError::invalid_value(
                "messages",
                format!(
                    "'messages' has {} entries; at most {max_messages} are allowed.",
                    items.len()
                ),
            ));
        }
        let messages = items
            .iter()
            .enumerate()
            .map(|(i, m)| parse_message(i, m))
            .collect::<Result<Vec<_>, _>>()?;
        let safety_mode = f
            .string("safety_mode")?
            .map(Mode::parse_field)
            .transpose()?;
        let include_reasoning = f.bool("include_reasoning")?.unwrap_or(false);
        Ok(Self {
            common,
            messages,
            safety_mode,
            include_reasoning,
        })
    }
}

fn parse_message(i: usize, m: &Value) -> Result<ChatMessage, ApiError> {
    let at = |field: &str| format!("messages[{i}].{field}");
    let f = match m {
        Value::Object(o) => Fields(o),
        _ => {
            return Err(ApiError::invalid_type(
                &format!("messages[{i}]"),
                "an object",
            ))
        }
    };
    let role = match f.get("role") {
        None => return Err(ApiError::missing(&at("role"))),
        Some(Value::String(r)) => r.as_str(),
        Some(_) => return Err(ApiError::invalid_type(&at("role"), "a string")),
    };
    let role = match role {
        "system" | "developer" => ChatRole::System,
        "user" => ChatRole::User,
        "assistant" => ChatRole::Assistant,
        "tool" | "function" => {
            return Err(ApiError::unsupported(
                &at("role"),
                "Tool messages are not supported.",
            ))
        }
        other => {
            return Err(ApiError::invalid_value(
                &at("role"),
                format!(
                    "Invalid role '{other}': expected one of system, developer, user, assistant."
                ),
            ))
        }
    };
    let content = match f.get("content") {
        None if role == ChatRole::Assistant => String::new(),
        None => return Err(ApiError::missing(&at("content"))),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            text_parts(parts).map_err(|e| ApiError::invalid_value(&at("content"), e))?
        }
        Some(_) => {
            return Err(ApiError::invalid_type(
                &at("content"),
                "a string or an array of content parts",
            ))
        }
    };
    Ok(ChatMessage::new(role, content))
}

/// Joins `[{"type": "text", "text": ...}]` parts; other part types are not supported.
fn text_parts(parts: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for part in parts {
        match (
            part.get("type").and_then(Value::as_str),
            part.get("text").and_then(Value::as_str),
        ) {
            (Some("text"), Some(text)) => out.push_str(text),
            (Some(other), _) if other != "text" => {
                return Err(format!(
                    "Content parts of type '{other}' are not supported; only 'text'."
                ))
            }
            _ => {
                return Err(
                    "Each content part must be {\"type\": \"text\", \"text\": string}.".into(),
                )
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ChatRequest, ApiError> {
        ChatRequest::parse(&v, 100, 8)
    }

    #[test]
    fn parses_roles_and_parts() {
        let r = parse(json!({"model": "m", "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null},
        ]}))
        .expect("valid");
        assert_eq!(
            r.messages[0],
            ChatMessage::new(ChatRole::System, "be brief")
        );
        assert_eq!(r.messages[1].content, "ab");
        assert_eq!(r.messages[2], ChatMessage::new(ChatRole::Assistant, ""));
    }

    #[test]
    fn rejects_bad_messages_with_param() {
        let cases = [
            (json!({"model": "m"}), "messages"),
            (json!({"model": "m", "messages": []}), "messages"),
            (json!({"model": "m", "messages": "hi"}), "messages"),
            (json!({"model": "m", "messages": [1]}), "messages[0]"),
            (
                json!({"model": "m", "messages": [{"content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user"}]}),
                "messages[0].content",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
                "messages[0].content",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "messages[0].content",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{}]}),
                "tools",
            ),
            (
                json!({"model": "m", "messages": vec![json!({"role": "user", "content": "x"}); 9]}),
                "messages",
            ),
        ];
        for (body, param) in cases {
            let err = parse(body.clone()).expect_err(&body.to_string());
            assert_eq!(err.param.as_deref(), Some(param), "{body}");
        }
    }
}
