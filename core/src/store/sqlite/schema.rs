//! The SQLite schema as numbered migrations. `PRAGMA user_version` records how many have run;
//! opening a store runs the rest in one `BEGIN IMMEDIATE` transaction, so processes opening the
//! same file at once migrate it exactly once.

use rusqlite::{Connection, TransactionBehavior};

use crate::store::StoreError;

/// Migration `i` takes the schema from version `i` to `i + 1`. Append only: never edit one that
/// has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: responses kept for feedback, cases, the response -> case links, feedback.
    // `seq` columns give insertion order (an explicit INTEGER PRIMARY KEY: VACUUM keeps it).
    "CREATE TABLE responses (
        seq INTEGER PRIMARY KEY,
        response_id TEXT NOT NULL UNIQUE,
        request_id TEXT NOT NULL,
        created INTEGER NOT NULL,
        model TEXT NOT NULL,
        adapter TEXT,
        policy_version TEXT NOT NULL,
        mode TEXT NOT NULL,
        messages TEXT NOT NULL,
        request TEXT NOT NULL,
        reasoning TEXT,
        answer TEXT NOT NULL,
        verdict TEXT,
        verdict_probability REAL,
        precedents TEXT NOT NULL,
        embedding BLOB
    );
    CREATE INDEX responses_by_created ON responses (created);

    CREATE TABLE cases (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        created INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        occurrences INTEGER NOT NULL DEFAULT 1,
        response_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        request TEXT NOT NULL,
        messages TEXT NOT NULL,
        model TEXT NOT NULL,
        adapter TEXT,
        policy_version TEXT NOT NULL,
        mode TEXT NOT NULL,
        reasoning TEXT,
        answer TEXT NOT NULL,
        verdict TEXT,
        verdict_probability REAL,
        precedents TEXT NOT NULL,
        reasons TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'labelled')),
        label TEXT,
        reviewer_note TEXT,
        reviewer TEXT,
        labelled_at INTEGER,
        embedding BLOB NOT NULL
    );
    CREATE INDEX cases_by_created ON cases (created);
    CREATE INDEX cases_by_status ON cases (status, created);

    CREATE TABLE case_responses (
        response_id TEXT PRIMARY KEY NOT NULL,
        case_id TEXT NOT NULL REFERENCES cases (id) ON DELETE CASCADE
    );
    CREATE INDEX case_responses_by_case ON case_responses (case_id);

    CREATE TABLE feedback (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        case_id TEXT NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
        response_id TEXT NOT NULL,
        label TEXT NOT NULL,
        comment TEXT,
        created INTEGER NOT NULL
    );
    CREATE INDEX feedback_by_case ON feedback (case_id);",
    // 2: who asked and who judged. Feedback stored before this has no caller and never votes.
    "ALTER TABLE responses ADD COLUMN caller TEXT;
    ALTER TABLE case_responses ADD COLUMN caller TEXT;
    ALTER TABLE feedback ADD COLUMN caller TEXT;
    ALTER TABLE feedback ADD COLUMN from_requester INTEGER NOT NULL DEFAULT 0;",
];

/// Schema version this build writes.
pub(in crate::store) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the schema up to [`VERSION`]; a file from a newer build is refused, not touched.
pub(in crate::store) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: VERSION,
        });
    }
    let done = usize::try_from(found)
        .map_err(|_| StoreError::corrupt(format!("the schema version is negative ({found})")))?;
    if done == MIGRATIONS.len() {
        return Ok(());
    }
    for sql in &MIGRATIONS[done..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn migrations_run_once_and_refuse_newer_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), VERSION);
        // Idempotent: a second run finds nothing to do (re-creating a table would fail).
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), VERSION);
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert_eq!(err.code(), "store_schema_too_new");
        assert_eq!(version(&conn), VERSION + 1);
    }
}
