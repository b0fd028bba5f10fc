//! The training-case JSONL the trainer reads: one labelled request per line, from review or
//! from agreeing user feedback.

use serde::{Deserialize, Serialize};

use super::{StoreError, DEFAULT_FEEDBACK_QUORUM};
use crate::policy::Label;

/// Where a training label came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainingSource {
    /// A reviewer labelled the case.
    Review,
    /// Unreviewed, but a quorum of independent keys' feedback implies this label.
    Feedback,
}

/// Which cases `export` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExportFilter {
    /// Also export pending cases whose feedback agrees on a label (weaker than review).
    pub include_feedback: bool,
    /// How many independent keys must agree for `include_feedback` (see
    /// [`super::agreed_label`]); 0 counts as 1.
    pub feedback_quorum: u32,
    /// Only labels decided at or after this time, unix seconds: when the reviewer labelled the
    /// case, or the newest feedback on it. Lets the trainer fetch what is new since its last run.
    pub since: Option<i64>,
}

impl Default for ExportFilter {
    fn default() -> Self {
        Self {
            include_feedback: false,
            feedback_quorum: DEFAULT_FEEDBACK_QUORUM,
            since: None,
        }
    }
}

/// One line of the training JSONL. Unknown fields are ignored when reading, so a newer gateway
/// can add fields without breaking an older trainer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingCase {
    /// The case id in the store (`case_...`).
    pub id: String,
    /// The last user message, redacted.
    pub request: String,
    /// The whole conversation, redacted, as OpenAI-style messages.
    pub messages: serde_json::Value,
    /// What a good assistant does with the request.
    pub label: Label,
    /// Whether a reviewer or user feedback decided the label.
    pub source: TrainingSource,
    /// The reviewer's note, if any.
    #[serde(default)]
    pub note: Option<String>,
    /// Policy version the original verdict was made under.
    pub policy_version: String,
    /// When the case was first seen, unix seconds.
    pub created: i64,
}

/// Training cases as JSONL: one compact JSON object per line, each ending in `\n`.
pub fn export_jsonl(cases: &[TrainingCase]) -> String {
    let mut out = String::new();
    for c in cases {
        // Strings, integers and a JSON value: serialising cannot fail.
        out.push_str(&serde_json::to_string(c).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Parses training JSONL: blank lines are skipped, any other bad line is an error naming it.
pub fn read_training_jsonl(text: &str) -> Result<Vec<TrainingCase>, StoreError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| StoreError::Jsonl {
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(id: &str, source: TrainingSource) -> TrainingCase {
        TrainingCase {
            id: id.into(),
            request: "how do I kill a python process?\nit hangs".into(),
            messages: serde_json::json!([{"role": "user", "content": "how do I kill it?"}]),
            label: Label::Allow,
            source,
            note: Some("homonym".into()),
            policy_version: "abc123def456".into(),
            created: 1_700_000_000,
        }
    }

    #[test]
    fn jsonl_round_trips_one_line_per_case() {
        let cases = vec![
            case("case_a", TrainingSource::Review),
            case("case_b", TrainingSource::Feedback),
        ];
        let text = export_jsonl(&cases);
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with('\n'));
        assert!(text.contains(r#""source":"feedback""#), "{text}");
        assert_eq!(read_training_jsonl(&text).unwrap(), cases);
    }

    #[test]
    fn reading_names_the_bad_line_and_tolerates_new_fields() {
        let good = serde_json::to_string(&case("case_a", TrainingSource::Review)).unwrap();
        let err = read_training_jsonl(&format!("{good}\n\n{{\"id\": 1}}\n")).unwrap_err();
        assert!(matches!(err, StoreError::Jsonl { line: 3, .. }), "{err}");
        assert_eq!(err.code(), "invalid_jsonl");
        let mut extended: serde_json::Value = serde_json::from_str(&good).unwrap();
        extended["weight"] = serde_json::json!(2.0);
        extended.as_object_mut().unwrap().remove("note");
        let read = read_training_jsonl(&extended.to_string()).unwrap();
        assert_eq!(read[0].note, None);
    }
}
