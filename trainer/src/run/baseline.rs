//! What a candidate must beat: what the gateway serves without it. That is the locally promoted
//! version; with none, the release adapter the model registry ships for the model (what the
//! first command serves); with neither, the base model. A gate that measured a candidate
//! against the base model while a release adapter was served would promote anything safer than
//! the bare model over a better release.

use std::path::PathBuf;

use cada_core::adapters::{AdapterIndex, AdapterRegistry, Figures, ReleaseFigures};
use cada_core::Registry;

/// The served model a gate compares with.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Served {
    /// A version promoted in the local adapter registry, with its recorded figures.
    Promoted {
        version: String,
        file: PathBuf,
        figures: Figures,
    },
    /// The model registry's release adapter for the model.
    Release {
        id: String,
        sha256: String,
        file: PathBuf,
    },
    /// The base model alone.
    Base,
}

impl Served {
    /// What the index says the gateway serves for `model` (a registry id, a path, or empty for
    /// the registry's default chat model). The release file is verified later, by the gateway
    /// that serves it in the gate.
    pub(super) fn find(
        index: &AdapterRegistry,
        registry: &Registry,
        model: &str,
    ) -> Result<Self, String> {
        if let Some((entry, file)) = index.promoted().map_err(|e| e.to_string())? {
            return Ok(Self::Promoted {
                version: entry.version,
                file,
                figures: entry.figures,
            });
        }
        let id = if model.is_empty() {
            registry.default_chat.as_str()
        } else {
            model
        };
        Ok(match registry.release_adapter(id) {
            Some((adapter, file)) => Self::Release {
                id: adapter.id.clone(),
                sha256: adapter.sha256.clone(),
                file: file.path,
            },
            None => Self::Base,
        })
    }

    /// The adapter file to serve for a measurement; `None` for the base model.
    pub(super) fn file(&self) -> Option<PathBuf> {
        match self {
            Self::Promoted { file, .. } | Self::Release { file, .. } => Some(file.clone()),
            Self::Base => None,
        }
    }

    /// The version or release id, for the run's report; `None` for the base model.
    pub(super) fn name(&self) -> Option<String> {
        match self {
            Self::Promoted { version, .. } => Some(version.clone()),
            Self::Release { id, .. } => Some(id.clone()),
            Self::Base => None,
        }
    }

    /// Figures measured earlier for exactly this model, if any.
    pub(super) fn recorded(&self, index: &AdapterIndex) -> Option<Figures> {
        match self {
            Self::Promoted { figures, .. } => Some(figures.clone()),
            Self::Release { sha256, .. } => index
                .release_figures
                .as_ref()
                .filter(|r| r.sha256 == *sha256)
                .map(|r| r.figures.clone()),
            Self::Base => index.base_figures.clone(),
        }
    }

    /// Keeps freshly measured figures so the next gate need not measure them again (a promoted
    /// version's were recorded when it was promoted).
    pub(super) fn record(&self, index: &AdapterRegistry, figures: Figures) -> Result<(), String> {
        match self {
            Self::Promoted { .. } => Ok(()),
            Self::Release { id, sha256, .. } => index.set_release_figures(ReleaseFigures {
                id: id.clone(),
                sha256: sha256.clone(),
                figures,
            }),
            Self::Base => index.set_base_figures(figures),
        }
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use cada_core::adapters::AdapterEntry;

    use super::*;

    fn figures(harmful: f64) -> Figures {
        Figures {
            harmful_refusal_rate: harmful,
            benign_compliance_rate: 0.9,
            dev_sha256: "dev".into(),
            policy_version: "p".into(),
            utility: None,
            utility_base: None,
            mismatch: None,
            auc: None,
            outside: None,
        }
    }

    fn repo_registry() -> Registry {
        Registry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/registry.toml"))
            .expect("registry")
    }

    /// With nothing promoted the baseline is the shipped release adapter, its figures kept by
    /// file digest; a promoted version replaces it; a model without a release is the base.
    #[test]
    fn the_baseline_is_what_the_gateway_would_serve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = AdapterRegistry::new(dir.path().join("adapters"));
        let registry = repo_registry();
        let shipped = registry.adapters[0].clone();

        let served = Served::find(&index, &registry, "").expect("find");
        let Served::Release { id, sha256, file } = &served else {
            panic!("expected the release adapter, got {served:?}");
        };
        assert_eq!((id, sha256), (&shipped.id, &shipped.sha256));
        assert!(file.ends_with(&shipped.path), "{}", file.display());
        assert_eq!(served.name().as_deref(), Some(shipped.id.as_str()));
        assert_eq!(served.recorded(&index.read().unwrap()), None);

        served.record(&index, figures(0.9)).expect("record");
        let read = index.read().unwrap();
        assert_eq!(served.recorded(&read), Some(figures(0.9)));
        assert_eq!(
            read.base_figures, None,
            "the base model's figures are not the release's"
        );
        // Another file under the same id (a new release) is measured again.
        let other = Served::Release {
            id: shipped.id.clone(),
            sha256: "0".repeat(64),
            file: file.clone(),
        };
        assert_eq!(other.recorded(&read), None);

        let source = dir.path().join("a.gguf");
        std::fs::write(&source, b"adapter").unwrap();
        let entry = AdapterEntry {
            version: "v1".into(),
            parent: None,
            file: String::new(),
            sha256: String::new(),
            base_model: String::new(),
            data_hash: String::new(),
            config: serde_json::Value::Null,
            figures: figures(0.97),
            created: 0,
        };
        index.promote(&source, entry).expect("promote");
        let served = Served::find(&index, &registry, "").expect("find");
        assert_eq!(served.name().as_deref(), Some("v1"));
        assert_eq!(served.recorded(&index.read().unwrap()), Some(figures(0.97)));

        let bare = AdapterRegistry::new(dir.path().join("none"));
        let served = Served::find(&bare, &registry, "all-minilm-l6-v2").expect("find");
        assert_eq!(served, Served::Base);
        assert_eq!(served.file(), None);
    }
}
