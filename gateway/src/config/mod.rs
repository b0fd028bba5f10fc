//! Gateway configuration: a TOML file, overridden by `CADA_*` environment variables and flags
//! (flags win), validated before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod cli;
mod env;

pub use crate::auth::AuthConfig;
pub use crate::cache::CacheConfig;
pub use crate::safety::{Mode, SafetyConfig, StoreSection};
pub use cli::Cli;
use serde::Deserialize;

/// Everything the gateway needs to run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// A separate address for `GET /metrics` (and `/healthz`), e.g. one only the monitoring
    /// network reaches; when set, the main address no longer serves `/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// Model registry file; registry paths are relative to its directory.
    pub registry: PathBuf,
    /// Registry id or GGUF path to serve; empty serves the registry's default chat model.
    pub model: String,
    /// Name reported as `model` and accepted in requests; defaults to the registry id or file stem.
    pub served_model_name: Option<String>,
    /// LoRA adapter: `promoted` (the version `cada-trainer` promoted in the adapter registry
    /// next to the model registry, followed as it changes, else the model registry's release
    /// adapter for the served model), `none`, or a GGUF path.
    pub adapter: AdapterChoice,
    /// Seconds between checks of the adapter registry for a newly promoted version (with
    /// `adapter = "promoted"`); 0 checks only on `POST /admin/adapter/reload`.
    pub adapter_poll_secs: u64,
    /// Check the pinned sha256 of registry models before loading them.
    pub verify_sha256: bool,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
    /// Log each chat exchange (the last user message and the answer, redacted like the case
    /// store) at info level. Off by default: prompts and answers stay out of logs.
    pub log_prompts: bool,
    /// Serve on a non-loopback address with no API key at all (every inference endpoint open
    /// to the network). Off: such a start-up is refused.
    pub insecure_no_auth: bool,
    pub engine: EngineSection,
    pub limits: Limits,
    pub safety: SafetyConfig,
    pub store: StoreSection,
    /// A quick-setup admin key (`Authorization: Bearer ...`), next to `[auth]` keys.
    pub admin_key: Option<Secret>,
    /// A quick-setup user key (inference and feedback), next to `[auth]` keys.
    pub api_key: Option<Secret>,
    /// API keys, scopes and rate limits.
    pub auth: AuthConfig,
    /// The response cache for deterministic requests.
    pub cache: CacheConfig,
}

/// Which LoRA adapter the gateway serves.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum AdapterChoice {
    /// The base model alone.
    None,
    /// The version promoted in the adapter registry, switched without a restart; with none
    /// promoted, the release adapter shipped for the served model.
    #[default]
    Promoted,
    /// A fixed adapter file (pins a version).
    File(PathBuf),
}

impl std::str::FromStr for AdapterChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim() {
            "" | "none" => AdapterChoice::None,
            "promoted" => AdapterChoice::Promoted,
            path => AdapterChoice::File(PathBuf::from(path)),
        })
    }
}

impl TryFrom<String> for AdapterChoice {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// A secret from the configuration: never shown by `Debug`, so never logged.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How the model runs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// Layers offloaded to the GPU (build with `--features cuda`).
    pub n_gpu_layers: u32,
    /// llama.cpp threads; 0 uses every core.
    pub threads: u32,
    /// Requests decoded together (continuous-batching slots).
    pub parallel: usize,
    /// Context tokens per slot (prompt + completion).
    pub ctx_per_slot: u32,
    /// Most tokens per decode step.
    pub batch: u32,
    /// Requests that may wait for a slot before new ones get 503 `overloaded`.
    pub max_queue: usize,
    /// `auto` (off on the CPU, llama.cpp's choice on GPU), `on` or `off`.
    pub flash_attention: cada_core::FlashAttention,
    /// Niceness added to the engine's threads (Linux), so request handling is not queued behind
    /// decoding on busy cores; 0 keeps the process's priority.
    pub nice: i32,
    /// Longest one engine step may run before the engine counts as hung and fails; 0 never.
    pub stall_secs: u64,
    /// Once the engine has failed, how long the gateway keeps answering 503 (health, readiness,
    /// inference) with the reason and serving `/metrics` before it drains and exits with an
    /// error, so a supervisor restarts it.
    pub exit_after_failure_secs: u64,
}

