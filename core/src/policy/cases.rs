//! Precedent cases and dev-set prompts: the JSONL files in `configs/policy/`, parsed and checked
//! line by line so a bad file names its line.

use std::collections::HashSet;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Label, PolicyError};

/// One precedent: a request, what a good assistant did with it, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub id: String,
    pub request: String,
    pub label: Label,
    /// Harm domain the request touches (`violence`, `privacy`, ...).
    pub category: String,
    /// The pattern it illustrates (`homonym`, `jailbreak`, `dual_use`, ...).
    pub kind: String,
    /// Two to four sentences of the reasoning a good assistant gives.
    pub rationale: String,
    /// Exemplar answer.
    pub answer: String,
}

/// One held-out evaluation prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevItem {
    pub id: String,
    pub prompt: String,
    pub label: Label,
    pub category: String,
    pub kind: String,
}

/// Parses a JSONL file: blank lines are skipped, any other bad line is an error naming it.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let item = serde_json::from_str(line).map_err(|e| PolicyError::Invalid {
            path: path.display().to_string(),
            line: i + 1,
            message: e.to_string(),
        })?;
        items.push(item);
    }
    Ok(items)
}

/// Ids unique and every text field non-empty.
pub(super) fn check_cases(path: &Path, cases: &[Case]) -> Result<(), PolicyError> {
    let mut ids = HashSet::new();
    for (i, c) in cases.iter().enumerate() {
        let bad = |message: String| PolicyError::Invalid {
            path: path.display().to_string(),
            line: i + 1,
            message,
        };
        if !ids.insert(c.id.as_str()) {
            return Err(bad(format!("duplicate case id `{}`", c.id)));
        }
        for (name, value) in [
            ("id", &c.id),
            ("request", &c.request),
            ("category", &c.category),
            ("kind", &c.kind),
            ("rationale", &c.rationale),
            ("answer", &c.answer),
        ] {
            if value.trim().is_empty() {
                return Err(bad(format!("case `{}` has an empty `{name}`", c.id)));
            }
        }
    }
    Ok(())
}
