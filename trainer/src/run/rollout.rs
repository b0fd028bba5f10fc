//! Sampling reasoning chains through the llama.cpp engine (with the current adapter), many at
//! once so continuous batching keeps every slot busy, and the prompts they are sampled from.

use std::collections::VecDeque;

use cada_core::embed::{Embedder, PrecedentIndex};
use cada_core::policy::protocol::{cases_system_prompt, REASONING_PREFIX};
use cada_core::policy::{Deliberation, Policy};
use cada_core::{
    ChatMessage, ChatRole, Engine, EngineError, Event, Generation, GenerationParams, Prompt,
};

/// One sampled chain.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The assistant text after `Reasoning:`.
    pub text: String,
    pub chain: Deliberation,
    pub completion_tokens: usize,
}

/// The `cases` prompt of a request: codes and its nearest precedents (never the case itself,
/// which would let the model copy the answer), then `Reasoning:`.
pub fn cases_prompt(
    engine: &Engine,
    policy: &Policy,
    index: &PrecedentIndex,
    embedder: &Embedder,
    request: &str,
    own_id: &str,
    k: usize,
) -> Result<Prompt, String> {
    let query = embedder.embed_one(request).map_err(|e| e.to_string())?;
    let precedents: Vec<_> = index
        .nearest(policy, &query, k + 1)
        .into_iter()
        .filter(|p| p.case.id != own_id)
        .take(k)
        .collect();
    let system = cases_system_prompt(&policy.codes, &precedents, None);
    let mut prompt = engine
        .chat_prompt(&[
            ChatMessage::new(ChatRole::System, system),
            ChatMessage::new(ChatRole::User, request),
        ])
        .map_err(|e| e.to_string())?;
    prompt.extend(&engine.tokens(REASONING_PREFIX));
    Ok(prompt)
}

/// Samples `per_prompt` chains for each prompt; results are in prompt order. At most `window`
/// generations are queued at once so the engine's queue never overflows.
pub fn sample(
    engine: &Engine,
    prompts: &[Prompt],
    per_prompt: usize,
    params: &GenerationParams,
    seed: u64,
    window: usize,
) -> Result<Vec<Vec<Sample>>, EngineError> {
    let jobs: Vec<(usize, Prompt, u32)> = prompts
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            (0..per_prompt).map(move |j| {
                let s = seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add((i * per_prompt + j) as u64);
                (i, p.clone(), s as u32)
            })
        })
        .collect();
    let mut out: Vec<Vec<Sample>> = vec![Vec::new(); prompts.len()];
    let mut queue = jobs.into_iter();
    let mut running: VecDeque<(usize, Generation)> = VecDeque::new();
    loop {
        while running.len() < window.max(1) {
            let Some((i, prompt, s)) = queue.next() else {
                break;
            };
            let p = GenerationParams {
                seed: Some(s),
                ..params.clone()
            };
            running.push_back((i, engine.generate(prompt, p)?));
        }
        let Some((i, mut generation)) = running.pop_front() else {
            break;
        };
        out[i].push(drain(&mut generation)?);
    }
    Ok(out)
}

fn drain(generation: &mut Generation) -> Result<Sample, EngineError> {
    let mut text = String::new();
    loop {
        match generation.next_blocking() {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done { usage, .. }) => {
                let chain = Deliberation::parse(&format!("{REASONING_PREFIX}{text}"));
                return Ok(Sample {
                    text,
                    chain,
                    completion_tokens: usage.completion_tokens,
                });
            }
            Some(Event::Error(e)) => return Err(e),
            Some(Event::Scores { .. }) | None => {
                return Err(EngineError::Context(
                    "the engine ended a rollout without finishing it".into(),
                ))
            }
        }
    }
}
