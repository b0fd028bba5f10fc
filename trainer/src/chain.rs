//! Training sequences in exactly the token layout the gateway's `trained` mode serves: the chat
//! prompt of the bare request, then `Reasoning:`, the reasoning, the forced `\nVerdict:`, the
//! verdict and `\nAnswer:` (forced together), the answer and the end-of-turn token. Each piece is
//! tokenized on its own, as the gateway appends it, so training and serving see the same ids.

use cada_core::policy::protocol::{verdict_text, ANSWER_PREFIX, REASONING_PREFIX, VERDICT_PREFIX};
use cada_core::policy::{Deliberation, Label};
use cada_core::{ChatMessage, ChatRole, Engine, EngineError, Prompt};

/// One tokenized training sequence: `prompt_len` context tokens, then the scored completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// Index in `tokens` of the verdict's first token (the one the gateway reads), if any.
    pub verdict_at: Option<usize>,
}

/// Completion tokens of a chain and where its verdict token sits among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTokens {
    pub tokens: Vec<u32>,
    pub verdict_at: usize,
}

impl Sequence {
    pub fn completion_len(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
}

/// The serving prompt of `trained` mode up to and including `Reasoning:`.
pub fn trained_prompt(engine: &Engine, request: &str) -> Result<Prompt, EngineError> {
    let mut prompt = engine.chat_prompt(&[ChatMessage::new(ChatRole::User, request)])?;
    prompt.extend(&engine.tokens(REASONING_PREFIX));
    Ok(prompt)
}

/// Completion tokens of a chain: reasoning, forced verdict line, answer, end of turn.
pub fn chain_tokens(engine: &Engine, reasoning: &str, verdict: Label, answer: &str) -> ChainTokens {
    let mut t = engine.token_ids(&format!(" {}", reasoning.trim()));
    t.extend(engine.token_ids(VERDICT_PREFIX));
    let verdict_at = t.len();
    t.extend(engine.token_ids(&format!("{}{ANSWER_PREFIX}", verdict_text(verdict))));
    t.extend(engine.token_ids(&format!(" {}", answer.trim())));
    t.push(engine.end_of_turn());
    ChainTokens {
        tokens: t,
        verdict_at,
    }
}

/// A deliberation after `prompt`, laid out as served; `None` when it has no verdict.
pub fn sequence(engine: &Engine, prompt: &Prompt, chain: &Deliberation) -> Option<Sequence> {
    let verdict = chain.verdict?;
    let mut tokens: Vec<u32> = prompt.token_ids().into_iter().map(|t| t as u32).collect();
    let prompt_len = tokens.len();
    let c = chain_tokens(engine, &chain.reasoning, verdict, &chain.answer);
    tokens.extend(c.tokens);
    Some(Sequence {
        tokens,
        prompt_len,
        verdict_at: Some(prompt_len + c.verdict_at),
    })
}

/// A reviewed case with a label but no exemplar answer (a store case) as a training sequence:
/// the reasoning (the reviewer's note, or none) and the forced verdict line, and nothing after
/// it. The verdict is what `trained` mode reads; no answer is invented for the model to learn.
pub fn verdict_sequence(
    engine: &Engine,
    prompt: &Prompt,
    reasoning: &str,
    verdict: Label,
) -> Sequence {
    let mut tokens: Vec<u32> = prompt.token_ids().into_iter().map(|t| t as u32).collect();
    let prompt_len = tokens.len();
    // No reasoning at all is the probe's layout: `Reasoning:` straight into `\nVerdict:`.
    if !reasoning.trim().is_empty() {
        tokens.extend(engine.token_ids(&format!(" {}", reasoning.trim())));
    }
    tokens.extend(engine.token_ids(VERDICT_PREFIX));
    let verdict_at = tokens.len();
    tokens.extend(engine.token_ids(&format!("{}{ANSWER_PREFIX}", verdict_text(verdict))));
    Sequence {
        tokens,
        prompt_len,
        verdict_at: Some(verdict_at),
    }
}

/// The model's own reasoning (generated as `trained` mode serves it) and the forced verdict
/// line carrying the label. Only the verdict line is scored: the verdict learns to be right after
/// the reasoning the model actually writes, and the reasoning, right or wrong, is not reinforced.
pub fn own_reasoning_sequence(
    engine: &Engine,
    prompt: &Prompt,
    reasoning: &str,
    verdict: Label,
) -> Sequence {
    let mut s = verdict_sequence(engine, prompt, reasoning, verdict);
    s.prompt_len = s.verdict_at.unwrap_or(s.tokens.len()) - engine.token_ids(VERDICT_PREFIX).len();
    s
}

/// The probe layout: the verdict line right after `Reasoning:` (no reasoning), as `adaptive`
/// reads it with one prefill of the bare request. Only the verdict line is scored.
pub fn probe_sequence(engine: &Engine, prompt: &Prompt, verdict: Label) -> Sequence {
    let mut s = verdict_sequence(engine, prompt, "", verdict);
    s.prompt_len = s.verdict_at.unwrap_or(s.tokens.len());
    s
}

/// The first `n` sentences of a text (all of it when `n` is 0 or it has fewer). Sentences end
/// at `.`, `!` or `?` followed by whitespace; abbreviations may split early, which only shortens.
pub fn first_sentences(text: &str, n: usize) -> &str {
    let text = text.trim();
    if n == 0 {
        return text;
    }
    let mut count = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(b, b'.' | b'!' | b'?') && bytes.get(i + 1).is_none_or(u8::is_ascii_whitespace) {
            count += 1;
            if count == n {
                return &text[..=i];
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::first_sentences;

    #[test]
    fn first_sentences_cuts_at_sentence_ends() {
        let t = "Kill means ending a process. It is routine! Help fully? Yes.";
        assert_eq!(first_sentences(t, 1), "Kill means ending a process.");
        assert_eq!(
            first_sentences(t, 2),
            "Kill means ending a process. It is routine!"
        );
        assert_eq!(first_sentences(t, 9), t);
        assert_eq!(first_sentences(t, 0), t);
        assert_eq!(
            first_sentences("Use `kill -9 1234.5` now", 1),
            "Use `kill -9 1234.5` now"
        );
    }
}
