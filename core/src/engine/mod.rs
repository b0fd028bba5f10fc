//! The llama.cpp engine: loads a GGUF once, renders and tokenizes prompts, and runs every
//! generation on one dedicated OS thread that batches all active requests into each decode step.
//! Requests arrive through a channel; tokens leave through one channel per request.

mod backend;
mod chat;
pub mod cpu;
mod error;
#[cfg(feature = "test-util")]
pub mod fault;
mod health;
mod load;
mod params;
mod priority;
mod sampler;
mod session;
mod text;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

pub use chat::{ChatMessage, ChatRole, Prompt};
pub use error::EngineError;
pub use health::{Failure, FailureKind};
pub use params::{Event, FinishReason, GenerationParams, Timings, Usage, Weights};
pub use session::Session;
pub use text::{StopMatcher, StopOutcome, Utf8Stream};

pub use backend::get as llama_backend;

use chat::ChatFormat;
use health::Health;
use worker::Command;

/// How to load and run a model.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// GGUF file to load.
    pub model_path: PathBuf,
    /// Layers offloaded to the GPU (needs the `cuda` feature); 0 keeps everything on the CPU.
    pub n_gpu_layers: u32,
    /// Threads llama.cpp uses for decoding and prompt processing; `None` uses every core.
    pub n_threads: Option<u32>,
    /// Sequences decoded together (continuous-batching slots).
    pub n_slots: usize,
    /// Context tokens each slot may use (prompt + completion).
    pub ctx_per_slot: u32,
    /// Most tokens submitted to llama.cpp in one decode step (prompt chunks + one per decoding slot).
    pub n_batch: u32,
    /// Requests allowed to wait for a free slot; beyond it `generate` fails fast with `Overloaded`.
    pub max_queue: usize,
    /// llama.cpp's flash attention; see [`FlashAttention`].
    pub flash_attention: FlashAttention,
    /// A LoRA adapter GGUF (from `cada-trainer`) applied at scale 1 to every request. llama.cpp
    /// binds adapters when the context is created, so a different adapter means a new engine.
    pub adapter: Option<PathBuf>,
    /// Niceness added to the engine thread and the llama.cpp threads it starts (Linux), so the
    /// HTTP side and the safety layer's retrieval preempt decoding on a shared CPU; 0 keeps the
    /// process's priority.
    pub nice: i32,
    /// The longest one engine step (a decode of up to `n_batch` tokens, with sampling) may run
    /// before the engine counts as hung and fails (see [`FailureKind::Stall`]); `None` never.
    pub stall_after: Option<Duration>,
}

/// [`EngineConfig::stall_after`] by default: a step of the default model takes well under a
/// second on 2 cores; a 7B model's 512-token prefill on such a machine takes tens of seconds.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(120);

/// Whether llama.cpp uses flash attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashAttention {
    /// Off on the CPU, llama.cpp's own choice with GPU layers. On the CPU flash attention made
    /// decoding slow down steeply with context (measured on the default model at ~890 context
    /// tokens: 21 tok/s with it, 82 tok/s without), and deliberation prompts are long.
    #[default]
    Auto,
    On,
    Off,
}

impl FlashAttention {
    /// `Some(on)` to force a setting, `None` to leave it to llama.cpp.
    pub fn resolve(self, n_gpu_layers: u32) -> Option<bool> {
        match self {
            FlashAttention::On => Some(true),
            FlashAttention::Off => Some(false),
            FlashAttention::Auto if n_gpu_layers == 0 => Some(false),
            FlashAttention::Auto => None,
        }
    }
}

impl EngineConfig {
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
            n_gpu_layers: 0,
            n_threads: None,
            n_slots: 4,
            ctx_per_slot: 2048,
            n_batch: 512,
            max_queue: 64,
            flash_attention: FlashAttention::Auto,
            adapter: None,
            nice: 0,
            stall_after: Some(DEFAULT_STALL_AFTER),
        }
    }
}

/// Facts about the loaded model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// `general.name` from the GGUF, if present.
    pub name: Option<String>,
    /// `general.architecture` from the GGUF (e.g. `llama`).
    pub architecture: Option<String>,
    /// Context length the model was trained with.
    pub n_ctx_train: u32,
    /// Context tokens available to one request here.
    pub ctx_per_slot: u32,
    pub n_params: u64,
    pub n_vocab: i32,
    /// Size of the weights in bytes.
    pub size_bytes: u64,
    /// Chat template in use (GGUF template text, or the built-in name of the fallback).
    pub chat_template: String,
}

/// Live counters of the engine, for metrics and admission control.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Requests accepted but not yet in a slot.
    pub queued: AtomicUsize,
    /// Slots currently generating.
    pub active: AtomicUsize,
    /// Tokens generated since start.
    pub generated_tokens: AtomicUsize,
    /// Most sequences that ever shared one decode step (shows batching happened).
    pub peak_batch_sequences: AtomicUsize,
}

