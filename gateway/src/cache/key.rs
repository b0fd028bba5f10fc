//! The cache key of a request: a sha256 over everything that decides its output (what is
//! served, the safety setting, the conversation and the sampling), and nothing that only shapes
//! the wire format (`stream`, `stream_options`), so one entry answers both forms.

use cada_core::{ChatMessage, GenerationParams};
use sha2::{Digest, Sha256};

/// A request's cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 32]);

/// Whether a request's output is determined by its input: greedy decoding, or a fixed seed.
pub fn cacheable(params: &GenerationParams) -> bool {
    params.temperature == 0.0 || params.seed.is_some()
}

/// Builds a [`Key`] from named fields; each is length-prefixed, so no two different field
/// sequences hash the same bytes.
#[derive(Debug, Clone)]
pub struct KeyBuilder(Sha256);

impl KeyBuilder {
    /// Starts a key in `namespace` (a key name when caches are per key, else empty) for the
    /// endpoint `endpoint`.
    pub fn new(namespace: &str, endpoint: &str) -> Self {
        Self(Sha256::new())
            .field("namespace", namespace)
            .field("endpoint", endpoint)
    }

    pub fn field(mut self, name: &str, value: &str) -> Self {
        for part in [name.as_bytes(), value.as_bytes()] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    pub fn opt(self, name: &str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.field(name, "some").field(name, v),
            None => self.field(name, "none"),
        }
    }

    /// The sampling and stopping controls (every field, through their `Debug` form).
    pub fn params(self, params: &GenerationParams) -> Self {
        self.field("params", &format!("{params:?}"))
    }

    pub fn messages(mut self, messages: &[ChatMessage]) -> Self {
        self = self.field("messages", &messages.len().to_string());
        for m in messages {
            self = self
                .field("role", m.role.as_str())
                .field("content", &m.content);
        }
        self
    }

    pub fn finish(self) -> Key {
        Key(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use cada_core::ChatRole;

    use super::*;

    fn key(messages: &[ChatMessage], params: &GenerationParams) -> Key {
        KeyBuilder::new("", "chat")
            .field("model", "m")
            .messages(messages)
            .params(params)
            .finish()
    }

    #[test]
    fn only_deterministic_requests_are_cacheable() {
        let mut p = GenerationParams::default();
        assert!(!cacheable(&p), "default temperature 1 without a seed");
        p.seed = Some(7);
        assert!(cacheable(&p));
        p.seed = None;
        p.temperature = 0.0;
        assert!(cacheable(&p));
    }

    #[test]
    fn every_input_that_changes_the_output_changes_the_key() {
        let hi = vec![ChatMessage::new(ChatRole::User, "hi")];
        let greedy = GenerationParams {
            temperature: 0.0,
            ..GenerationParams::default()
        };
        let base = key(&hi, &greedy);
        assert_eq!(base, key(&hi, &greedy.clone()), "stable");
        let other_text = vec![ChatMessage::new(ChatRole::User, "hi!")];
        let other_role = vec![ChatMessage::new(ChatRole::System, "hi")];
        let split = vec![
            ChatMessage::new(ChatRole::User, "h"),
            ChatMessage::new(ChatRole::User, "i"),
        ];
        let mut capped = greedy.clone();
        capped.max_tokens = Some(5);
        let mut stopped = greedy.clone();
        stopped.stop = vec!["x".into()];
        for (what, k) in [
            ("text", key(&other_text, &greedy)),
            ("role", key(&other_role, &greedy)),
            ("split messages", key(&split, &greedy)),
            ("max_tokens", key(&hi, &capped)),
            ("stop", key(&hi, &stopped)),
        ] {
            assert_ne!(base, k, "{what}");
        }
        let ns = |n: &str| KeyBuilder::new(n, "chat").finish();
        assert_ne!(ns("a"), ns("b"), "namespaces");
        // Length prefixes keep field boundaries: ("ab", "c") differs from ("a", "bc").
        let pair = |a: &str, b: &str| KeyBuilder::new("", "").field(a, b).finish();
        assert_ne!(pair("ab", "c"), pair("a", "bc"));
        let adapter = |a| KeyBuilder::new("", "").opt("adapter", a).finish();
        assert_ne!(adapter(None), adapter(Some("none")));
    }
}
