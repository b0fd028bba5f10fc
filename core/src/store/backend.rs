//! The case store whichever backend holds it: [`CaseStore`] opens an SQLite file or a PostgreSQL
//! database from a [`StoreLocation`] and offers the same calls on both, so the gateway, the
//! admin API and the trainer never know which one they talk to.

use super::pg::PgStore;
use super::sqlite::SqliteStore;
use super::{
    CaseFilter, ExportFilter, FeedbackOutcome, Logged, NewCase, NewFeedback, ResponseRecord,
    StoreConfig, StoreCounts, StoreError, StoreLocation, StoredCase, TrainingCase,
};
use crate::policy::Label;

type Result<T> = std::result::Result<T, StoreError>;

/// An open case store. Not `Sync`: one per thread, or shared through [`super::StoreHandle`].
/// Calls block; on an async runtime use the handle, whose thread owns the store.
#[derive(Debug)]
pub enum CaseStore {
    Sqlite(SqliteStore),
    Postgres(Box<PgStore>),
}

/// Forwards a call to whichever backend is open.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            CaseStore::Sqlite($s) => $call,
            CaseStore::Postgres($s) => $call,
        }
    };
}

impl CaseStore {
    /// Opens (creating and migrating as needed) the store at `location`: a path (SQLite) or a
    /// [`StoreLocation`].
    pub fn open(location: impl Into<StoreLocation>, config: StoreConfig) -> Result<Self> {
        let location = location.into();
        // What errors and logs name: the URL with its password hidden.
        let shown = location.to_string();
        match location {
            StoreLocation::Sqlite(path) => SqliteStore::open(path, config).map(Self::Sqlite),
            StoreLocation::Postgres(url) => {
                PgStore::open(&url, &shown, config).map(|s| Self::Postgres(Box::new(s)))
            }
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    pub fn config(&self) -> &StoreConfig {
        each!(self, s => s.config())
    }

    /// Keeps a response for feedback (replacing one with the same id) and drops records beyond
    /// the retention count and age.
    pub fn record_response(&mut self, r: &ResponseRecord) -> Result<()> {
        each!(self, s => s.record_response(r))
    }

    /// Logs a case, merging it into the most similar pending case when their cosine similarity
    /// reaches `merge_threshold`; atomic against every other writer of the same store.
    pub fn log_case(&mut self, case: NewCase) -> Result<Logged> {
        each!(self, s => s.log_case(case))
    }

    /// Attaches feedback to the case logged from the response, or makes a case from the kept
    /// response record. Durable before it returns.
    pub fn feedback(&mut self, feedback: NewFeedback) -> Result<FeedbackOutcome> {
        each!(self, s => s.feedback(feedback))
    }

    /// Cases matching the filter, newest first.
    pub fn list_cases(&mut self, filter: &CaseFilter) -> Result<Vec<StoredCase>> {
        each!(self, s => s.list_cases(filter))
    }

    pub fn get_case(&mut self, id: &str) -> Result<StoredCase> {
        each!(self, s => s.get_case(id))
    }

    /// A kept response record, if it has not been dropped yet.
    pub fn response(&mut self, response_id: &str) -> Result<Option<ResponseRecord>> {
        each!(self, s => s.response(response_id))
    }

    /// Records a reviewer's label; the case leaves the pending set.
    pub fn label_case(
        &mut self,
        id: &str,
        label: Label,
        note: Option<String>,
        reviewer: Option<String>,
    ) -> Result<StoredCase> {
        each!(self, s => s.label_case(id, label, note, reviewer))
    }

    /// Training cases, oldest first: labelled cases, then (if asked) pending cases whose
    /// feedback agrees on a label.
    pub fn export(&mut self, filter: &ExportFilter) -> Result<Vec<TrainingCase>> {
        each!(self, s => s.export(filter))
    }

    pub fn counts(&mut self) -> Result<StoreCounts> {
        each!(self, s => s.counts())
    }
}
