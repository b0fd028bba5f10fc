//! The near-duplicate search of case logging. The database decides which cases are pending,
//! under the advisory lock `log_case` holds, so every replica sees the same set; the similarity
//! is computed here, over embeddings cached by case id. A case's embedding never changes once
//! written, so the cache can only miss, never be stale: misses are fetched in one query, and
//! cases that left the pending set are dropped from it.
//!
//! (Computing the cosine in SQL, as `cada_dot` can, costs about 0.1 ms per pending case on a
//! 2-core machine: 318 ms per logged case with 3,000 pending, against a few here; see the store
//! benchmark.)

use std::collections::{HashMap, HashSet};

use postgres::Transaction;

use crate::store::codec::Result;

/// Embeddings of pending cases (and their norms) this connection has seen.
#[derive(Debug, Default)]
pub(super) struct EmbeddingCache {
    by_id: HashMap<String, (Vec<f32>, f64)>,
}

impl EmbeddingCache {
    /// The pending case most similar to `query` (ties: the oldest), with its cosine similarity.
    /// Run inside the transaction that holds the case lock.
    pub(super) fn nearest_pending(
        &mut self,
        tx: &mut Transaction<'_>,
        query: &[f32],
    ) -> Result<Option<(String, f32)>> {
        let query_norm = norm(query);
        if query_norm == 0.0 {
            return Ok(None);
        }
        let dim = i32::try_from(query.len()).unwrap_or(i32::MAX);
        let ids: Vec<String> = tx
            .query(
                "SELECT id FROM cases
                 WHERE status = 'pending' AND cardinality(embedding) = $1 AND embedding_norm > 0
                 ORDER BY seq",
                &[&dim],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        let missing: Vec<&String> = ids
            .iter()
            .filter(|id| !self.by_id.contains_key(*id))
            .collect();
        if !missing.is_empty() {
            for row in tx.query(
                "SELECT id, embedding, embedding_norm FROM cases WHERE id = ANY($1)",
                &[&missing],
            )? {
                self.by_id
                    .insert(row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?));
            }
        }
        let pending: HashSet<&String> = ids.iter().collect();
        self.by_id.retain(|id, _| pending.contains(id));
        let mut best: Option<(&String, f32)> = None;
        for id in &ids {
            let Some((embedding, embedding_norm)) = self.by_id.get(id) else {
                continue;
            };
            let dot: f64 = query
                .iter()
                .zip(embedding)
                .map(|(q, e)| f64::from(*q) * f64::from(*e))
                .sum();
            let similarity = (dot / (query_norm * embedding_norm)) as f32;
            if best.is_none_or(|(_, b)| similarity > b) {
                best = Some((id, similarity));
            }
        }
        Ok(best.map(|(id, s)| (id.clone(), s)))
    }
}

/// Euclidean norm, in f64 as the SQLite backend computes it.
pub(super) fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt()
}
