//! Shared gateway state: the configuration and the engine, which becomes available once the
//! model has loaded (until then `/readyz` and inference answer 503).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use cada_core::adapters::AdapterRegistry;
use cada_core::policy::VerdictRule;
use cada_core::registry::resolve_path;
use cada_core::{Engine, EngineConfig, Failure, Registry, ResolvedModel};

use crate::admission::Admission;
use crate::auth::Keys;
use crate::cache::ResponseCache;
use crate::config::{AdapterChoice, Config};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::safety::Safety;
use crate::GatewayError;

/// The loaded model and the name clients address it by. A request holds one `Arc<Served>`
/// from start to end, so an adapter swap never mixes two models inside one response.
#[derive(Debug)]
pub struct Served {
    pub name: String,
    pub engine: Engine,
    /// Version of the LoRA adapter the engine applies (registry version or file stem).
    pub adapter: Option<String>,
    /// The GGUF served, for reloading with another adapter.
    pub model_path: PathBuf,
    /// How `trained` mode reads verdicts with this adapter (its calibrated threshold).
    pub rule: VerdictRule,
}

/// What an adapter reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reload {
    pub adapter: Option<String>,
    pub changed: bool,
}

#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    /// API keys, scopes and per-key rate limits.
    pub keys: Keys,
    served: RwLock<Option<Arc<Served>>>,
    safety: OnceLock<Arc<Safety>>,
    /// One reload at a time (watcher and admin calls).
    reloading: Mutex<()>,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: Arc<Metrics>,
    /// Bounds the inference requests handled at once.
    pub admission: Admission,
    /// Finished deterministic responses (`None` when `cache.enabled` is off).
    pub cache: Option<ResponseCache>,
}

impl AppState {
    /// Fails when the keys cannot be loaded (a keys file gone since validation).
    pub fn new(config: Config) -> Result<Self, GatewayError> {
        let keys = Keys::load(&config).map_err(|message| {
            GatewayError::Config(crate::config::ConfigError::Invalid {
                key: "auth",
                message,
            })
        })?;
        Ok(Self {
            cache: ResponseCache::new(&config.cache),
            admission: Admission::new(config.limits.max_in_flight),
            config,
            keys,
            served: RwLock::new(None),
            safety: OnceLock::new(),
            reloading: Mutex::new(()),
            metrics: Arc::new(
                Metrics::new().map_err(|e| GatewayError::Internal(format!("metrics: {e}")))?,
            ),
        })
    }

