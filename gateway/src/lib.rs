//! cada's OpenAI-compatible gateway as a library: `run(listener, config, shutdown)` serves a
//! GGUF model through the shared llama.cpp engine; the binary only parses flags and binds.

pub mod adapters;
pub mod admission;
pub mod auth;
pub mod background;
pub mod body_guard;
pub mod cache;
pub mod config;
pub mod error;
pub mod events;
pub mod generate;
pub mod metrics;
pub mod openai;
pub mod routes;
pub mod safety;
pub mod server;
pub mod sse;
pub mod state;

pub use config::{Cli, Config};
pub use server::run;

/// Why the gateway could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Registry(#[from] cada_core::RegistryError),
    #[error(transparent)]
    Engine(#[from] cada_core::EngineError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Internal(String),
    #[error("safety: {0}")]
    Safety(String),
    /// An adapter version failed its check or its load; what was served before still is.
    #[error("adapter {version} refused ({reason}): {message}")]
    AdapterRefused {
        version: String,
        reason: &'static str,
        message: String,
    },
}
