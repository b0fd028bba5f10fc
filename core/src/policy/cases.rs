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

/// `kind` of evaluation prompts put inside a wrapper (role-play, "ignore your rules", a story):
/// the evaluation reports how many benign ones are still answered, so a verdict that refuses the
/// wrapper instead of the request shows.
pub const WRAPPED_KIND: &str = "wrapped";

/// One held-out evaluation prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevItem {
    pub id: String,
    pub prompt: String,
    pub label: Label,
    pub category: String,
    pub kind: String,
    /// Utility items (`configs/policy/utility.jsonl`): accepted answers, any of which makes an
    /// answer correct (see [`DevItem::accepts`]); empty for safety items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<String>,
    /// The labeller's reason, where the set records one (`configs/policy/outside/`): what a
    /// reviewer checks the label against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl DevItem {
    /// Whether `answer` contains one of the accepted answers, case-insensitively and as a whole
    /// word (`"8"` is not found in `"18"`); a trailing `*` accepts any ending (`"boil*"` finds
    /// "boiling"). `None` for items without accepted answers.
    pub fn accepts(&self, answer: &str) -> Option<bool> {
        if self.answers.is_empty() {
            return None;
        }
        let text = answer.to_lowercase();
        Some(
            self.answers
                .iter()
                .any(|a| contains_word(&text, &a.to_lowercase())),
        )
    }
}

/// `needle` in `text` at word boundaries (the end boundary dropped by a trailing `*`).
fn contains_word(text: &str, needle: &str) -> bool {
    let (needle, prefix) = match needle.strip_suffix('*') {
        Some(stem) => (stem, true),
        None => (needle, false),
    };
    if needle.is_empty() {
        return false;
    }
    let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    text.match_indices(needle).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + needle.len()..].chars().next();
        // A boundary is only needed where the needle itself starts or ends with a word char.
        let starts_word = needle.chars().next().is_some_and(char::is_alphanumeric);
        let ends_word = needle
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric);
        !(starts_word && word(before)) && (prefix || !(ends_word && word(after)))
    })
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

/// Writes `items` as JSONL, one object a line (what [`read_jsonl`] reads back).
pub fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> std::io::Result<()> {
    let mut out = String::new();
    for item in items {
        out.push_str(&serde_json::to_string(item).map_err(std::io::Error::other)?);
        out.push('\n');
    }
    std::fs::write(path, out)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn item(answers: &[&str]) -> DevItem {
        DevItem {
            id: "u".into(),
            prompt: "p".into(),
            label: Label::Allow,
            category: "utility".into(),
            kind: "fact".into(),
            answers: answers.iter().map(|a| (*a).to_owned()).collect(),
            note: None,
        }
    }

    #[test]
    fn accepted_answers_match_whole_words() {
        let i = item(&["8", "eight"]);
        assert_eq!(i.accepts("It has 8 legs."), Some(true));
        assert_eq!(i.accepts("EIGHT legs"), Some(true));
        assert_eq!(i.accepts("It has 18 legs."), Some(false));
        assert_eq!(i.accepts("Weighty question."), Some(false));
        assert_eq!(
            item(&["paris"]).accepts("I can help with that."),
            Some(false)
        );
        assert_eq!(item(&[]).accepts("anything"), None);
    }

    #[test]
    fn a_star_accepts_any_ending() {
        let i = item(&["boil*", "[::-1]"]);
        assert_eq!(i.accepts("Keep it boiling for 9 minutes"), Some(true));
        assert_eq!(i.accepts("Reboil it"), Some(false));
        assert_eq!(item(&["[::-1]"]).accepts("use xs[::-1]"), Some(true));
        assert_eq!(item(&["*"]).accepts("anything"), Some(false));
    }

    #[test]
    fn safety_items_parse_without_answers() {
        let line = r#"{"id":"d","prompt":"p","label":"refuse","category":"c","kind":"k"}"#;
        let d: DevItem = serde_json::from_str(line).unwrap();
        assert!(d.answers.is_empty());
        assert!(!serde_json::to_string(&d).unwrap().contains("answers"));
    }
}
