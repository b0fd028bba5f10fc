//! Typed store errors, each with a stable code the gateway reuses in error bodies and metrics,
//! whichever backend produced it. No message ever carries request or answer text.

use rusqlite::ErrorCode;

/// Everything a store operation can fail with.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("cannot prepare the store at {path}: {message}")]
    Io { path: String, message: String },
    #[error("the store is busy (another writer held the lock too long); retry later")]
    Busy,
    #[error("store database error: {0}")]
    Database(String),
    #[error("the store schema is version {found} but this build knows only up to {supported}; upgrade cada")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("no {what} with id `{id}`")]
    NotFound { what: &'static str, id: String },
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("invalid redaction pattern `{pattern}`: {message}")]
    InvalidPattern { pattern: String, message: String },
    #[error("training cases line {line}: {message}")]
    Jsonl { line: usize, message: String },
    #[error("the store queue is full ({capacity} requests waiting)")]
    Overloaded { capacity: usize },
    #[error("the review queue is full ({pending_max} pending cases): review or raise store.cases.pending_max")]
    Full { pending_max: usize },
    #[error("the store has shut down")]
    ShutDown,
    #[error("the store did not answer within {secs} s; the request may still be applied")]
    Timeout { secs: u64 },
}

impl StoreError {
    /// Stable machine-readable code (error bodies, metric labels).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { .. } => "store_io_error",
            Self::Busy => "store_busy",
            Self::Full { .. } => "store_full",
            Self::Timeout { .. } => "store_timeout",
            Self::Database(_) => "store_database_error",
            Self::SchemaTooNew { .. } => "store_schema_too_new",
            Self::Corrupt(_) => "store_corrupt",
            Self::NotFound { .. } => "not_found",
            Self::Invalid(_) => "invalid_input",
            Self::InvalidPattern { .. } => "invalid_redaction_pattern",
            Self::Jsonl { .. } => "invalid_jsonl",
            Self::Overloaded { .. } => "store_overloaded",
            Self::ShutDown => "store_shut_down",
        }
    }

    /// A stored value that does not decode; serde's detail is left out because it can quote the
    /// value, and stored values are user text.
    pub(crate) fn corrupt(what: impl std::fmt::Display) -> Self {
        Self::Corrupt(what.to_string())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Self::Busy,
            _ => Self::Database(e.to_string()),
        }
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        match e.as_db_error() {
            // Waited `busy_timeout_ms` for a lock, or lost a serialization race: retryable.
            Some(db)
                if [
                    SqlState::LOCK_NOT_AVAILABLE,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                ]
                .contains(db.code()) =>
            {
                Self::Busy
            }
            // The message only: DETAIL can quote stored values, which are user text.
            Some(db) => Self::Database(format!("{} (SQLSTATE {})", db.message(), db.code().code())),
            None if e.is_closed() => {
                Self::Database("the connection to PostgreSQL was closed".into())
            }
            None => Self::Database(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_busy_is_recognised() {
        let e = StoreError::NotFound {
            what: "response",
            id: "chatcmpl-x".into(),
        };
        assert_eq!(e.code(), "not_found");
        assert_eq!(e.to_string(), "no response with id `chatcmpl-x`");
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert_eq!(StoreError::from(busy), StoreError::Busy);
        let other = StoreError::from(rusqlite::Error::QueryReturnedNoRows);
        assert_eq!(other.code(), "store_database_error");
    }
}
