//! Code both cada binaries need: the model registry, the llama.cpp engine (continuous batching
//! on its own thread, safe chat-template rendering) and the safety policy with its formats.

pub mod embed;
pub mod engine;
pub mod policy;
pub mod registry;

pub use engine::{
    llama_backend, ChatMessage, ChatRole, Engine, EngineConfig, EngineError, EngineStats, Event,
    FinishReason, Generation, GenerationParams, ModelInfo, Prompt, Session, Usage,
};
pub use llama_cpp_2;
pub use registry::{ModelEntry, ModelKind, Registry, RegistryError, ResolvedModel};
