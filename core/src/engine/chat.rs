//! Chat-template rendering that user text cannot escape: the model's template is applied to
//! placeholder contents, then the rendered markup (role markers) is tokenized with special-token
//! parsing on and every message's text with it off, so `<|im_start|>system` typed by a user stays text.

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;

use super::EngineError;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

impl ChatRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: ChatRole, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// Tokens ready for the engine, with the count used for context checks and usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub(crate) tokens: Vec<LlamaToken>,
}

impl Prompt {
    /// Appends another prompt's tokens (forced text after a rendered conversation).
    pub fn extend(&mut self, other: &Prompt) {
        self.tokens.extend_from_slice(&other.tokens);
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Raw token ids (for inspection and tests).
    pub fn token_ids(&self) -> Vec<i32> {
        self.tokens.iter().map(|t| t.0).collect()
    }
}

/// Placeholder markers from Unicode's private-use area: templates pass them through untouched.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

fn placeholder(i: usize) -> String {
    format!("{OPEN}{i}{CLOSE}")
}

/// A piece of the rendered conversation.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    /// Markup produced by the template: may contain control tokens.
    Markup(&'a str),
    /// The content of message `i`: plain text, never parsed for control tokens.
    Content(usize),
}

/// Splits a template rendered over placeholders into markup and content references.
fn split_rendered(rendered: &str, n_messages: usize) -> Result<Vec<Piece<'_>>, EngineError> {
    let mut pieces = Vec::new();
    let mut seen = vec![false; n_messages];
    let mut rest = rendered;
    while let Some(start) = rest.find(OPEN) {
        if start > 0 {
            pieces.push(Piece::Markup(&rest[..start]));
        }
        let after = &rest[start + OPEN.len_utf8()..];
        let end = after.find(CLOSE).ok_or_else(|| {
            EngineError::Template("template mangled a message placeholder".into())
        })?;
        let index: usize = after[..end]
            .parse()
            .map_err(|_| EngineError::Template("template mangled a message placeholder".into()))?;
        match seen.get_mut(index) {
            Some(s) if !*s => *s = true,
            _ => {
                return Err(EngineError::Template(
                    "template repeated or invented a message".into(),
                ))
            }
        }
        pieces.push(Piece::Content(index));
        rest = &after[end + CLOSE.len_utf8()..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Markup(rest));
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(EngineError::Template(format!(
            "the chat template dropped message {missing}"
        )));
    }
    Ok(pieces)
}

/// The chat template of a model, and the fallback used when llama.cpp does not know it.
#[derive(Debug)]
pub(crate) struct ChatFormat {
    template: LlamaChatTemplate,
}

impl ChatFormat {
    /// Uses the model's own template when llama.cpp can apply it, else ChatML.
    pub(crate) fn for_model(model: &LlamaModel) -> Result<Self, EngineError> {
        let applies = |t: &LlamaChatTemplate| {
            LlamaChatMessage::new("user".into(), placeholder(0))
                .ok()
                .and_then(|msg| model.apply_chat_template(t, &[msg], true).ok())
                .is_some()
        };
        match model.chat_template(None) {
            Ok(t) if applies(&t) => return Ok(Self { template: t }),
            Ok(_) => {
                tracing::warn!("llama.cpp cannot apply the model's chat template; using ChatML")
            }
            Err(_) => tracing::warn!("model has no chat template; using ChatML"),
        }
        let template =
            LlamaChatTemplate::new("chatml").map_err(|e| EngineError::Template(e.to_string()))?;
        Ok(Self { template })
    }

    /// The template text (or built-in template name) in use.
    pub(crate) fn source(&self) -> String {
        self.template.to_string().unwrap_or_default()
    }

    /// Renders and tokenizes a conversation, ending with the assistant's turn opened.
    pub(crate) fn tokenize(
        &self,
        model: &LlamaModel,
        messages: &[ChatMessage],
    ) -> Result<Prompt, EngineError> {
        let stand_ins = messages
            .iter()
            .enumerate()
            .map(|(i, m)| LlamaChatMessage::new(m.role.as_str().to_string(), placeholder(i)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EngineError::Template(e.to_string()))?;
        let rendered = model
            .apply_chat_template(&self.template, &stand_ins, true)
            .map_err(|e| EngineError::Template(e.to_string()))?;
        let vocab = model.vocab();
        let mut tokens = Vec::new();
        for (n, piece) in split_rendered(&rendered, messages.len())?
            .into_iter()
            .enumerate()
        {
            match piece {
                // BOS (if the model wants one) only at the very start.
                Piece::Markup(text) => tokens.extend(vocab.tokenize(text.as_bytes(), n == 0, true)),
                Piece::Content(i) => {
                    tokens.extend(vocab.tokenize(messages[i].content.as_bytes(), false, false))
                }
            }
        }
        Ok(Prompt { tokens })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_markup_and_contents() {
        let rendered = format!(
            "<|im_start|>system\n{}<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
            placeholder(0),
            placeholder(1)
        );
        let pieces = split_rendered(&rendered, 2).expect("valid");
        assert_eq!(
            pieces,
            vec![
                Piece::Markup("<|im_start|>system\n"),
                Piece::Content(0),
                Piece::Markup("<|im_end|>\n<|im_start|>user\n"),
                Piece::Content(1),
                Piece::Markup("<|im_end|>\n<|im_start|>assistant\n"),
            ]
        );
    }

    #[test]
    fn dropped_or_duplicated_messages_are_errors() {
        let one = placeholder(0);
        assert!(split_rendered(&one, 2).is_err());
        assert!(split_rendered(&format!("{one}{one}"), 1).is_err());
        assert!(split_rendered(&format!("{OPEN}x{CLOSE}"), 1).is_err());
        assert!(split_rendered(&format!("{OPEN}0"), 1).is_err());
    }
}
