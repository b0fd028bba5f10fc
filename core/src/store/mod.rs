//! The case store: borderline exchanges the gateway logs as cases for safety teams to review and
//! the trainer to retrain on, plus recent response records so users can send feedback on an
//! answer. The types here are plain and backend-neutral; [`CaseStore`] opens the embedded SQLite
//! backend (the default) or a PostgreSQL database shared by a fleet, and [`StoreHandle`] runs it
//! on its own thread for async callers.

mod backend;
mod codec;
#[cfg(test)]
mod conformance;
mod embedding;
mod error;
mod export;
mod feedback;
mod handle;
mod location;
mod pg;
mod record;
pub mod redact;
mod sqlite;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use backend::CaseStore;
pub use error::StoreError;
pub use export::{export_jsonl, read_training_jsonl, ExportFilter, TrainingCase, TrainingSource};
pub use feedback::{
    agreed_label, FeedbackEntry, FeedbackLabel, FeedbackOutcome, NewFeedback,
    DEFAULT_FEEDBACK_QUORUM,
};
pub use handle::{StoreHandle, StoreStats, DEFAULT_CALL_TIMEOUT, DEFAULT_QUEUE_CAPACITY};
pub use location::StoreLocation;
pub use pg::PgStore;
pub use record::{
    CaseFilter, CaseStatus, Logged, NewCase, PrecedentRef, ResponseRecord, StoreCounts, StoredCase,
    MAX_LIST_LIMIT,
};
pub use redact::{RedactionConfig, Redactor};
pub use sqlite::SqliteStore;

/// How a store merges cases, how many pending cases it holds and for how long, and how long it
/// keeps response records.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Cosine similarity at or above which a new case merges into a pending one instead of
    /// adding a row: reviewers see one case with an occurrence count, not a flood of
    /// near-identical requests. Above 1 nothing merges.
    pub merge_threshold: f32,
    /// Most response records kept (newest win); feedback on older responses is `not_found`.
    pub response_retention: usize,
    /// Age in seconds beyond which response records are dropped, however few there are.
    pub response_max_age_secs: u64,
    /// Most pending cases held. A new case beyond it is refused with [`StoreError::Full`]
    /// (merges into pending cases still count): the review queue, and the near-duplicate scan
    /// every logged case runs over it, stay bounded whatever the traffic.
    pub pending_max: usize,
    /// Age in seconds (since last seen) beyond which a pending case nobody gave feedback on is
    /// dropped. Pending cases with feedback stay until reviewed: feedback is never lost.
    pub pending_max_age_secs: u64,
    /// How long a writer waits for another connection's lock before failing with `busy`
    /// (SQLite's busy timeout; PostgreSQL's `lock_timeout`).
    pub busy_timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            merge_threshold: 0.92,
            response_retention: 10_000,
            response_max_age_secs: 7 * 24 * 3600,
            pending_max: 50_000,
            pending_max_age_secs: 90 * 24 * 3600,
            busy_timeout_ms: 5_000,
        }
    }
}