    /// The served model, once loaded.
    pub fn served(&self) -> Option<Arc<Served>> {
        // Ready only once the safety layer is loaded too.
        self.safety.get()?;
        self.served
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Policy, retrieval and case store, once loaded.
    pub fn safety(&self) -> Option<&Arc<Safety>> {
        self.safety.get()
    }

    /// The served model for a request naming `model`: 503 while loading or once the engine
    /// has failed, 404 for another model.
    pub fn engine_for(&self, model: &str) -> Result<Arc<Served>, ApiError> {
        let served = self.served().ok_or_else(ApiError::not_ready)?;
        if let Some(f) = served.engine.failure() {
            return Err(cada_core::EngineError::from(&f).into());
        }
        if served.name != model {
            return Err(ApiError::model_not_found(model));
        }
        Ok(served)
    }

    /// Why the served engine stopped, once it has failed.
    pub fn engine_failure(&self) -> Option<Failure> {
        self.served()?.engine.failure()
    }

    /// The adapter registry next to the model registry.
    pub fn adapter_registry(&self) -> AdapterRegistry {
        AdapterRegistry::beside(&self.config.registry)
    }

    /// The adapter the configuration asks for now: its version as `id`, its file, and the
    /// pinned digest of a shipped one (checked only before it is loaded, not at every poll).
    fn wanted_adapter(&self) -> Result<Option<ResolvedModel>, GatewayError> {
        match &self.config.adapter {
            AdapterChoice::None => Ok(None),
            AdapterChoice::File(path) => {
                let version = path.file_stem().map_or_else(
                    || path.display().to_string(),
                    |s| s.to_string_lossy().into_owned(),
                );
                Ok(Some(ResolvedModel {
                    id: version,
                    path: path.clone(),
                    sha256: None,
                }))
            }
            AdapterChoice::Promoted => {
                let promoted = self
                    .adapter_registry()
                    .promoted()
                    .map_err(|e| GatewayError::Internal(format!("adapter registry: {e}")))?
                    .map(|(entry, file)| ResolvedModel {
                        id: entry.version,
                        path: file,
                        sha256: None,
                    });
                match promoted {
                    Some(p) => Ok(Some(p)),
                    None => self.release_adapter(),
                }
            }
        }
    }

    /// The release adapter shipped for the served registry model.
    fn release_adapter(&self) -> Result<Option<ResolvedModel>, GatewayError> {
        let c = &self.config;
        if !c.model.is_empty() && Path::new(&c.model).is_file() {
            return Ok(None);
        }
        let registry = Registry::load(&c.registry)?;
        let id = if c.model.is_empty() {
            registry.default_chat.as_str()
        } else {
            c.model.as_str()
        };
        Ok(registry.release_adapter(id).map(|(_, file)| file))
    }

    /// The verdict rule for an adapter: its own (threshold and probe band), the threshold
    /// replaced by the configured override where there is one.
    fn verdict_rule(&self, adapter: Option<&Path>) -> Result<VerdictRule, GatewayError> {
        let mut rule = match adapter {
            None => VerdictRule::default(),
            Some(path) => VerdictRule::from_adapter(path).map_err(GatewayError::Internal)?,
        };
        if let Some(t) = self.config.safety.trained_refuse_log_odds {
            rule.refuse_log_odds = Some(t);
        }
        Ok(rule)
    }

    fn engine_config(&self, model_path: &Path, adapter: Option<&Path>) -> EngineConfig {
        let c = &self.config;
        EngineConfig {
            model_path: model_path.to_path_buf(),
            n_gpu_layers: c.engine.n_gpu_layers,
            n_threads: (c.engine.threads > 0).then_some(c.engine.threads),
            n_slots: c.engine.parallel,
            ctx_per_slot: c.engine.ctx_per_slot,
            n_batch: c.engine.batch,
            max_queue: c.engine.max_queue,
            flash_attention: c.engine.flash_attention,
            adapter: adapter.map(Path::to_path_buf),
            nice: c.engine.nice,
            stall_after: (c.engine.stall_secs > 0)
                .then(|| std::time::Duration::from_secs(c.engine.stall_secs)),
        }
    }

    /// Resolves, verifies and loads the configured model. Blocking.
    pub fn load(&self) -> Result<(), GatewayError> {
        let c = &self.config;
        let registry = Registry::load(&c.registry)?;
        let safety = Safety::load(&c.safety, &c.store, &registry, c.verify_sha256)?;
        let resolved = if !c.model.is_empty() && Path::new(&c.model).is_file() {
            resolve_path(&c.model)?
        } else {
            registry.resolve_chat((!c.model.is_empty()).then_some(c.model.as_str()))?
        };
        resolved.verify(c.verify_sha256)?;
        let wanted = self.wanted_adapter()?;
        if let Some(w) = wanted.as_ref().filter(|w| w.sha256.is_some()) {
            w.verify(c.verify_sha256)?;
        }
        let rule = self.verdict_rule(wanted.as_ref().map(|w| w.path.as_path()))?;
        let engine = Engine::load(
            self.engine_config(&resolved.path, wanted.as_ref().map(|w| w.path.as_path())),
        )?;
        let name = c.served_model_name.clone().unwrap_or(resolved.id);
        let info = engine.info();
        let adapter = wanted.map(|w| w.id);
        tracing::info!(
            model = %name,
            path = %resolved.path.display(),
            n_params = info.n_params,
            n_ctx_train = info.n_ctx_train,
            slots = c.engine.parallel,
            ctx_per_slot = c.engine.ctx_per_slot,
            adapter = adapter.as_deref().unwrap_or("none"),
            refuse_log_odds = ?rule.refuse_log_odds,
            "model loaded"
        );
        *self
            .served
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(Served {
            name,
            engine,
            adapter,
            model_path: resolved.path,
            rule,
        }));
        let _ = self.safety.set(safety);
        Ok(())
    }

    /// Serves the adapter the configuration asks for now, if it differs from the served one:
    /// loads a new engine in the caller's thread (blocking), then switches between requests.
    /// Requests already running finish on the old engine, which is freed after the last one.
    pub fn reload_adapter(&self) -> Result<Reload, GatewayError> {
        let _one = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self
            .served()
            .ok_or_else(|| GatewayError::Internal("the model is not loaded yet".into()))?;
        let wanted = self.wanted_adapter()?;
        if wanted.as_ref().map(|w| &w.id) == current.adapter.as_ref() {
            return Ok(Reload {
                adapter: current.adapter.clone(),
                changed: false,
            });
        }
        if let Some(w) = wanted.as_ref().filter(|w| w.sha256.is_some()) {
            w.verify(self.config.verify_sha256)?;
        }
        let rule = self.verdict_rule(wanted.as_ref().map(|w| w.path.as_path()))?;
        let engine = Engine::load(self.engine_config(
            &current.model_path,
            wanted.as_ref().map(|w| w.path.as_path()),
        ))?;
        let adapter = wanted.map(|w| w.id);
        tracing::info!(
            from = current.adapter.as_deref().unwrap_or("none"),
            to = adapter.as_deref().unwrap_or("none"),
            refuse_log_odds = ?rule.refuse_log_odds,
            "adapter switched"
        );
        *self
            .served
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(Served {
            name: current.name.clone(),
            engine,
            adapter: adapter.clone(),
            model_path: current.model_path.clone(),
            rule,
        }));
        if let Some(cache) = &self.cache {
            cache.clear();
        }
        Ok(Reload {
            adapter,
            changed: true,
        })
    }
}
