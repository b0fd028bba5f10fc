//! Gateway configuration: a TOML file, overridden by `CADA_*` environment variables and flags
//! (flags win), validated before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

pub use crate::auth::AuthConfig;
pub use crate::safety::{Mode, SafetyConfig, StoreSection};
use serde::Deserialize;

/// Everything the gateway needs to run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Model registry file; registry paths are relative to its directory.
    pub registry: PathBuf,
    /// Registry id or GGUF path to serve; empty serves the registry's default chat model.
    pub model: String,
    /// Name reported as `model` and accepted in requests; defaults to the registry id or file stem.
    pub served_model_name: Option<String>,
    /// LoRA adapter: `promoted` (the version `cada-trainer` promoted in the adapter registry
    /// next to the model registry, followed as it changes), `none`, or a GGUF path.
    pub adapter: AdapterChoice,
    /// Seconds between checks of the adapter registry for a newly promoted version (with
    /// `adapter = "promoted"`); 0 checks only on `POST /admin/adapter/reload`.
    pub adapter_poll_secs: u64,
    /// Check the pinned sha256 of registry models before loading them.
    pub verify_sha256: bool,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
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
}

/// Which LoRA adapter the gateway serves.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum AdapterChoice {
    /// The base model alone.
    None,
    /// The version promoted in the adapter registry, switched without a restart.
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
}

/// Request limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Most messages in one chat request.
    pub max_messages: usize,
    /// Largest `max_tokens` a request may ask for; 0 means the slot's context size.
    pub max_tokens: u32,
    /// Time a client has to send its request headers.
    pub header_timeout_secs: u64,
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
            registry: PathBuf::from("models/registry.toml"),
            model: String::new(),
            served_model_name: None,
            adapter: AdapterChoice::Promoted,
            adapter_poll_secs: 10,
            verify_sha256: true,
            log_format: LogFormat::Text,
            engine: EngineSection::default(),
            limits: Limits::default(),
            safety: SafetyConfig::default(),
            store: StoreSection::default(),
            admin_key: None,
            api_key: None,
            auth: AuthConfig::default(),
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
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_messages: 256,
            max_tokens: 0,
            header_timeout_secs: 30,
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
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
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
        if self.engine.max_queue == 0 {
            return bad(
                "engine.max_queue",
                "must be at least 1 (every request passes through the queue)",
            );
        }
        if self.limits.max_body_bytes < 1024 {
            return bad("limits.max_body_bytes", "must be at least 1024");
        }
        if self.limits.max_messages == 0 {
            return bad("limits.max_messages", "must be positive");
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
        if s.refusal_message.trim().is_empty() {
            return bad("safety.refusal_message", "must not be empty");
        }
        if !(0.0..=1.0).contains(&self.store.cases.merge_threshold) {
            return bad("store.cases.merge_threshold", "must be between 0 and 1");
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

/// Command line of `cada-gateway`. Every flag can also come from its `CADA_` environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "cada-gateway",
    version,
    about = "OpenAI-compatible gateway for GGUF models with deliberative safety"
)]
pub struct Cli {
    /// TOML configuration file (see configs/gateway.toml); flags override it.
    #[arg(long, env = "CADA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long, env = "CADA_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Registry id or path of the GGUF model to serve (default: the registry's default chat model).
    #[arg(long, env = "CADA_MODEL")]
    pub model: Option<String>,
    /// Model registry file.
    #[arg(long, env = "CADA_REGISTRY")]
    pub registry: Option<PathBuf>,
    /// LoRA adapter: `promoted` (follow the adapter registry; the default), `none`, or a GGUF path.
    #[arg(long, env = "CADA_ADAPTER")]
    pub adapter: Option<AdapterChoice>,
    /// Name clients use as `model`.
    #[arg(long, env = "CADA_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,
    /// Layers to offload to the GPU (needs a `cuda` build).
    #[arg(long, env = "CADA_N_GPU_LAYERS")]
    pub n_gpu_layers: Option<u32>,
    /// llama.cpp threads (0 = all cores).
    #[arg(long, env = "CADA_THREADS")]
    pub threads: Option<u32>,
    /// Concurrent sequences decoded together.
    #[arg(long, env = "CADA_PARALLEL")]
    pub parallel: Option<usize>,
    /// Context tokens per sequence.
    #[arg(long, env = "CADA_CTX_PER_SLOT")]
    pub ctx_per_slot: Option<u32>,
    /// Requests allowed to wait for a free sequence.
    #[arg(long, env = "CADA_MAX_QUEUE")]
    pub max_queue: Option<usize>,
    /// Skip the sha256 check of registry models.
    #[arg(long, env = "CADA_NO_VERIFY", default_value_t = false)]
    pub no_verify: bool,
    /// Log format.
    #[arg(long, env = "CADA_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Default safety mode: off, cases, trained or adaptive (requests may override it).
    #[arg(long, env = "CADA_SAFETY_MODE", value_enum)]
    pub safety_mode: Option<Mode>,
    /// Directory with the safety codes and case library.
    #[arg(long, env = "CADA_POLICY_DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Data directory: case store and caches.
    #[arg(long, env = "CADA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Admin key: all endpoints, including /admin/ (sent as `Authorization: Bearer KEY`).
    #[arg(long, env = "CADA_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// User key: inference and feedback (sent as `Authorization: Bearer KEY`).
    #[arg(long, env = "CADA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

impl Cli {
    /// File (if any) overlaid with flags and environment, then validated.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.model {
            c.model = v;
        }
        if let Some(v) = self.registry {
            c.registry = v;
        }
        if let Some(v) = self.adapter {
            c.adapter = v;
        }
        if let Some(v) = self.served_model_name {
            c.served_model_name = Some(v);
        }
        if let Some(v) = self.n_gpu_layers {
            c.engine.n_gpu_layers = v;
        }
        if let Some(v) = self.threads {
            c.engine.threads = v;
        }
        if let Some(v) = self.parallel {
            c.engine.parallel = v;
        }
        if let Some(v) = self.ctx_per_slot {
            c.engine.ctx_per_slot = v;
        }
        if let Some(v) = self.max_queue {
            c.engine.max_queue = v;
        }
        if self.no_verify {
            c.verify_sha256 = false;
        }
        if let Some(v) = self.log_format {
            c.log_format = v;
        }
        if let Some(v) = self.safety_mode {
            c.safety.mode = v;
        }
        if let Some(v) = self.policy_dir {
            c.safety.policy_dir = v;
        }
        if let Some(v) = self.data_dir {
            c.store.data_dir = v;
        }
        if let Some(v) = self.admin_key {
            c.admin_key = Some(Secret(v));
        }
        if let Some(v) = self.api_key {
            c.api_key = Some(Secret(v));
        }
        c.validate()?;
        Ok(c)
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

    #[test]
    fn flags_override_file() {
        let cli = Cli::parse_from([
            "cada-gateway",
            "--listen",
            "127.0.0.1:0",
            "--parallel",
            "3",
            "--model",
            "x.gguf",
        ]);
        let c = cli.into_config().expect("valid");
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.engine.parallel, 3);
        assert_eq!(c.model, "x.gguf");
        assert_eq!(c.max_tokens_cap(), c.engine.ctx_per_slot);
    }
}
