//! The PostgreSQL backend, for fleets: every gateway replica and the trainer open the same
//! database. Each write is one transaction. Logging a case takes a transaction-scoped advisory
//! lock, so the near-duplicate search over the database's pending cases (`nearest.rs`) and the
//! insert or merge that follows are atomic across replicas: two replicas never insert the same
//! case twice.
//! The connection comes back by itself after the server restarts (on the next call).

use std::time::Duration;

use postgres::{Client, Config, NoTls};

use super::codec::Result;
use super::{
    CaseFilter, ExportFilter, FeedbackOutcome, Logged, NewCase, NewFeedback, ResponseRecord,
    StoreConfig, StoreCounts, StoreError, StoredCase, TrainingCase,
};
use crate::policy::Label;

mod nearest;
mod ops;
mod rows;
pub(in crate::store) mod schema;
#[cfg(test)]
mod silent_server;
#[cfg(test)]
mod tests;

/// Advisory lock keys ("cada" in ASCII, then a number): migrations, and case logging.
const LOCK_MIGRATE: i64 = 0x6361_6461_0001;
const LOCK_CASES: i64 = 0x6361_6461_0002;

/// A connection to a PostgreSQL case store. Like the SQLite backend it is not `Sync`: one per
/// thread, or shared through [`super::StoreHandle`]. Its calls block (the client runs its own
/// small runtime), so never call them on an async runtime's worker threads.
pub struct PgStore {
    client: Client,
    pg: Config,
    config: StoreConfig,
    /// The URL with its password hidden, for messages.
    shown: String,
    /// A call failed and the connection did not answer afterwards: reconnect before the next.
    broken: bool,
    /// Embeddings of pending cases, for the near-duplicate search (`nearest.rs`).
    nearest: nearest::EmbeddingCache,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.shown)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects and migrates. `shown` is the URL with its password hidden, used in errors.
    pub fn open(url: &str, shown: &str, config: StoreConfig) -> Result<Self> {
        if !config.merge_threshold.is_finite() {
            return Err(StoreError::Invalid(
                "merge_threshold must be a finite number".into(),
            ));
        }
        // The parser's message can quote the URL, password included: not passed on.
        let mut pg: Config = url.parse().map_err(|_| {
            StoreError::Invalid(format!(
                "`{shown}` is not a valid PostgreSQL connection URL"
            ))
        })?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(10));
        }
        if pg.get_application_name().is_none() {
            pg.application_name("cada");
        }
        // A server that vanishes without closing the connection (host down, network cut)
        // would leave the store thread blocked on a read for good: keepalives and a TCP user
        // timeout turn that into an error, then a reconnect, within about a minute.
        if pg.get_tcp_user_timeout().is_none() {
            pg.tcp_user_timeout(Duration::from_secs(30));
        }
        pg.keepalives(true);
        if pg.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            pg.keepalives_idle(Duration::from_secs(30));
        }
        let client = connect(&pg, &config, shown)?;
        let mut store = Self {
            client,
            pg,
            config,
            shown: shown.to_owned(),
            broken: false,
            nearest: nearest::EmbeddingCache::default(),
        };
        schema::migrate(&mut store.client)?;
        Ok(store)
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Keeps a response for feedback (replacing one with the same id), then drops records
    /// beyond the retention count and age.
    pub fn record_response(&mut self, r: &ResponseRecord) -> Result<()> {
        let result = self.record_response_once(r);
        self.after(result.is_err());
        result
    }

    /// Logs a case, merging it into the most similar pending case when the cosine similarity
    /// of their embeddings reaches `merge_threshold`.
    pub fn log_case(&mut self, case: NewCase) -> Result<Logged> {
        let result = self.log_case_once(case);
        self.after(result.is_err());
        result
    }

    /// Attaches feedback to the case logged from the response, or makes a case from the kept
    /// response record. Committed before it returns.
    pub fn feedback(&mut self, feedback: NewFeedback) -> Result<FeedbackOutcome> {
        let result = self.feedback_once(feedback);
        self.after(result.is_err());
        result
    }

    /// Cases matching the filter, newest first.
    pub fn list_cases(&mut self, filter: &CaseFilter) -> Result<Vec<StoredCase>> {
        let result = self.list_cases_once(filter);
        self.after(result.is_err());
        result
    }

    pub fn get_case(&mut self, id: &str) -> Result<StoredCase> {
        let result = self.get_case_once(id);
        self.after(result.is_err());
        result
    }

    /// A kept response record, if it has not been dropped yet.
    pub fn response(&mut self, response_id: &str) -> Result<Option<ResponseRecord>> {
        let result = self.response_once(response_id);
        self.after(result.is_err());
        result
    }

    /// Records a reviewer's label; the case leaves the pending set (nothing merges into it).
    pub fn label_case(
        &mut self,
        id: &str,
        label: Label,
        note: Option<String>,
        reviewer: Option<String>,
    ) -> Result<StoredCase> {
        let result = self.label_case_once(id, label, note, reviewer);
        self.after(result.is_err());
        result
    }

    /// Training cases, oldest first: labelled cases, then (if asked) pending cases whose
    /// feedback agrees on a label.
    pub fn export(&mut self, filter: &ExportFilter) -> Result<Vec<TrainingCase>> {
        let result = self.export_once(filter);
        self.after(result.is_err());
        result
    }

    pub fn counts(&mut self) -> Result<StoreCounts> {
        let result = self.counts_once();
        self.after(result.is_err());
        result
    }

    /// After a failed call: whether the connection is still usable (checked with a round trip,
    /// only on failures). If not, the next call reconnects.
    fn after(&mut self, failed: bool) {
        if failed && !self.broken {
            self.broken =
                self.client.is_closed() || self.client.is_valid(Duration::from_secs(2)).is_err();
        }
    }

    /// The client, reconnected first if the connection broke (a server restart or failover):
    /// the call that saw the failure has already returned its error.
    pub(super) fn client(&mut self) -> Result<&mut Client> {
        if self.broken || self.client.is_closed() {
            tracing::warn!(store = %self.shown, "reconnecting to the case store");
            self.client = connect(&self.pg, &self.config, &self.shown)?;
            self.broken = false;
        }
        Ok(&mut self.client)
    }
}

/// Connects and sets the session up: lock waits end after `busy_timeout_ms` (as `busy`).
fn connect(pg: &Config, config: &StoreConfig, shown: &str) -> Result<Client> {
    let mut client = pg.connect(NoTls).map_err(|e| StoreError::Io {
        path: shown.to_owned(),
        message: e.to_string(),
    })?;
    // 0 would mean "wait for ever" to PostgreSQL; to SQLite it means "do not wait".
    let lock_timeout = config.busy_timeout_ms.clamp(1, i32::MAX as u64);
    client.batch_execute(&format!("SET lock_timeout = {lock_timeout}"))?;
    Ok(client)
}
