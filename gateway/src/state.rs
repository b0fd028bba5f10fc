//! Shared gateway state: the configuration and the engine, which becomes available once the
//! model has loaded (until then `/readyz` and inference answer 503).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use cada_core::adapters::AdapterRegistry;
use cada_core::policy::VerdictRule;
use cada_core::registry::resolve_path;
use cada_core::{Engine, EngineConfig, Failure, Registry};

use crate::adapters::{self, Candidate, Refusal, Refused};
use crate::admission::Admission;
use crate::auth::Keys;
use crate::cache::ResponseCache;
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::safety::Safety;
use crate::GatewayError;

/// The loaded model and the name clients address it by. A request holds one `Arc<Served>`
/// from start to end, so an adapter swap never mixes two models inside one response.
#[derive(Debug)]
pub struct Served {
    pub name: String,
    /// Registry id (or file stem) of the base model, which adapters must be trained for.
    pub base_id: String,
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
    /// Adapter versions refused, not tried again until their file changes.
    refused: Refused,
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
            refused: Refused::default(),
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

    /// Checks `candidate` against the served base model, reads its verdict rule and loads an
    /// engine with it (without one for `None`).
    fn prepare(
        &self,
        base_id: &str,
        model_path: &Path,
        candidate: Option<&Candidate>,
    ) -> Result<(Engine, VerdictRule), Refusal> {
        let refusal = |c: &Candidate, reason: &'static str, message: String| Refusal {
            version: c.id.clone(),
            reason,
            message,
        };
        if let Some(c) = candidate {
            c.check(base_id, model_path)
                .map_err(|e| refusal(c, adapters::reason(&e), e.to_string()))?;
        }
        let path = candidate.map(|c| c.path.as_path());
        let rule = self.verdict_rule(path).map_err(|e| match candidate {
            Some(c) => refusal(c, "metadata", e.to_string()),
            None => Refusal::base(e.to_string()),
        })?;
        let engine =
            Engine::load(self.engine_config(model_path, path)).map_err(|e| match candidate {
                Some(c) => refusal(c, "load", e.to_string()),
                None => Refusal::base(e.to_string()),
            })?;
        Ok((engine, rule))
    }

    /// Counts and remembers a refused version, so it is not tried again until it changes.
    fn refuse(&self, candidate: &Candidate, r: &Refusal) {
        tracing::error!(
            version = %r.version,
            reason = r.reason,
            error = %r.message,
            "adapter refused"
        );
        self.metrics.adapter_refused(r.reason);
        self.refused.insert(candidate, r);
    }

    /// Resolves, verifies and loads the configured model. Blocking. An adapter that is refused
    /// (see [`crate::adapters`]) gives way to the next candidate, finally the base model, with
    /// an error log and `cada_adapter_fallback` at 1: a bad promotion never stops start-up.
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
        let mut fallback = false;
        let candidates = adapters::candidates(c).unwrap_or_else(|e| {
            tracing::error!(error = %e, "adapter registry unreadable; trying the release adapter");
            self.metrics.adapter_refused("registry");
            fallback = true;
            adapters::release(c).ok().flatten().into_iter().collect()
        });
        let mut chosen = None;
        for candidate in &candidates {
            match self.prepare(&resolved.id, &resolved.path, Some(candidate)) {
                Ok((engine, rule)) => {
                    chosen = Some((Some(candidate.id.clone()), engine, rule));
                    break;
                }
                Err(r) => {
                    self.refuse(candidate, &r);
                    fallback = true;
                }
            }
        }
        let (adapter, engine, rule) = match chosen {
            Some(chosen) => chosen,
            None => {
                let (engine, rule) = self
                    .prepare(&resolved.id, &resolved.path, None)
                    .map_err(|r| GatewayError::Internal(r.message))?;
                (None, engine, rule)
            }
        };
        if fallback {
            tracing::error!(
                serving = adapter.as_deref().unwrap_or("the base model"),
                wanted = candidates
                    .first()
                    .map_or("the release adapter", |c| c.id.as_str()),
                "serving a fallback: the adapter asked for was refused"
            );
        }
        self.metrics.set_adapter_fallback(fallback);
        let name = c
            .served_model_name
            .clone()
            .unwrap_or_else(|| resolved.id.clone());
        let info = engine.info();
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
            base_id: resolved.id,
            engine,
            adapter,
            model_path: resolved.path,
            rule,
        }));
        let _ = self.safety.set(safety);
        Ok(())
    }

    /// The reload lock (one switch at a time) and what is served now.
    fn begin_switch(&self) -> Result<(std::sync::MutexGuard<'_, ()>, Arc<Served>), GatewayError> {
        let one = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self
            .served()
            .ok_or_else(|| GatewayError::Internal("the model is not loaded yet".into()))?;
        Ok((one, current))
    }

    /// Serves the adapter the configuration asks for now, if it differs from the served one:
    /// loads a new engine in the caller's thread (blocking), then switches between requests.
    /// Requests already running finish on the old engine, which is freed after the last one.
    /// A refused version keeps the served one and is not tried again until its file changes.
    pub fn reload_adapter(&self) -> Result<Reload, GatewayError> {
        let (_one, current) = self.begin_switch()?;
        let wanted = adapters::candidates(&self.config)
            .map_err(GatewayError::Internal)?
            .into_iter()
            .next();
        if wanted.as_ref().map(|w| &w.id) == current.adapter.as_ref() {
            self.metrics.set_adapter_fallback(false);
            return Ok(Reload {
                adapter: current.adapter.clone(),
                changed: false,
            });
        }
        if let Some(r) = wanted.as_ref().and_then(|w| self.refused.get(w)) {
            return Err(r.into());
        }
        self.switch(&current, wanted.as_ref(), || Ok(()))
    }

    /// Serves registry `version` (`None`: the release adapter, or the base model without one)
    /// and records it as promoted, in that order: the registry, which every replica follows,
    /// names a version only once this gateway has loaded it.
    pub fn serve_version(&self, version: Option<&str>) -> Result<Reload, GatewayError> {
        let (_one, current) = self.begin_switch()?;
        let registry = self.adapter_registry();
        let candidate = match version {
            Some(v) => {
                let entry = registry
                    .entry(v)
                    .map_err(|e| GatewayError::Internal(e.to_string()))?
                    .ok_or_else(|| GatewayError::Internal(format!("no adapter version '{v}'")))?;
                Some(adapters::entry_candidate(&registry, &entry))
            }
            None => adapters::release(&self.config).map_err(GatewayError::Internal)?,
        };
        let record = || {
            registry
                .set_promoted(version)
                .map_err(|e| GatewayError::Internal(e.to_string()))
        };
        if candidate.as_ref().map(|c| &c.id) == current.adapter.as_ref() {
            record()?;
            self.metrics.set_adapter_fallback(false);
            return Ok(Reload {
                adapter: current.adapter.clone(),
                changed: false,
            });
        }
        self.switch(&current, candidate.as_ref(), record)
    }

    /// Loads `wanted`, runs `commit` (which may still refuse the switch), then serves it.
    fn switch(
        &self,
        current: &Served,
        wanted: Option<&Candidate>,
        commit: impl FnOnce() -> Result<(), GatewayError>,
    ) -> Result<Reload, GatewayError> {
        let base_id = current.base_id.as_str();
        let (engine, rule) = match self.prepare(base_id, &current.model_path, wanted) {
            Ok(loaded) => loaded,
            Err(r) => {
                if let Some(w) = wanted {
                    self.refuse(w, &r);
                }
                return Err(r.into());
            }
        };
        commit()?;
        let adapter = wanted.map(|w| w.id.clone());
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
            base_id: current.base_id.clone(),
            engine,
            adapter: adapter.clone(),
            model_path: current.model_path.clone(),
            rule,
        }));
        self.metrics.set_adapter_fallback(false);
        if let Some(cache) = &self.cache {
            cache.clear();
        }
        Ok(Reload {
            adapter,
            changed: true,
        })
    }
}
