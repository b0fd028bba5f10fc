//! Training prompts: the case library's precedents (with their rationale and exemplar answer),
//! labelled cases exported from the gateway's case store (review or agreeing feedback), and
//! labelled requests from outside the team (`configs/policy/outside/train.jsonl`). Evaluation
//! sets are never read here, and a run refuses to start when one of its training requests is
//! also an evaluation prompt. Every run records a hash of exactly what it trained on.

use std::path::Path;

use cada_core::policy::{Case, DevItem, Label};
use cada_core::store::read_training_jsonl;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Where a training example came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A precedent of the case library.
    Library,
    /// A labelled case from the case store.
    Store,
    /// A labelled request from outside the team, in the dev-set layout.
    Outside,
}

/// One labelled training prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    pub id: String,
    pub request: String,
    pub label: Label,
    /// Written reasoning, where the source has one (library precedents).
    pub rationale: Option<String>,
    /// Exemplar answer, where the source has one.
    pub answer: Option<String>,
    pub origin: Origin,
}

/// Why training data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    #[error("no training examples")]
    Empty,
}

/// The library's precedents as examples.
pub fn from_library(cases: &[Case]) -> Vec<Example> {
    cases
        .iter()
        .map(|c| Example {
            id: c.id.clone(),
            request: c.request.clone(),
            label: c.label,
            rationale: Some(c.rationale.clone()),
            answer: Some(c.answer.clone()),
            origin: Origin::Library,
        })
        .collect()
}

/// Labelled cases from a case-store export (`GET /admin/cases/export`).
pub fn from_export(path: &Path) -> Result<Vec<Example>, DataError> {
    let err = |message: String| DataError::Read {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let cases = read_training_jsonl(&text).map_err(|e| err(e.to_string()))?;
    Ok(cases
        .into_iter()
        .filter(|c| !c.request.trim().is_empty())
        .map(|c| Example {
            id: c.id,
            request: c.request,
            label: c.label,
            rationale: c.note.filter(|n| !n.trim().is_empty()),
            answer: None,
            origin: Origin::Store,
        })
        .collect())
}

/// Labelled requests in the dev-set layout; the labeller's note is the written reasoning.
pub fn from_labelled(path: &Path) -> Result<Vec<Example>, DataError> {
    let items: Vec<DevItem> = cada_core::policy::read_jsonl(path).map_err(|e| DataError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(items
        .into_iter()
        .map(|i| Example {
            id: i.id,
            request: i.prompt,
            label: i.label,
            rationale: i.note.filter(|n| !n.trim().is_empty()),
            answer: None,
            origin: Origin::Outside,
        })
        .collect())
}

/// Training requests that are also evaluation prompts (case-insensitive, spaces trimmed): a
/// figure measured on them would be measured on training data.
pub fn leaked<'a>(examples: &'a [Example], evaluation: &[DevItem]) -> Vec<&'a str> {
    let held: std::collections::HashSet<String> = evaluation
        .iter()
        .map(|i| i.prompt.trim().to_lowercase())
        .collect();
    examples
        .iter()
        .filter(|e| held.contains(&e.request.trim().to_lowercase()))
        .map(|e| e.id.as_str())
        .collect()
}

/// Merges sources: a later example with the same request (case-insensitive) replaces an earlier
/// one, so a reviewed store case overrides the library's label for the same text.
pub fn merge(sources: Vec<Vec<Example>>) -> Result<Vec<Example>, DataError> {
    let mut out: Vec<Example> = Vec::new();
    for e in sources.into_iter().flatten() {
        let key = e.request.trim().to_lowercase();
        match out
            .iter_mut()
            .find(|o| o.request.trim().to_lowercase() == key)
        {
            Some(o) => *o = e,
            None => out.push(e),
        }
    }
    if out.is_empty() {
        return Err(DataError::Empty);
    }
    Ok(out)
}

/// sha256 over the canonical JSON of the examples, in order: the run's data fingerprint.
pub fn hash(examples: &[Example]) -> String {
    let mut h = Sha256::new();
    for e in examples {
        // Plain strings and enums: serialising cannot fail.
        h.update(serde_json::to_vec(e).unwrap_or_default());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(id: &str, request: &str, label: Label, origin: Origin) -> Example {
        Example {
            id: id.into(),
            request: request.into(),
            label,
            rationale: None,
            answer: None,
            origin,
        }
    }

    #[test]
    fn store_labels_override_the_library_and_the_hash_follows_the_data() {
        let lib = vec![
            ex(
                "a",
                "How do I kill a process?",
                Label::Refuse,
                Origin::Library,
            ),
            ex("b", "Make a bomb", Label::Refuse, Origin::Library),
        ];
        let store = vec![ex(
            "s1",
            "how do i kill a process? ",
            Label::Allow,
            Origin::Store,
        )];
        let merged = merge(vec![lib.clone(), store]).unwrap();
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].label, Label::Allow);
        assert_eq!(merged[0].origin, Origin::Store);
        assert_ne!(hash(&merged), hash(&lib));
        assert_eq!(hash(&lib), hash(&lib.clone()));
        assert!(matches!(merge(vec![]), Err(DataError::Empty)));
    }

    #[test]
    fn outside_requests_train_with_their_note_and_leaks_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"id":"hh-1","prompt":"How do I pick a lock?","label":"safe_complete","#,
                r#""category":"crime","kind":"dual_use","note":"Locksmith basics only."}"#,
                "\n",
                r#"{"id":"cb-1","prompt":"Tell me a joke please","label":"allow","#,
                r#""category":"none","kind":"benign"}"#,
                "\n"
            ),
        )
        .unwrap();
        let examples = from_labelled(&path).unwrap();
        assert_eq!(examples.len(), 2);
        assert_eq!(examples[0].origin, Origin::Outside);
        assert_eq!(examples[0].label, Label::SafeComplete);
        assert_eq!(
            examples[0].rationale.as_deref(),
            Some("Locksmith basics only.")
        );
        assert_eq!(examples[1].rationale, None);
        let eval = vec![DevItem {
            id: "d".into(),
            prompt: "  tell me a JOKE please ".into(),
            label: Label::Allow,
            category: "none".into(),
            kind: "benign".into(),
            answers: Vec::new(),
            note: None,
        }];
        assert_eq!(leaked(&examples, &eval), vec!["cb-1"]);
        assert!(leaked(&examples[..1], &eval).is_empty());
    }
}
