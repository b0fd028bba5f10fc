//! The command line of `cada-gateway`: the main keys as flags, each also read from its `CADA_`
//! environment variable, laid over the file and the `CADA__SECTION__KEY` overrides.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use super::{AdapterChoice, Config, ConfigError, LogFormat, Mode, Secret};

/// Command line of `cada-gateway`. Every flag can also come from its `CADA_` environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "cada-gateway",
    version,
    about = "OpenAI-compatible gateway for GGUF models with deliberative safety",
    after_help = "Every key of the configuration file can also be set as CADA__SECTION__KEY=value \
(e.g. CADA__LIMITS__MAX_IN_FLIGHT=64, CADA__CACHE__ENABLED=false); values are read as TOML \
when they parse as TOML, else as strings. Precedence: flags, their CADA_* variables, \
CADA__* variables, the file, defaults."
)]
pub struct Cli {
    /// TOML configuration file (see configs/gateway.toml); flags override it.
    #[arg(long, env = "CADA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long, env = "CADA_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Separate address for /metrics (e.g. 0.0.0.0:9090); the main address then stops serving it.
    #[arg(long, env = "CADA_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
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
    /// Inference requests handled at once; beyond it a fast 503 `overloaded`.
    #[arg(long, env = "CADA_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Start on a non-loopback address although no API key is configured (inference open to
    /// the network; /admin/ stays closed without an admin key).
    #[arg(long, env = "CADA_INSECURE_NO_AUTH", default_value_t = false)]
    pub insecure_no_auth: bool,
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
    /// Case store shared by replicas (`postgres://user:password@host/db`) or an SQLite path;
    /// default: `<data dir>/cases.sqlite`.
    #[arg(long, env = "CADA_STORE_URL", hide_env_values = true)]
    pub store_url: Option<String>,
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
        // `vars_os`: a variable that is not UTF-8 must not panic start-up (ours are UTF-8).
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        let mut c = Config::from_sources(self.config.as_deref(), vars)?;
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.metrics_listen {
            c.metrics_listen = Some(v);
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
        if let Some(v) = self.max_in_flight {
            c.limits.max_in_flight = v;
        }
        if self.insecure_no_auth {
            c.insecure_no_auth = true;
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
        if let Some(v) = self.store_url {
            c.store.url = Some(Secret(v));
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
