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
pub fn chain_tokens(engine: &Engine, reasoning: &str, verdict: Label, answer: &str) -> Vec<u32> {
    let mut t = engine.token_ids(&format!(" {}", reasoning.trim()));
    t.extend(engine.token_ids(VERDICT_PREFIX));
    t.extend(engine.token_ids(&format!("{}{ANSWER_PREFIX}", verdict_text(verdict))));
    t.extend(engine.token_ids(&format!(" {}", answer.trim())));
    t.push(engine.end_of_turn());
    t
}

/// The full training sequence of a deliberation for a request; `None` when the deliberation has
/// no verdict (it cannot be laid out as served).
pub fn sequence(
    engine: &Engine,
    request: &str,
    chain: &Deliberation,
) -> Result<Option<Sequence>, EngineError> {
    let Some(verdict) = chain.verdict else {
        return Ok(None);
    };
    let prompt: Vec<u32> = trained_prompt(engine, request)?
        .token_ids()
        .into_iter()
        .map(|t| t as u32)
        .collect();
    let prompt_len = prompt.len();
    let mut tokens = prompt;
    tokens.extend(chain_tokens(
        engine,
        &chain.reasoning,
        verdict,
        &chain.answer,
    ));
    Ok(Some(Sequence { tokens, prompt_len }))
}
