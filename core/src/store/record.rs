//! What the store keeps: response records (for feedback), new cases as the gateway logs them,
//! stored cases as review sees them, and the filters and counts around them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::FeedbackEntry;
use crate::policy::Label;

/// Most cases one `list_cases` call returns, whatever the filter asks.
pub const MAX_LIST_LIMIT: usize = 500;

/// A precedent the deliberation was shown, with its similarity to the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrecedentRef {
    /// Case id in the policy's case library.
    pub id: String,
    /// The precedent's verdict, kept so review does not need the policy version at hand.
    pub label: Label,
    /// Cosine similarity of the precedent to the request.
    pub similarity: f32,
}

/// One answered request, kept for a while so the user can send feedback on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseRecord {
    /// The OpenAI response id (`chatcmpl-...`) the client received; feedback names it.
    pub response_id: String,
    /// The gateway's request id (logs, traces).
    pub request_id: String,
    /// When the response was made, unix seconds.
    pub created: i64,
    /// Model name as the client asked for it.
    pub model: String,
    /// LoRA adapter in use, if any (trained mode).
    pub adapter: Option<String>,
    /// Policy version (content hash) the verdict was made under.
    pub policy_version: String,
    /// Gateway safety mode: `off`, `cases`, `trained` or `adaptive`.
    pub mode: String,
    /// The request's messages as sent, already redacted.
    pub messages: serde_json::Value,
    /// The last user message, already redacted.
    pub request: String,
    /// The model's deliberation, when the mode produces one.
    pub reasoning: Option<String>,
    /// The answer the user saw.
    pub answer: String,
    /// The verdict, when one was read.
    pub verdict: Option<Label>,
    /// Probability the model gave its verdict.
    pub verdict_probability: Option<f32>,
    /// Precedents shown to the model, nearest first.
    pub precedents: Vec<PrecedentRef>,
    /// Normalised request embedding, so a case made from feedback can merge with later ones.
    pub embedding: Option<Vec<f32>>,
    /// Name of the key that made the request (`None`: anonymous). Its own feedback on this
    /// response is evidence for review, never a vote.
    #[serde(default)]
    pub caller: Option<String>,
}

/// A borderline exchange the gateway logs for review. Fields without a note mean what they mean
/// in [`ResponseRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewCase {
    /// Response the case was logged from; later feedback on it lands on this case.
    pub response_id: String,
    pub request_id: String,
    /// When the exchange happened, unix seconds.
    pub created: i64,
    pub model: String,
    pub adapter: Option<String>,
    pub policy_version: String,
    pub mode: String,
    /// Already redacted.
    pub messages: serde_json::Value,
    /// Already redacted.
    pub request: String,
    pub reasoning: Option<String>,
    pub answer: String,
    pub verdict: Option<Label>,
    pub verdict_probability: Option<f32>,
    pub precedents: Vec<PrecedentRef>,
    /// Why it was logged: `low_confidence`, `possible_over_refusal`, `possible_harmful`,
    /// `verdict_answer_mismatch`, `feedback`, ...
    pub reasons: Vec<String>,
    /// Normalised request embedding; near-duplicates are merged by cosine similarity.
    pub embedding: Vec<f32>,
    /// Name of the key that made the request, kept with the response's link to the case.
    #[serde(default)]
    pub caller: Option<String>,
}

impl NewCase {
    /// A case with the content of a response record (an empty embedding when it has none,
    /// which never merges).
    pub fn from_record(record: ResponseRecord, reasons: Vec<String>) -> Self {
        Self {
            response_id: record.response_id,
            request_id: record.request_id,
            created: record.created,
            model: record.model,
            adapter: record.adapter,
            policy_version: record.policy_version,
            mode: record.mode,
            messages: record.messages,
            request: record.request,
            reasoning: record.reasoning,
            answer: record.answer,
            verdict: record.verdict,
            verdict_probability: record.verdict_probability,
            precedents: record.precedents,
            reasons,
            embedding: record.embedding.unwrap_or_default(),
            caller: record.caller,
        }
    }
}

