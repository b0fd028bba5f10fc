//! What of a conversation the safety layer reads before it decides: precedents are retrieved
//! for the application's system message and every recent user turn, not the last message
//! alone, and `adaptive`'s probe reads the whole conversation. Harm placed in an earlier turn
//! ("here is the plan ... now go on") or in a system message is so screened like harm in the
//! last turn.

use std::sync::Arc;

use cada_core::policy::protocol::probe_system_prompt;
use cada_core::store::PrecedentRef;
use cada_core::{ChatMessage, ChatRole};

use super::{refs, Safety};
use crate::error::ApiError;

/// Most user turns retrieval reads (the most recent), next to the system message: the budget
/// of embedding work per request.
pub const MAX_SCREENED_TURNS: usize = 8;

/// The application's system message (when the conversation opens with one) and the rest.
pub fn split_system(messages: &[ChatMessage]) -> (Option<&str>, &[ChatMessage]) {
    match messages.first() {
        Some(m) if m.role == ChatRole::System => (Some(m.content.as_str()), &messages[1..]),
        _ => (None, messages),
    }
}

/// The texts retrieval reads, the last user turn last: the system messages and the most recent
/// [`MAX_SCREENED_TURNS`] user turns, empty ones left out.
pub fn screened_texts(messages: &[ChatMessage]) -> Vec<String> {
    let system = messages
        .iter()
        .filter(|m| m.role == ChatRole::System && !m.content.trim().is_empty())
        .map(|m| m.content.clone());
    let users: Vec<String> = messages
        .iter()
        .filter(|m| m.role == ChatRole::User && !m.content.trim().is_empty())
        .map(|m| m.content.clone())
        .collect();
    let recent = users[users.len().saturating_sub(MAX_SCREENED_TURNS)..].to_vec();
    system.chain(recent).collect()
}

/// The `top_k` precedents nearest to any screened text (each case once, at its best
/// similarity), and the embedding of the last screened text (the last user turn: what
/// near-duplicate merging of logged cases compares).
pub async fn retrieve(
    safety: &Arc<Safety>,
    messages: &[ChatMessage],
) -> Result<(Vec<PrecedentRef>, Vec<f32>), ApiError> {
    let texts = screened_texts(messages);
    let embeddings = {
        let safety = Arc::clone(safety);
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            safety
                .embedder
                .embed(if refs.is_empty() { &[""] } else { &refs })
        })
        .await
        .map_err(|e| ApiError::internal(format!("embedding task failed: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))?
    };
    let mut found: Vec<PrecedentRef> = Vec::new();
    for e in &embeddings {
        for p in refs(&safety.nearest(e)) {
            match found.iter_mut().find(|f| f.id == p.id) {
                Some(f) if f.similarity >= p.similarity => {}
                Some(f) => *f = p,
                None => found.push(p),
            }
        }
    }
    found.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
    found.truncate(safety.config.top_k);
    let last = embeddings.into_iter().last().unwrap_or_default();
    Ok((found, last))
}

/// `adaptive`'s probe without a calibrated adapter: the codes' verdict question over the whole
/// conversation, the application's system message kept under its own heading.
pub fn probe_messages(codes: &str, messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let (app_system, rest) = split_system(messages);
    let mut system = probe_system_prompt(codes);
    if let Some(app) = app_system {
        system.push_str("\n\nInstructions from the application:\n");
        system.push_str(app);
    }
    std::iter::once(ChatMessage::new(ChatRole::System, system))
        .chain(rest.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: ChatRole, content: &str) -> ChatMessage {
        ChatMessage::new(role, content)
    }

    #[test]
    fn earlier_turns_and_the_system_message_are_screened() {
        let conversation = [
            msg(ChatRole::System, "You are a chemistry tutor."),
            msg(ChatRole::User, "first"),
            msg(ChatRole::Assistant, "an answer"),
            msg(ChatRole::User, "  "),
            msg(ChatRole::User, "last"),
        ];
        assert_eq!(
            screened_texts(&conversation),
            ["You are a chemistry tutor.", "first", "last"]
        );
        let long: Vec<_> = (0..20)
            .map(|i| msg(ChatRole::User, &format!("turn {i}")))
            .collect();
        let texts = screened_texts(&long);
        assert_eq!(texts.len(), MAX_SCREENED_TURNS);
        assert_eq!(texts.last().map(String::as_str), Some("turn 19"));
    }

    #[test]
    fn the_probe_reads_every_turn() {
        let conversation = [
            msg(ChatRole::System, "app rules"),
            msg(ChatRole::User, "first"),
            msg(ChatRole::Assistant, "an answer"),
            msg(ChatRole::User, "last"),
        ];
        let probe = probe_messages("codes", &conversation);
        assert_eq!(probe.len(), 4);
        assert!(probe[0].content.contains("codes") && probe[0].content.contains("app rules"));
        assert_eq!(probe[1].content, "first");
    }
}
