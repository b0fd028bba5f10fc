//! Release adapters: LoRA adapters trained by `cada-trainer run` from the committed
//! configuration and data, shipped in the repository and pinned in `models/registry.toml`
//! (`[[adapter]]`) by sha256, with their provenance and measured figures. The gateway serves the
//! release adapter of its base model unless a locally promoted adapter replaces it.

use std::path::Path;

use serde::Deserialize;

use crate::registry::{Registry, ResolvedModel};

/// One shipped adapter. Keys the gateway does not read (how it was trained, its figures) are
/// provenance for people and for the test that checks them against the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReleaseAdapter {
    /// The version clients see in `x-cada-adapter`.
    pub id: String,
    /// Registry id of the chat model it was trained on.
    pub base: String,
    /// The GGUF, relative to the registry's directory (committed, not fetched).
    pub path: String,
    pub sha256: String,
    /// The safety mode it was calibrated for (the gateway's default mode serves it).
    pub mode: String,
    /// The command that trained it.
    pub command: String,
    /// Hash of the training data (`cada.adapter.data_hash` in the file).
    pub data_hash: String,
    /// Calibrated refuse threshold, log-odds (`cada.verdict.refuse_log_odds`).
    pub refuse_log_odds: Option<f32>,
    /// Calibrated probe band `[serve_below, refuse_from]` (`cada.probe.*`).
    pub probe_band: Option<[f32; 2]>,
    /// Figures measured when it was released (see docs/default-model.md).
    #[serde(default)]
    pub figures: toml::Table,
}

impl ReleaseAdapter {
    /// Problems with the entry itself (not the file): bad digest or an escaping path.
    pub(crate) fn check(&self, registry: &Registry) -> Result<(), String> {
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "adapter '{}': sha256 is not 64 hex digits",
                self.id
            ));
        }
        if Path::new(&self.path).is_absolute() || self.path.split('/').any(|c| c == "..") {
            return Err(format!(
                "adapter '{}': path {} must stay inside the registry",
                self.id, self.path
            ));
        }
        if registry.entry(&self.base).is_none() {
            return Err(format!(
                "adapter '{}': base '{}' is not a model id",
                self.id, self.base
            ));
        }
        Ok(())
    }
}

impl Registry {
    /// The release adapter for the chat model `base` (a registry id), if one is shipped, as a
    /// file to verify like a model's.
    pub fn release_adapter(&self, base: &str) -> Option<(&ReleaseAdapter, ResolvedModel)> {
        let a = self.adapters.iter().find(|a| a.base == base)?;
        let file = ResolvedModel {
            id: a.id.clone(),
            path: self.root().join(&a.path),
            sha256: Some(a.sha256.clone()),
        };
        Some((a, file))
    }
}
