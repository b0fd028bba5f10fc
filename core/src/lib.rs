//! Code both cada binaries need: the model registry, the llama.cpp engine (continuous batching
//! on its own thread, safe chat-template rendering), the safety policy with its formats, and the
//! case store the gateway logs borderline exchanges to for review and retraining.

pub mod adapter_check;
pub mod adapters;
pub mod durable;
pub mod embed;
pub mod engine;
pub mod gguf_header;
pub mod policy;
pub mod registry;
pub mod release;
pub mod store;

pub use engine::{
    llama_backend, ChatMessage, ChatRole, Engine, EngineConfig, EngineError, EngineStats, Event,
    Failure, FailureKind, FinishReason, FlashAttention, Generation, GenerationParams, ModelInfo,
    Prompt, Session, Usage, Weights,
};
pub use llama_cpp_2;
pub use registry::{ModelEntry, ModelKind, Registry, RegistryError, ResolvedModel};
