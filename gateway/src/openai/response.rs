//! Response objects in OpenAI's wire format, for both endpoint shapes: `chat.completion`
//! (+ `.chunk`) and `text_completion`, with the same `id` and `created` across a stream.

use cada_core::{FinishReason, Usage};
use serde_json::{json, Value};

/// Which endpoint's object layout to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Chat,
    Text,
}

/// Identity of one response, shared by every chunk of a stream.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub shape: Shape,
    pub id: String,
    pub created: u64,
    pub model: String,
    /// Whether chunks carry `"usage": null` (OpenAI does so when `include_usage` is set).
    pub include_usage: bool,
}

pub const SYSTEM_FINGERPRINT: &str = concat!("cada-", env!("CARGO_PKG_VERSION"));

impl Envelope {
    pub fn new(shape: Shape, model: &str, include_usage: bool) -> Self {
        let prefix = match shape {
            Shape::Chat => "chatcmpl",
            Shape::Text => "cmpl",
        };
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            shape,
            id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
            created,
            model: model.to_string(),
            include_usage,
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.shape, chunk) {
            (Shape::Chat, false) => "chat.completion",
            (Shape::Chat, true) => "chat.completion.chunk",
            (Shape::Text, _) => "text_completion",
        }
    }

    fn base(&self, chunk: bool, choices: Value) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        });
        if chunk && self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }

    /// The complete (non-streaming) response.
    pub fn complete(&self, text: &str, finish: FinishReason, usage: Usage) -> Value {
        let choice = match self.shape {
            Shape::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": finish.as_str(),
            }),
            Shape::Text => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish.as_str()})
            }
        };
        let mut v = self.base(false, json!([choice]));
        v["usage"] = usage_json(usage);
        v
    }

    /// First chunk of a chat stream: the role. Text streams have none.
    pub fn role_chunk(&self) -> Option<Value> {
        (self.shape == Shape::Chat).then(|| {
            self.base(
                true,
                json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
            )
        })
    }

    /// A chunk carrying new text.
    pub fn text_chunk(&self, text: &str) -> Value {
        self.choice_chunk(json!({"content": text}), text, None)
    }

    /// The last choice chunk, carrying `finish_reason`.
    pub fn finish_chunk(&self, finish: FinishReason) -> Value {
        self.choice_chunk(json!({}), "", Some(finish))
    }

    /// The `include_usage` chunk: no choices, only usage.
    pub fn usage_chunk(&self, usage: Usage) -> Value {
        let mut v = self.base(true, json!([]));
        v["usage"] = usage_json(usage);
        v
    }

    fn choice_chunk(&self, delta: Value, text: &str, finish: Option<FinishReason>) -> Value {
        let finish = finish.map(FinishReason::as_str);
        let choice = match self.shape {
            Shape::Chat => {
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Shape::Text => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
            }
        };
        self.base(true, json!([choice]))
    }
}

pub fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_stream_objects() {
        let e = Envelope::new(Shape::Chat, "m", true);
        assert!(e.id.starts_with("chatcmpl-"));
        let role = e.role_chunk().expect("chat has a role chunk");
        assert_eq!(role["object"], "chat.completion.chunk");
        assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
        assert!(role["usage"].is_null() && role.get("usage").is_some());
        let fin = e.finish_chunk(FinishReason::Length);
        assert_eq!(fin["choices"][0]["finish_reason"], "length");
        assert_eq!(fin["id"], role["id"]);
        let usage = e.usage_chunk(Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
        });
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 7);
    }

    #[test]
    fn text_completion_objects() {
        let e = Envelope::new(Shape::Text, "m", false);
        assert!(e.role_chunk().is_none());
        let c = e.text_chunk("hi");
        assert_eq!(c["object"], "text_completion");
        assert_eq!(c["choices"][0]["text"], "hi");
        assert!(c.get("usage").is_none());
        let full = e.complete(
            "done",
            FinishReason::Stop,
            Usage {
                prompt_tokens: 1,
                completion_tokens: 2,
            },
        );
        assert_eq!(full["choices"][0]["finish_reason"], "stop");
        assert_eq!(full["usage"]["completion_tokens"], 2);
    }
}