/// What `log_case` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Logged {
    /// A new pending case.
    Inserted { id: String },
    /// Merged into a pending near-duplicate, which has now been seen `occurrences` times.
    Merged { id: String, occurrences: u32 },
}

impl Logged {
    pub fn id(&self) -> &str {
        match self {
            Self::Inserted { id } | Self::Merged { id, .. } => id,
        }
    }
}

/// Where a case is in review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// Waiting for a reviewer; near-duplicates merge into it.
    Pending,
    /// A reviewer decided its label; it goes to training as is.
    Labelled,
}

impl CaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Labelled => "labelled",
        }
    }
}

impl fmt::Display for CaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CaseStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "labelled" => Ok(Self::Labelled),
            _ => Err(format!(
                "unknown case status `{s}` (expected pending or labelled)"
            )),
        }
    }
}

/// A case as review sees it. Fields without a note are those of its first occurrence, as in
/// [`ResponseRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCase {
    /// `case_` followed by a time-ordered unique suffix.
    pub id: String,
    /// First occurrence, unix seconds.
    pub created: i64,
    /// Latest occurrence (merges move it), unix seconds.
    pub last_seen: i64,
    /// How many logged exchanges this case stands for (1 plus merges).
    pub occurrences: u32,
    /// Response of the first occurrence.
    pub response_id: String,
    pub request_id: String,
    pub request: String,
    pub messages: serde_json::Value,
    pub model: String,
    pub adapter: Option<String>,
    pub policy_version: String,
    pub mode: String,
    pub reasoning: Option<String>,
    pub answer: String,
    pub verdict: Option<Label>,
    pub verdict_probability: Option<f32>,
    pub precedents: Vec<PrecedentRef>,
    /// Why it was logged, the union over all merged occurrences in first-seen order.
    pub reasons: Vec<String>,
    pub status: CaseStatus,
    /// The reviewer's label once labelled.
    pub label: Option<Label>,
    pub reviewer_note: Option<String>,
    pub reviewer: Option<String>,
    /// When it was labelled, unix seconds.
    pub labelled_at: Option<i64>,
    /// User feedback on any of its responses, oldest first.
    pub feedback: Vec<FeedbackEntry>,
}

/// Which cases `list_cases` returns; newest first (by `created`, then latest logged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaseFilter {
    pub status: Option<CaseStatus>,
    /// Only cases created at or after this time, unix seconds.
    pub since: Option<i64>,
    /// Only cases created before this time, unix seconds.
    pub until: Option<i64>,
    /// Page size, capped at [`MAX_LIST_LIMIT`].
    pub limit: usize,
    /// Keyset paging: only cases listed after this one (pass the last id of the previous page).
    pub before_id: Option<String>,
    /// Offset paging: skip this many matching cases.
    pub offset: usize,
}

impl Default for CaseFilter {
    fn default() -> Self {
        Self {
            status: None,
            since: None,
            until: None,
            limit: 50,
            before_id: None,
            offset: 0,
        }
    }
}

/// How much the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StoreCounts {
    pub pending: u64,
    pub labelled: u64,
    /// Response records currently kept for feedback.
    pub responses: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_outcome_speak_snake_case() {
        for s in [CaseStatus::Pending, CaseStatus::Labelled] {
            assert_eq!(s.as_str().parse::<CaseStatus>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!("done"
            .parse::<CaseStatus>()
            .unwrap_err()
            .contains("pending"));
        let merged = Logged::Merged {
            id: "case_1".into(),
            occurrences: 2,
        };
        assert_eq!(merged.id(), "case_1");
        assert_eq!(
            serde_json::to_value(&merged).unwrap(),
            serde_json::json!({"outcome": "merged", "id": "case_1", "occurrences": 2})
        );
    }
}
