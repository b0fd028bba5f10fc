//! The precedent index: every case's request embedded once per policy version and embedding
//! model, cached on disk, searched by cosine similarity.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{cosine, EmbedError, Embedder};
use crate::policy::{Policy, Precedent};

/// Case embeddings, in the order of `Policy::cases`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrecedentIndex {
    pub policy_version: String,
    pub embedder: String,
    pub ids: Vec<String>,
    pub vectors: Vec<Vec<f32>>,
}

impl PrecedentIndex {
    /// Reads the cached index for this policy and model from `cache_dir`, or builds and caches it.
    /// A cache that cannot be written is only logged: retrieval works without it.
    pub fn load_or_build(
        policy: &Policy,
        embedder: &Embedder,
        cache_dir: Option<&Path>,
    ) -> Result<Self, EmbedError> {
        let path = cache_dir.map(|d| Self::cache_path(d, policy, embedder));
        if let Some(index) = path
            .as_deref()
            .and_then(|p| Self::read(p, policy, embedder))
        {
            tracing::debug!(
                cases = index.ids.len(),
                "precedent embeddings read from cache"
            );
            return Ok(index);
        }
        let requests: Vec<&str> = policy.cases.iter().map(|c| c.request.as_str()).collect();
        let index = Self {
            policy_version: policy.version.clone(),
            embedder: embedder.fingerprint().to_owned(),
            ids: policy.cases.iter().map(|c| c.id.clone()).collect(),
            vectors: embedder.embed(&requests)?,
        };
        if let Some(path) = path {
            if let Err(e) = index.write(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot cache precedent embeddings");
            }
        }
        Ok(index)
    }

    pub fn cache_path(dir: &Path, policy: &Policy, embedder: &Embedder) -> PathBuf {
        dir.join(format!(
            "precedents-{}-{}.json",
            policy.version,
            embedder.fingerprint()
        ))
    }

    fn read(path: &Path, policy: &Policy, embedder: &Embedder) -> Option<Self> {
        let index: Self = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let ids_match = index.ids.iter().eq(policy.cases.iter().map(|c| &c.id));
        let fits = index.vectors.iter().all(|v| v.len() == embedder.dim());
        (index.policy_version == policy.version
            && index.embedder == embedder.fingerprint()
            && ids_match
            && fits)
            .then_some(index)
    }

    fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(&tmp, path)
    }

    /// The `k` cases nearest to `query` (a unit vector), most similar first.
    pub fn nearest<'p>(&self, policy: &'p Policy, query: &[f32], k: usize) -> Vec<Precedent<'p>> {
        let mut scored: Vec<(usize, f32)> = self
            .vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (i, cosine(query, v)))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored
            .into_iter()
            .take(k)
            .filter_map(|(i, similarity)| {
                policy
                    .cases
                    .get(i)
                    .map(|case| Precedent { case, similarity })
            })
            .collect()
    }
}
