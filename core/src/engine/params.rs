//! What a caller asks of the engine (sampling, limits) and what it gets back (events, usage).

use std::time::Duration;

/// Sampling and stopping controls for one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    /// 0 selects greedy decoding; otherwise logits are divided by it before sampling.
    pub temperature: f32,
    /// Nucleus sampling mass; 1.0 disables.
    pub top_p: f32,
    /// Keep the k most likely tokens; 0 disables.
    pub top_k: u32,
    /// Drop tokens below `min_p` times the top probability; 0 disables.
    pub min_p: f32,
    /// Fixed seed for reproducible sampling; `None` draws one.
    pub seed: Option<u32>,
    /// Multiplicative repetition penalty (llama.cpp `repeat_penalty`); 1.0 disables.
    pub repetition_penalty: f32,
    /// OpenAI-style additive presence penalty; 0 disables.
    pub presence_penalty: f32,
    /// OpenAI-style additive frequency penalty; 0 disables.
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: u32,
    /// Upper bound on generated tokens, reserved in the context up front (a prompt that leaves
    /// no room for it is refused); `None` means until the context is full.
    pub max_tokens: Option<u32>,
    /// Most tokens generated when `max_tokens` is unset (a server's cap); not reserved, so it
    /// only ever ends a generation earlier than the context would.
    pub limit: Option<u32>,
    /// Text sequences that end generation; they are matched across token boundaries and not returned.
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens (benchmarks want a fixed length).
    pub ignore_eos: bool,
}

/// Which weights an operation runs on. An engine that serves an adapter can set it aside per
/// session: the adapter deliberates and the base model answers, so answers stay the base
/// model's (a small adapter trained on the deliberation format rewrites plain answers too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weights {
    /// The model with the engine's adapter applied (the model alone when it has none).
    #[default]
    Adapted,
    /// The base model alone.
    Base,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            seed: None,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            max_tokens: None,
            limit: None,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// Why a generation ended, in OpenAI's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token or a stop sequence.
    Stop,
    /// `max_tokens` reached or the slot's context is full.
    Length,
    /// Withheld by a content filter: never the engine's, a gateway may answer a refusal so.
    ContentFilter,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ContentFilter => "content_filter",
        }
    }
}

/// Token counts of a finished generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// Where the time of a generation went, measured on the engine thread.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    /// Waiting for a free slot.
    pub queued: Duration,
    /// From slot admission to the first sampled token (prompt processing).
    pub prefill: Duration,
    /// From the first sampled token to the end.
    pub decode: Duration,
}

/// What the engine sends back for one operation, in order: for a generation zero or more `Text`,
/// then one `Done` or `Error`; for a scoring, one `Scores` or `Error`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Newly generated text (valid UTF-8, stop sequences already cut out).
    Text(String),
    Done {
        finish_reason: FinishReason,
        /// The stop sequence that ended the generation, when one did.
        stop: Option<String>,
        usage: Usage,
        timings: Timings,
    },
    /// Probability of each candidate as the next token (softmax over the whole vocabulary).
    Scores {
        probs: Vec<f32>,
    },
    Error(super::EngineError),
}
