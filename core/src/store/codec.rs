//! Values both backends store the same way: JSON columns, labels as text, ids and clock, and the
//! checks and merges every backend applies before it writes.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{agreed_label, FeedbackEntry, PrecedentRef, StoreError, TrainingCase, TrainingSource};
use crate::policy::Label;

pub(super) type Result<T> = std::result::Result<T, StoreError>;

/// `prefix_` + 12 hex digits of milliseconds since the epoch + 16 random hex digits: unique, and
/// sorted by creation time to the millisecond.
pub(super) fn new_id(prefix: &str) -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{millis:012x}{}", &random[..16])
}

/// Unix seconds now.
pub(in crate::store) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub(super) fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Whether feedback from `sender` judges a response `requester` asked for: the same named key.
/// Anonymous feedback is never the requester's (it never votes anyway).
pub(super) fn from_requester(sender: Option<&str>, requester: Option<&str>) -> bool {
    sender.is_some() && sender == requester
}

/// A NaN similarity would be stored as JSON `null` and make the row unreadable.
pub(super) fn check_precedents(precedents: &[PrecedentRef]) -> Result<()> {
    match precedents.iter().find(|p| !p.similarity.is_finite()) {
        Some(p) => Err(StoreError::Invalid(format!(
            "precedent {} has a non-finite similarity",
            p.id
        ))),
        None => Ok(()),
    }
}

/// Appends the reasons not there yet, keeping first-seen order.
pub(super) fn union_into(reasons: &mut Vec<String>, new: &[String]) {
    for r in new {
        if !reasons.contains(r) {
            reasons.push(r.clone());
        }
    }
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Strings, labels and floats (finite: see `check_precedents`): serialising cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// A JSON column back; a value that does not decode is `corrupt`, named by record id and column,
/// never quoted (stored values are user text).
pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    column: &str,
    id: &str,
) -> Result<T> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::corrupt(format!(
            "`{column}` of {id} is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

pub(super) fn parse_label(s: Option<&str>, id: &str) -> Result<Option<Label>> {
    s.map(|s| {
        s.parse::<Label>()
            .map_err(|_| StoreError::corrupt(format!("record {id} has an unknown label")))
    })
    .transpose()
}

/// Columns of `cases` that [`ExportRow`] holds, in its order, for a labelled case.
pub(super) const EXPORT_COLUMNS: &str =
    "id, request, messages, label, reviewer_note, policy_version, created";

/// [`EXPORT_COLUMNS`] for a pending case: its served `verdict` stands for the label, and it has
/// no note (`CAST`, not `::text`, so both backends read it).
pub(super) const PENDING_EXPORT_COLUMNS: &str =
    "id, request, messages, verdict, CAST(NULL AS TEXT), policy_version, created";

/// A case row as `export` reads it from either backend, before decoding.
pub(super) struct ExportRow {
    pub id: String,
    pub request: String,
    /// JSON text.
    pub messages: String,
    /// The reviewer's label of a labelled case; the served verdict of a pending one.
    pub label: Option<String>,
    pub note: Option<String>,
    pub policy_version: String,
    pub created: i64,
}

impl ExportRow {
    /// A reviewed case: its label must be there.
    pub(super) fn reviewed(self) -> Result<TrainingCase> {
        let label = parse_label(self.label.as_deref(), &self.id)?.ok_or_else(|| {
            StoreError::corrupt(format!("labelled case {} has no label", self.id))
        })?;
        self.into_case(label, TrainingSource::Review)
    }

    /// A pending case, trained on only when independent keys' feedback settles a label
    /// ([`agreed_label`] with the served verdict and `quorum`).
    pub(super) fn with_feedback(
        self,
        feedback: &[FeedbackEntry],
        quorum: u32,
    ) -> Result<Option<TrainingCase>> {
        let verdict = parse_label(self.label.as_deref(), &self.id)?;
        match agreed_label(feedback, verdict, quorum) {
            Some(label) => self.into_case(label, TrainingSource::Feedback).map(Some),
            None => Ok(None),
        }
    }

    fn into_case(self, label: Label, source: TrainingSource) -> Result<TrainingCase> {
        Ok(TrainingCase {
            messages: from_json(&self.messages, "messages", &self.id)?,
            request: self.request,
            label,
            source,
            note: self.note,
            policy_version: self.policy_version,
            created: self.created,
            id: self.id,
        })
    }
}
