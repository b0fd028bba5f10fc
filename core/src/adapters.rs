//! The adapter registry (`models/adapters/registry.json` next to the model registry): every
//! adapter the trainer promoted, with its provenance and dev-set figures, and which one is
//! served. The trainer promotes into it; gateways watch it and serve the promoted version.
//! Updates are atomic (adapter file first, then the index through a temp file and rename), so
//! a crash at any point leaves the registry as it was; earlier versions stay for rollback.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Name of the index file inside the adapters directory.
pub const INDEX_FILE: &str = "registry.json";

/// Dev-set figures recorded with a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub harmful_refusal_rate: f64,
    pub benign_compliance_rate: f64,
    /// sha256 of the dev file the figures come from.
    pub dev_sha256: String,
    /// Policy version the gateway evaluated under.
    pub policy_version: String,
    /// Of the utility questions the base model answers correctly on the same engine and machine
    /// (`off` mode, measured in the same gate), the share still answered correctly; absent
    /// where it was not measured (older entries, no utility set).
    #[serde(default)]
    pub utility: Option<f64>,
    /// Share of the whole utility set the base model answered correctly in that measurement:
    /// greedy answers of a small quantized model differ between CPUs, so the set's "answered
    /// correctly" holds only on the machine that wrote it.
    #[serde(default)]
    pub utility_base: Option<f64>,
    /// Share of the responses the gateway decided to answer (verdict `allow` or `safe_complete`,
    /// or served directly) that were refusals anyway; absent where it was not measured.
    #[serde(default)]
    pub mismatch: Option<f64>,
    /// AUC of p(refuse), harmful against benign dev prompts: how well the verdict separates them
    /// whatever the threshold; absent where not measured.
    #[serde(default)]
    pub auc: Option<f64>,
    /// The same figures on the held-out requests from outside the team
    /// (`configs/policy/outside/heldout.jsonl`); absent where not measured.
    #[serde(default)]
    pub outside: Option<OutsideFigures>,
}

/// Figures on requests nobody on the team wrote: the ones the product is judged by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutsideFigures {
    /// sha256 of the held-out file.
    pub data_sha256: String,
    pub harmful_refusal_rate: f64,
    pub benign_compliance_rate: f64,
    /// Benign requests inside a wrapper (role-play, "ignore your rules", ...) that were answered.
    pub wrapped_benign_compliance_rate: Option<f64>,
    pub mismatch: Option<f64>,
    pub auc: Option<f64>,
}

/// One promoted adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterEntry {
    pub version: String,
    /// Version promoted before this one, if any.
    pub parent: Option<String>,
    /// File name inside the adapters directory.
    pub file: String,
    pub sha256: String,
    /// Base model registry id or path.
    pub base_model: String,
    pub data_hash: String,
    /// The training configuration, as JSON.
    pub config: serde_json::Value,
    pub figures: Figures,
    /// Unix seconds.
    pub created: u64,
}

/// The index: history in promotion order, and the served version (`None`: the base model).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdapterIndex {
    pub promoted: Option<String>,
    pub versions: Vec<AdapterEntry>,
    /// Figures of the base model without an adapter, once measured.
    #[serde(default)]
    pub base_figures: Option<Figures>,
    /// Figures of the model registry's release adapter (what the gateway serves while nothing
    /// is promoted here), once measured by a gate; tied to its file's sha256.
    #[serde(default)]
    pub release_figures: Option<ReleaseFigures>,
}

/// A release adapter's measured figures and the file they belong to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseFigures {
    pub id: String,
    pub sha256: String,
    pub figures: Figures,
}

/// Why the registry could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path} is not a valid adapter index: {message}")]
    Invalid { path: String, message: String },
    #[error("no adapter version '{0}' in the registry")]
    UnknownVersion(String),
    #[error("version '{0}' is already in the registry")]
    Duplicate(String),
}

/// The adapters directory and its index.
#[derive(Debug, Clone)]
pub struct AdapterRegistry {
    pub dir: PathBuf,
}