/// Request limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Most messages in one chat request.
    pub max_messages: usize,
    /// Most texts in one `/v1/moderations` request's `input`.
    pub max_moderation_inputs: usize,
    /// Largest `max_tokens` a request may ask for; 0 means the slot's context size.
    pub max_tokens: u32,
    /// Inference requests handled at once (streams until their last event); beyond it a fast
    /// 503 `overloaded`.
    pub max_in_flight: usize,
    /// Client connections open at once (each holds a task and a socket, idle or slowly sending
    /// its request); a connection past it is closed at once and counted in
    /// `cada_connections_refused_total`.
    pub max_connections: usize,
    /// Time a client has to send its request headers; also how long an idle keep-alive
    /// connection stays open waiting for the next request.
    pub header_timeout_secs: u64,
    /// Time a client has to send its request body once the headers are in; past it, 408.
    pub body_timeout_secs: u64,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: None,
            registry: PathBuf::from("models/registry.toml"),
            model: String::new(),
            served_model_name: None,
            adapter: AdapterChoice::Promoted,
            adapter_poll_secs: 10,
            verify_sha256: true,
            log_format: LogFormat::Text,
            log_prompts: false,
            insecure_no_auth: false,
            engine: EngineSection::default(),
            limits: Limits::default(),
            safety: SafetyConfig::default(),
            store: StoreSection::default(),
            admin_key: None,
            api_key: None,
            auth: AuthConfig::default(),
            cache: CacheConfig::default(),
        }
    }
}

