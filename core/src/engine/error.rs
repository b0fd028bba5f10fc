//! Typed engine errors, each with a stable code that the gateway reuses in error bodies and metrics.

/// Everything the engine can refuse or fail with. Never a panic.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("failed to initialise llama.cpp: {0}")]
    Backend(String),
    #[error("failed to load model {path}: {message}")]
    ModelLoad { path: String, message: String },
    #[error("failed to create the llama.cpp context: {0}")]
    Context(String),
    #[error("cannot render the chat template: {0}")]
    Template(String),
    #[error(
        "This model's maximum context length is {limit} tokens. However, you requested {requested} tokens ({prompt} in the prompt, {completion} for the completion). Please reduce the length of the prompt or the completion."
    )]
    ContextLengthExceeded {
        limit: usize,
        requested: usize,
        prompt: usize,
        completion: usize,
    },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the engine is overloaded: {queued} requests are already waiting; retry later")]
    Overloaded { queued: usize },
    #[error("the engine has shut down")]
    ShutDown,
    #[error("llama.cpp decode failed: {0}")]
    Decode(String),
    /// The engine stopped serving for good (see `FailureKind`); the process should restart.
    #[error("the engine failed ({reason}): {message}")]
    Failed {
        reason: &'static str,
        message: String,
    },
}

impl EngineError {
    /// Stable machine-readable code (error bodies, metric labels).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Backend(_) => "backend_error",
            Self::ModelLoad { .. } => "model_load_failed",
            Self::Context(_) => "context_create_failed",
            Self::Template(_) => "chat_template_error",
            Self::ContextLengthExceeded { .. } => "context_length_exceeded",
            Self::EmptyPrompt => "empty_prompt",
            Self::Overloaded { .. } => "overloaded",
            Self::ShutDown => "engine_shut_down",
            Self::Decode(_) => "decode_failed",
            Self::Failed { .. } => "engine_failed",
        }
    }
}
