//! Deliberative safety: the mode of each request, the policy with its precedent index, the case
//! store, and the decision each deliberation reaches.

pub mod config;
pub mod decision;
pub mod deliberate;
pub mod moderate;
mod probed;
pub mod screen;

use std::sync::Arc;

use cada_core::embed::{Embedder, PrecedentIndex};
use cada_core::policy::{Policy, Precedent};
use cada_core::registry::Registry;
use cada_core::store::{PrecedentRef, Redactor, StoreHandle, DEFAULT_QUEUE_CAPACITY};
use serde::Deserialize;

use crate::error::ApiError;
use crate::GatewayError;
pub use config::{SafetyConfig, StoreSection};
pub use decision::Decision;

/// How a request is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Plain serving.
    Off,
    /// Codes and retrieved precedents in the system context; the model deliberates.
    Cases,
    /// The model was trained to deliberate: the format is forced, no precedents in context.
    Trained,
    /// A cheap risk estimate first; only risky requests deliberate with cases.
    Adaptive,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Cases => "cases",
            Mode::Trained => "trained",
            Mode::Adaptive => "adaptive",
        }
    }

    /// Parses the `safety_mode` request field.
    pub fn parse_field(value: &str) -> Result<Self, ApiError> {
        match value {
            "off" => Ok(Mode::Off),
            "cases" => Ok(Mode::Cases),
            "trained" => Ok(Mode::Trained),
            "adaptive" => Ok(Mode::Adaptive),
            other => Err(ApiError::invalid_value(
                "safety_mode",
                format!("'{other}' is not a safety mode; use off, cases, trained or adaptive."),
            )),
        }
    }
}

/// Policy, retrieval and case logging, loaded once at start-up.
pub struct Safety {
    pub config: SafetyConfig,
    pub policy: Policy,
    pub embedder: Embedder,
    pub index: PrecedentIndex,
    pub store: StoreHandle,
    pub redactor: Redactor,
}

impl std::fmt::Debug for Safety {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Safety")
            .field("policy_version", &self.policy.version)
            .field("cases", &self.policy.cases.len())
            .finish_non_exhaustive()
    }
}

impl Safety {
    /// Loads the policy, the embedding model (from the registry), the precedent index (cached
    /// under the data directory) and opens the case store. Blocking.
    pub fn load(
        config: &SafetyConfig,
        store: &StoreSection,
        registry: &Registry,
        verify: bool,
    ) -> Result<Arc<Self>, GatewayError> {
        let policy =
            Policy::load(&config.policy_dir).map_err(|e| GatewayError::Safety(e.to_string()))?;
        let dir = registry.resolve_embedding(Some(&config.embedding_model), verify)?;
        let embedder = Embedder::load(&dir).map_err(|e| GatewayError::Safety(e.to_string()))?;
        let index = PrecedentIndex::load_or_build(&policy, &embedder, Some(&store.cache_dir()))
            .map_err(|e| GatewayError::Safety(e.to_string()))?;
        let location = store
            .location()
            .map_err(|e| GatewayError::Safety(format!("case store: {e}")))?;
        let shown = location.to_string();
        let handle = StoreHandle::open(location, store.cases.clone(), DEFAULT_QUEUE_CAPACITY)
            .map_err(|e| GatewayError::Safety(format!("case store: {e}")))?
            .with_call_timeout(std::time::Duration::from_secs(
                store.call_timeout_secs.max(1),
            ));
        let redactor = Redactor::new(store.redact.clone())
            .map_err(|e| GatewayError::Safety(format!("redaction: {e}")))?;
        tracing::info!(
            policy_version = %policy.version,
            cases = policy.cases.len(),
            store = %shown,
            "safety policy loaded"
        );
        Ok(Arc::new(Self {
            config: config.clone(),
            policy,
            embedder,
            index,
            store: handle,
            redactor,
        }))
    }

    /// The `k` nearest precedents of an embedded request.
    pub fn nearest(&self, embedding: &[f32]) -> Vec<Precedent<'_>> {
        self.index
            .nearest(&self.policy, embedding, self.config.top_k)
    }
}

/// Precedents as stored and reported.
pub fn refs(precedents: &[Precedent<'_>]) -> Vec<PrecedentRef> {
    precedents
        .iter()
        .map(|p| PrecedentRef {
            id: p.case.id.clone(),
            label: p.case.label,
            similarity: p.similarity,
        })
        .collect()
}