impl Default for EngineSection {
    fn default() -> Self {
        Self {
            n_gpu_layers: 0,
            threads: 0,
            parallel: 8,
            ctx_per_slot: 2048,
            batch: 512,
            max_queue: 64,
            flash_attention: cada_core::FlashAttention::Auto,
            nice: 10,
            stall_secs: cada_core::engine::DEFAULT_STALL_AFTER.as_secs(),
            exit_after_failure_secs: 5,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_messages: 256,
            max_moderation_inputs: 32,
            max_tokens: 0,
            max_in_flight: 256,
            max_connections: 1024,
            header_timeout_secs: 30,
            body_timeout_secs: 30,
            shutdown_grace_secs: 30,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: '{key}' {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Reads a TOML file; unknown keys are errors that name the key.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        Self::from_sources(Some(path), std::iter::empty())
    }

    /// The file (if any) with the `CADA__SECTION__KEY` overrides of `vars` laid over it
    /// (see `env`); unknown keys are errors that name the key.
    pub fn from_sources(
        path: Option<&std::path::Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let source = path.map_or_else(|| PathBuf::from("(defaults)"), std::path::Path::to_path_buf);
        let parse_error = |message: String| ConfigError::Parse {
            path: source.clone(),
            message,
        };
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                    path: path.to_path_buf(),
                    source: e,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| parse_error(e.to_string()))?
            }
            None => toml::Table::new(),
        };
        env::overlay(&mut table, vars)?;
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| parse_error(format!("{e} (file or CADA__ variables)")))
    }

    /// Checks values that would otherwise fail later, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        if self.engine.parallel == 0 || self.engine.parallel > 256 {
            return bad("engine.parallel", "must be between 1 and 256");
        }
        if self.engine.ctx_per_slot < 64 {
            return bad("engine.ctx_per_slot", "must be at least 64");
        }
        if self.engine.batch == 0 {
            return bad("engine.batch", "must be positive");
        }
        if !(0..=19).contains(&self.engine.nice) {
            return bad("engine.nice", "must be between 0 and 19");
        }
        if self.engine.max_queue == 0 {
            return bad(
                "engine.max_queue",
                "must be at least 1 (every request passes through the queue)",
            );
        }
        if self.limits.max_body_bytes < 1024 {
            return bad("limits.max_body_bytes", "must be at least 1024");
        }
        if self.limits.max_in_flight == 0 {
            return bad("limits.max_in_flight", "must be positive");
        }
        if self.limits.max_messages == 0 {
            return bad("limits.max_messages", "must be positive");
        }
        if self.limits.max_moderation_inputs == 0 {
            return bad("limits.max_moderation_inputs", "must be positive");
        }
        if self.limits.max_tokens > self.engine.ctx_per_slot {
            return bad("limits.max_tokens", "must not exceed engine.ctx_per_slot");
        }
        let s = &self.safety;
        if s.top_k == 0 || s.top_k > 32 {
            return bad("safety.top_k", "must be between 1 and 32");
        }
        if s.max_reasoning_tokens == 0 || s.max_reasoning_tokens >= self.engine.ctx_per_slot {
            return bad(
                "safety.max_reasoning_tokens",
                "must be positive and below engine.ctx_per_slot",
            );
        }
        let [low, high] = s.confidence_band;
        if !(0.0..=1.0).contains(&low) || !(0.0..=1.0).contains(&high) || low > high {
            return bad(
                "safety.confidence_band",
                "must be [low, high] with 0 <= low <= high <= 1",
            );
        }
        if !(0.0..=1.0).contains(&s.adaptive_threshold) {
            return bad("safety.adaptive_threshold", "must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&s.adaptive_probe_weight) {
            return bad("safety.adaptive_probe_weight", "must be between 0 and 1");
        }
        if let Err(message) = crate::auth::Keys::load(self) {
            return Err(ConfigError::Invalid {
                key: "auth",
                message,
            });
        }
        if let Err((key, message)) = self.cache.validate() {
            return bad(key, message);
        }
        if s.refusal_message.trim().is_empty() {
            return bad("safety.refusal_message", "must not be empty");
        }
        if !(0.0..=1.0).contains(&self.store.cases.merge_threshold) {
            return bad("store.cases.merge_threshold", "must be between 0 and 1");
        }
        if let Err(e) = self.store.location() {
            return Err(ConfigError::Invalid {
                key: "store.url",
                message: e.to_string(),
            });
        }
        Ok(())
    }

    /// The effective `max_tokens` cap.
    pub fn max_tokens_cap(&self) -> u32 {
        if self.limits.max_tokens == 0 {
            self.engine.ctx_per_slot
        } else {
            self.limits.max_tokens
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.limits.shutdown_grace_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_validates() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/gateway.toml");
        let c = Config::from_file(&path).expect("configs/gateway.toml parses");
        c.validate().expect("example config is valid");
        // The file says its values are the defaults.
        assert_eq!(c, Config::default());
    }

    #[test]
    fn adapter_choices_parse() {
        let parse = |s: &str| toml::from_str::<Config>(&format!("adapter = \"{s}\"\n"));
        assert_eq!(
            parse("promoted").expect("promoted").adapter,
            AdapterChoice::Promoted
        );
        assert_eq!(parse("none").expect("none").adapter, AdapterChoice::None);
        assert_eq!(
            parse("models/adapters/v1.gguf").expect("path").adapter,
            AdapterChoice::File(PathBuf::from("models/adapters/v1.gguf"))
        );
        assert_eq!(Config::default().adapter, AdapterChoice::Promoted);
    }

    #[test]
    fn unknown_and_invalid_keys_are_named() {
        let err = toml::from_str::<Config>("[engine]\nparalel = 2\n").expect_err("typo");
        assert!(err.to_string().contains("paralel"), "{err}");
        let c = Config {
            engine: EngineSection {
                parallel: 0,
                ..EngineSection::default()
            },
            ..Config::default()
        };
        assert!(c
            .validate()
            .expect_err("zero slots")
            .to_string()
            .contains("engine.parallel"));
    }
}