/// A handle to the running engine. Cheap to clone; the thread stops when the last handle drops.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None` once dropping: closing the channel tells the worker to finish.
    jobs: Option<mpsc::Sender<Command>>,
    next_session: AtomicU64,
    thread: Option<JoinHandle<()>>,
    /// Closing it stops the watchdog.
    watchdog_stop: Option<mpsc::Sender<()>>,
    watchdog: Option<JoinHandle<()>>,
    health: Arc<Health>,
    model: Arc<LlamaModel>,
    format: ChatFormat,
    info: ModelInfo,
    config: EngineConfig,
    stats: Arc<EngineStats>,
}

impl Engine {
    /// Why the engine stopped serving, once it has failed (see [`FailureKind`]).
    pub fn failure(&self) -> Option<Failure> {
        self.inner.health.failure().cloned()
    }

    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }

    /// Renders a conversation with the model's chat template; message text can never become control tokens.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Prompt, EngineError> {
        self.inner.format.tokenize(&self.inner.model, messages)
    }

    /// Tokenizes raw text for `/v1/completions`: BOS if the model wants one, control tokens parsed as text.
    pub fn text_prompt(&self, text: &str) -> Prompt {
        Prompt {
            tokens: self
                .inner
                .model
                .vocab()
                .tokenize(text.as_bytes(), true, false),
        }
    }

    /// Detokenizes a prompt (control tokens shown), for inspection and tests.
    pub fn render_tokens(&self, prompt: &Prompt) -> String {
        let vocab = self.inner.model.vocab();
        let mut bytes = Vec::new();
        for t in &prompt.tokens {
            vocab.token_to_piece_into(*t, &mut bytes, true, None);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Text of plain token ids (the trainer's sequences), special tokens rendered.
    pub fn detokenize(&self, ids: &[u32]) -> String {
        let vocab = self.inner.model.vocab();
        let mut bytes = Vec::new();
        for &t in ids {
            vocab.token_to_piece_into(LlamaToken(t as i32), &mut bytes, true, None);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Tokenizes text to append inside a turn (forced prefixes such as `Verdict:`): no BOS, and
    /// control-token text stays plain text.
    pub fn tokens(&self, text: &str) -> Prompt {
        Prompt {
            tokens: self
                .inner
                .model
                .vocab()
                .tokenize(text.as_bytes(), false, false),
        }
    }

    /// The token that ends an assistant turn (the model's end-of-generation token), which
    /// training sequences end with so the model learns to stop.
    pub fn end_of_turn(&self) -> u32 {
        self.inner.model.vocab().eos().0 as u32
    }

    /// Token ids as plain numbers, for the trainer.
    pub fn token_ids(&self, text: &str) -> Vec<u32> {
        self.tokens(text)
            .token_ids()
            .into_iter()
            .map(|t| t as u32)
            .collect()
    }

    /// Opens a session: it waits for a slot and then keeps it (and its KV cache) until dropped.
    /// Fails fast when the queue is full.
    pub fn session(&self) -> Result<Session, EngineError> {
        Session::open(self)
    }

    /// Queues a one-shot generation. Fails fast when the prompt cannot fit or the queue is full.
    pub fn generate(
        &self,
        prompt: Prompt,
        params: GenerationParams,
    ) -> Result<Generation, EngineError> {
        self.generate_on(prompt, params, Weights::Adapted)
    }

    /// [`Engine::generate`] on the chosen weights.
    pub fn generate_on(
        &self,
        prompt: Prompt,
        params: GenerationParams,
        weights: Weights,
    ) -> Result<Generation, EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let limit = self.inner.config.ctx_per_slot as usize;
        let completion = params.max_tokens.map_or(1, |m| m as usize);
        if prompt.len() + completion > limit {
            return Err(EngineError::ContextLengthExceeded {
                limit,
                requested: prompt.len() + completion,
                prompt: prompt.len(),
                completion,
            });
        }
        let prompt_tokens = prompt.len();
        let mut session = self.session()?;
        if weights != Weights::Adapted {
            session.reset_to(weights)?;
        }
        session.generate(prompt, params, true)?;
        Ok(Generation {
            prompt_tokens,
            session,
        })
    }

    /// Sends a command to the engine thread; false once it is gone.
    fn send(&self, command: Command) -> bool {
        self.inner
            .jobs
            .as_ref()
            .is_some_and(|j| j.send(command).is_ok())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.watchdog_stop.take();
        if let Some(handle) = self.watchdog.take() {
            let _ = handle.join();
        }
        // Closing the job channel lets the worker finish what it has and exit.
        self.jobs.take();
        if let Some(handle) = self.thread.take() {
            // A failed engine's thread may be parked or hung inside llama.cpp for good: it is
            // left behind rather than waited for.
            if self.health.failure().is_none() || handle.is_finished() {
                let _ = handle.join();
            }
        }
    }
}

/// The stream of events of one generation. Dropping it cancels the generation within one decode step.
#[derive(Debug)]
pub struct Generation {
    /// Tokens in the prompt (usage accounting).
    pub prompt_tokens: usize,
    session: Session,
}

impl Generation {
    /// Next event; `None` after `Done`/`Error`.
    pub async fn next(&mut self) -> Option<Event> {
        self.session.next().await
    }

    /// Blocking variant for callers outside an async runtime.
    pub fn next_blocking(&mut self) -> Option<Event> {
        self.session.next_blocking()
    }
}
