//! Which adapter the gateway may serve: the versions to try in fallback order (the promoted
//! one, its ancestors, the release adapter), the check each passes before llama.cpp sees it
//! (see [`cada_core::adapter_check`]), and the versions refused until their file changes, so
//! a bad promotion costs one refusal instead of an engine load at every registry poll.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use cada_core::adapter_check::{check_adapter, AdapterRejected, Base, Expected};
use cada_core::adapters::AdapterRegistry;
use cada_core::Registry;

use crate::config::{AdapterChoice, Config};

/// One adapter version to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Registry version, release id or file stem.
    pub id: String,
    pub path: PathBuf,
    /// Recorded digest (registry entry, release pin); `None` for a configured file.
    pub sha256: Option<String>,
    /// Recorded base model, when the registry records one.
    pub base_model: Option<String>,
}

impl Candidate {
    /// Checks the file against what was recorded for it and against the served base.
    pub fn check(&self, base_id: &str, base_path: &Path) -> Result<(), AdapterRejected> {
        check_adapter(
            &self.path,
            Base {
                id: base_id,
                path: base_path,
            },
            Expected {
                sha256: self.sha256.as_deref(),
                base_model: self.base_model.as_deref(),
            },
        )
        .map(|_| ())
    }

    /// What identifies this file's content cheaply: size and modification time, with the
    /// recorded digest (a registry edit changes it).
    fn fingerprint(&self) -> Option<Fingerprint> {
        let m = std::fs::metadata(&self.path).ok()?;
        Some((m.len(), m.modified().ok()?, self.sha256.clone()))
    }
}

/// A stable label for why an adapter was refused (metrics and logs).
pub fn reason(e: &AdapterRejected) -> &'static str {
    match e {
        AdapterRejected::Unreadable(_) => "unreadable",
        AdapterRejected::Digest { .. } => "digest",
        AdapterRejected::BaseModel { .. } => "base_model",
        AdapterRejected::Header(_) => "header",
        AdapterRejected::NotLora(_) => "not_lora",
        AdapterRejected::Architecture { .. } => "architecture",
        AdapterRejected::Shapes(_) => "shapes",
    }
}

/// The adapters to try for `config`, best first; the base model (no adapter) comes after all
/// of them. `Err` when the adapter registry cannot be read: the caller decides whether that
/// stops it (a reload) or falls back to the release adapter (start-up).
pub fn candidates(config: &Config) -> Result<Vec<Candidate>, String> {
    match &config.adapter {
        AdapterChoice::None => Ok(Vec::new()),
        AdapterChoice::File(path) => Ok(vec![Candidate {
            id: path.file_stem().map_or_else(
                || path.display().to_string(),
                |s| s.to_string_lossy().into_owned(),
            ),
            path: path.clone(),
            sha256: None,
            base_model: None,
        }]),
        AdapterChoice::Promoted => {
            let mut out = promoted_chain(&AdapterRegistry::beside(&config.registry))?;
            out.extend(release(config)?);
            Ok(out)
        }
    }
}

/// The promoted version and its ancestors, newest first.
fn promoted_chain(registry: &AdapterRegistry) -> Result<Vec<Candidate>, String> {
    let index = registry
        .read()
        .map_err(|e| format!("adapter registry: {e}"))?;
    let mut out = Vec::new();
    let mut next = index.promoted.clone();
    while let Some(version) = next.take() {
        // A cycle in a hand-edited index ends the walk.
        if out.iter().any(|c: &Candidate| c.id == version) {
            break;
        }
        let entry = index
            .versions
            .iter()
            .find(|e| e.version == version)
            .ok_or_else(|| format!("adapter registry: no version '{version}'"))?;
        out.push(entry_candidate(registry, entry));
        next = entry.parent.clone();
    }
    Ok(out)
}

/// A registry entry as a candidate.
pub fn entry_candidate(
    registry: &AdapterRegistry,
    entry: &cada_core::adapters::AdapterEntry,
) -> Candidate {
    Candidate {
        id: entry.version.clone(),
        path: registry.dir.join(&entry.file),
        sha256: Some(entry.sha256.clone()).filter(|s| !s.is_empty()),
        base_model: Some(entry.base_model.clone()).filter(|s| !s.is_empty()),
    }
}

/// The release adapter shipped for the served registry model, if any.
pub fn release(config: &Config) -> Result<Option<Candidate>, String> {
    if !config.model.is_empty() && Path::new(&config.model).is_file() {
        return Ok(None);
    }
    let registry = Registry::load(&config.registry).map_err(|e| e.to_string())?;
    let id = if config.model.is_empty() {
        registry.default_chat.as_str()
    } else {
        config.model.as_str()
    };
    Ok(registry
        .release_adapter(id)
        .map(|(adapter, file)| Candidate {
            id: file.id,
            path: file.path,
            sha256: file.sha256,
            base_model: Some(adapter.base.clone()),
        }))
}

/// Why a version (or the base model) could not be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The version refused; empty for the base model.
    pub version: String,
    /// A label of `cada_adapter_refused_total`.
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    /// The base model itself failed to load (not an adapter's fault).
    pub fn base(message: String) -> Self {
        Self {
            version: String::new(),
            reason: "load",
            message,
        }
    }
}

impl From<Refusal> for crate::GatewayError {
    fn from(r: Refusal) -> Self {
        if r.version.is_empty() {
            return Self::Internal(r.message);
        }
        Self::AdapterRefused {
            version: r.version,
            reason: r.reason,
            message: r.message,
        }
    }
}

type Fingerprint = (u64, SystemTime, Option<String>);

/// Versions refused, with the fingerprint of the file refused: skipped until it changes.
#[derive(Debug, Default)]
pub struct Refused {
    by_id: Mutex<HashMap<String, (Option<Fingerprint>, Refusal)>>,
}

impl Refused {
    pub fn insert(&self, candidate: &Candidate, why: &Refusal) {
        self.by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(candidate.id.clone(), (candidate.fingerprint(), why.clone()));
    }

    /// Why `candidate` was refused, if it was and its file is still the one refused.
    pub fn get(&self, candidate: &Candidate) -> Option<Refusal> {
        let by_id = self
            .by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (seen, why) = by_id.get(&candidate.id)?;
        let now = candidate.fingerprint();
        (seen.is_some() && *seen == now).then(|| why.clone())
    }
}