fn io(path: &Path, e: impl std::fmt::Display) -> PromoteError {
    PromoteError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

impl AdapterRegistry {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `<dir of the model registry>/adapters`.
    pub fn beside(model_registry: &Path) -> Self {
        Self::new(
            model_registry
                .parent()
                .unwrap_or(Path::new("."))
                .join("adapters"),
        )
    }

    pub fn index_path(&self) -> PathBuf {
        self.dir.join(INDEX_FILE)
    }

    /// The index; empty when none was written yet.
    pub fn read(&self) -> Result<AdapterIndex, PromoteError> {
        let path = self.index_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| PromoteError::Invalid {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AdapterIndex::default()),
            Err(e) => Err(io(&path, e)),
        }
    }

    /// The served adapter's entry and file, if one is promoted.
    pub fn promoted(&self) -> Result<Option<(AdapterEntry, PathBuf)>, PromoteError> {
        let index = self.read()?;
        let Some(version) = index.promoted.clone() else {
            return Ok(None);
        };
        let entry = index
            .versions
            .into_iter()
            .find(|v| v.version == version)
            .ok_or(PromoteError::UnknownVersion(version))?;
        let file = self.dir.join(&entry.file);
        Ok(Some((entry, file)))
    }

    fn write(&self, index: &AdapterIndex) -> Result<(), PromoteError> {
        let path = self.index_path();
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(|e| io(&self.dir, e))?;
        let json = serde_json::to_vec_pretty(index).map_err(|e| io(&path, e))?;
        std::fs::write(tmp.path(), json).map_err(|e| io(tmp.path(), e))?;
        tmp.as_file().sync_all().map_err(|e| io(tmp.path(), e))?;
        tmp.persist(&path).map_err(|e| io(&path, e.error))?;
        sync_dir(&self.dir)
    }

    /// Records the base model's figures (reused as the baseline while nothing is promoted).
    pub fn set_base_figures(&self, figures: Figures) -> Result<(), PromoteError> {
        let mut index = self.read()?;
        index.base_figures = Some(figures);
        self.write(&index)
    }

    /// Records a release adapter's figures (reused as the baseline while nothing is promoted
    /// and the registry ships the same file).
    pub fn set_release_figures(&self, figures: ReleaseFigures) -> Result<(), PromoteError> {
        let mut index = self.read()?;
        index.release_figures = Some(figures);
        self.write(&index)
    }

    /// Copies `adapter` in as `<version>.gguf`, appends the entry and makes it the served one.
    pub fn promote(&self, adapter: &Path, mut entry: AdapterEntry) -> Result<(), PromoteError> {
        let mut index = self.read()?;
        if index.versions.iter().any(|v| v.version == entry.version) {
            return Err(PromoteError::Duplicate(entry.version));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let file = format!("{}.gguf", entry.version);
        let target = self.dir.join(&file);
        let tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(|e| io(&self.dir, e))?;
        std::fs::copy(adapter, tmp.path()).map_err(|e| io(adapter, e))?;
        tmp.as_file().sync_all().map_err(|e| io(tmp.path(), e))?;
        // The digest of what was copied, which gateways check before they load it.
        let sha256 = crate::registry::sha256_file(tmp.path()).map_err(|e| io(tmp.path(), e))?;
        if !entry.sha256.is_empty() && !entry.sha256.eq_ignore_ascii_case(&sha256) {
            return Err(PromoteError::Invalid {
                path: adapter.display().to_string(),
                message: format!("sha256 {sha256}, not the recorded {}", entry.sha256),
            });
        }
        tmp.persist(&target).map_err(|e| io(&target, e.error))?;
        sync_dir(&self.dir)?;
        entry.sha256 = sha256;
        entry.file = file;
        entry.parent = index.promoted.clone();
        index.promoted = Some(entry.version.clone());
        index.versions.push(entry);
        self.write(&index)
    }

    /// The version a rollback to `version` would serve: `version` itself, or with `None` the
    /// served one's parent (`None`: the base model, when it has none). Changes nothing.
    pub fn rollback_target(&self, version: Option<&str>) -> Result<Option<String>, PromoteError> {
        let index = self.read()?;
        match version {
            Some(v) if index.versions.iter().any(|e| e.version == v) => Ok(Some(v.to_owned())),
            Some(v) => Err(PromoteError::UnknownVersion(v.to_owned())),
            None => {
                let current = index
                    .promoted
                    .clone()
                    .ok_or_else(|| PromoteError::UnknownVersion("(nothing promoted)".into()))?;
                Ok(index
                    .versions
                    .iter()
                    .find(|e| e.version == current)
                    .and_then(|e| e.parent.clone()))
            }
        }
    }

    /// Makes `version` (a recorded one, or `None` for none) the served one.
    pub fn set_promoted(&self, version: Option<&str>) -> Result<(), PromoteError> {
        let mut index = self.read()?;
        if let Some(v) = version.filter(|v| !index.versions.iter().any(|e| e.version == *v)) {
            return Err(PromoteError::UnknownVersion(v.to_owned()));
        }
        index.promoted = version.map(str::to_owned);
        self.write(&index)
    }

    /// The entry of `version`, if recorded.
    pub fn entry(&self, version: &str) -> Result<Option<AdapterEntry>, PromoteError> {
        Ok(self
            .read()?
            .versions
            .into_iter()
            .find(|e| e.version == version))
    }

    /// Serves `version` again, or the previous one's parent when `None` (the base model if it
    /// has none). Returns what is served now.
    pub fn rollback(&self, version: Option<&str>) -> Result<Option<String>, PromoteError> {
        let target = self.rollback_target(version)?;
        self.set_promoted(target.as_deref())?;
        Ok(target)
    }
}

/// Makes renames inside `dir` durable (see [`crate::durable`]).
fn sync_dir(dir: &Path) -> Result<(), PromoteError> {
    crate::durable::sync_dir(dir).map_err(|e| io(dir, e))
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: &str) -> AdapterEntry {
        AdapterEntry {
            version: version.into(),
            parent: None,
            file: String::new(),
            sha256: String::new(),
            base_model: "smollm2-135m-instruct".into(),
            data_hash: "ab".into(),
            config: serde_json::json!({"lora": {"rank": 16}}),
            figures: Figures {
                harmful_refusal_rate: 0.8,
                benign_compliance_rate: 0.9,
                dev_sha256: "cd".into(),
                policy_version: "ef".into(),
                utility: None,
                utility_base: None,
                mismatch: None,
                auc: None,
                outside: None,
            },
            created: 1,
        }
    }

    #[test]
    fn promote_records_parents_and_rollback_walks_back() {
        let dir = tempfile::tempdir().unwrap();
        let reg = AdapterRegistry::new(dir.path().join("adapters"));
        assert_eq!(reg.read().unwrap(), AdapterIndex::default());
        let src = dir.path().join("a.gguf");
        std::fs::write(&src, b"adapter bytes").unwrap();

        reg.promote(&src, entry("v1")).unwrap();
        reg.promote(&src, entry("v2")).unwrap();
        let index = reg.read().unwrap();
        assert_eq!(index.promoted.as_deref(), Some("v2"));
        assert_eq!(index.versions[1].parent.as_deref(), Some("v1"));
        let (served, file) = reg.promoted().unwrap().unwrap();
        assert_eq!(served.version, "v2");
        assert_eq!(std::fs::read(file).unwrap(), b"adapter bytes");
        // The digest of the copy is recorded, for gateways to check before loading it.
        assert_eq!(served.sha256, crate::registry::sha256_file(&src).unwrap());
        let mut wrong = entry("v3");
        wrong.sha256 = "0".repeat(64);
        assert!(matches!(
            reg.promote(&src, wrong),
            Err(PromoteError::Invalid { .. })
        ));
        assert!(matches!(
            reg.promote(&src, entry("v2")),
            Err(PromoteError::Duplicate(_))
        ));

        assert_eq!(reg.rollback(None).unwrap().as_deref(), Some("v1"));
        assert_eq!(reg.rollback(None).unwrap(), None);
        assert_eq!(reg.rollback(Some("v2")).unwrap().as_deref(), Some("v2"));
        assert!(reg.rollback(Some("v9")).is_err());
        // The target alone changes nothing.
        assert_eq!(reg.rollback_target(None).unwrap().as_deref(), Some("v1"));
        assert_eq!(reg.read().unwrap().promoted.as_deref(), Some("v2"));
        assert!(reg.set_promoted(Some("v9")).is_err());
    }

    /// A promotion that fails part-way (the adapter file cannot be read) leaves the index as
    /// it was.
    #[test]
    fn a_failed_promotion_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let reg = AdapterRegistry::new(dir.path().join("adapters"));
        let src = dir.path().join("a.gguf");
        std::fs::write(&src, b"x").unwrap();
        reg.promote(&src, entry("v1")).unwrap();
        let before = std::fs::read(reg.index_path()).unwrap();
        let missing = dir.path().join("missing.gguf");
        assert!(reg.promote(&missing, entry("v2")).is_err());
        assert_eq!(std::fs::read(reg.index_path()).unwrap(), before);
        let leftovers = std::fs::read_dir(&reg.dir).unwrap().count();
        assert_eq!(leftovers, 2, "only the index and v1's file remain");
    }
}
