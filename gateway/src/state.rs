//! Shared gateway state: the configuration and the engine, which becomes available once the
//! model has loaded (until then `/readyz` and inference answer 503).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use cada_core::registry::resolve_path;
use cada_core::{Engine, EngineConfig, Registry};

use crate::config::Config;
use crate::error::ApiError;
use crate::safety::Safety;
use crate::GatewayError;

/// The loaded model and the name clients address it by.
#[derive(Debug)]
pub struct Served {
    pub name: String,
    pub engine: Engine,
    /// Version of the LoRA adapter the engine applies (the adapter file's stem).
    pub adapter: Option<String>,
}

#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    served: OnceLock<Served>,
    safety: OnceLock<Arc<Safety>>,
}

impl AppState {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            served: OnceLock::new(),
            safety: OnceLock::new(),
        }
    }

    /// The served model, once loaded.
    pub fn served(&self) -> Option<&Served> {
        // Ready only once the safety layer is loaded too.
        self.safety.get().and(self.served.get())
    }

    /// Policy, retrieval and case store, once loaded.
    pub fn safety(&self) -> Option<&Arc<Safety>> {
        self.safety.get()
    }

    /// The engine for a request naming `model`: 503 while loading, 404 for another model.
    pub fn engine_for(&self, model: &str) -> Result<&Engine, ApiError> {
        let served = self.served().ok_or_else(ApiError::not_ready)?;
        if served.name != model {
            return Err(ApiError::model_not_found(model));
        }
        Ok(&served.engine)
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
        let engine = Engine::load(EngineConfig {
            model_path: resolved.path.clone(),
            n_gpu_layers: c.engine.n_gpu_layers,
            n_threads: (c.engine.threads > 0).then_some(c.engine.threads),
            n_slots: c.engine.parallel,
            ctx_per_slot: c.engine.ctx_per_slot,
            n_batch: c.engine.batch,
            max_queue: c.engine.max_queue,
            flash_attention: c.engine.flash_attention,
            adapter: c.adapter.clone(),
        })?;
        let adapter = c.adapter.as_ref().map(|p| {
            p.file_stem().map_or_else(
                || p.display().to_string(),
                |s| s.to_string_lossy().into_owned(),
            )
        });
        let name = c.served_model_name.clone().unwrap_or(resolved.id);
        let info = engine.info();
        tracing::info!(
            model = %name,
            path = %resolved.path.display(),
            n_params = info.n_params,
            n_ctx_train = info.n_ctx_train,
            slots = c.engine.parallel,
            ctx_per_slot = c.engine.ctx_per_slot,
            adapter = adapter.as_deref().unwrap_or("none"),
            "model loaded"
        );
        let _ = self.served.set(Served {
            name,
            engine,
            adapter,
        });
        let _ = self.safety.set(safety);
        Ok(())
    }
}
