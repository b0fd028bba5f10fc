//! The PostgreSQL schema as numbered migrations, recorded in `cada_schema`. Every replica runs
//! them on start-up inside one transaction holding an advisory lock, so a fleet starting at once
//! migrates exactly once, and a failed migration leaves nothing half done (DDL is transactional).

use postgres::Client;

use super::{Result, LOCK_MIGRATE};
use crate::store::StoreError;

/// Migration `i` takes the schema from version `i` to `i + 1`. Append only: never edit one that
/// has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: the SQLite schema's tables, with embeddings as `real[]` plus their norm, and
    // `cada_dot` for similarity in ad-hoc queries (case logging computes it in the replica:
    // see `nearest.rs`).
    "CREATE FUNCTION cada_dot(a real[], b real[]) RETURNS double precision
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        AS $$ SELECT sum(x::float8 * y::float8) FROM unnest(a, b) AS t(x, y) $$;

    CREATE TABLE responses (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        response_id TEXT NOT NULL UNIQUE,
        request_id TEXT NOT NULL,
        created BIGINT NOT NULL,
        model TEXT NOT NULL,
        adapter TEXT,
        policy_version TEXT NOT NULL,
        mode TEXT NOT NULL,
        messages TEXT NOT NULL,
        request TEXT NOT NULL,
        reasoning TEXT,
        answer TEXT NOT NULL,
        verdict TEXT,
        verdict_probability DOUBLE PRECISION,
        precedents TEXT NOT NULL,
        embedding REAL[]
    );
    CREATE INDEX responses_by_created ON responses (created);

    CREATE TABLE cases (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        created BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        occurrences BIGINT NOT NULL DEFAULT 1,
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
        verdict_probability DOUBLE PRECISION,
        precedents TEXT NOT NULL,
        reasons TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'labelled')),
        label TEXT,
        reviewer_note TEXT,
        reviewer TEXT,
        labelled_at BIGINT,
        embedding REAL[] NOT NULL,
        embedding_norm DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX cases_by_created ON cases (created, seq);
    CREATE INDEX cases_pending ON cases (seq) WHERE status = 'pending';
    CREATE INDEX cases_by_labelled_at ON cases (labelled_at) WHERE status = 'labelled';

    CREATE TABLE case_responses (
        response_id TEXT PRIMARY KEY,
        case_id TEXT NOT NULL REFERENCES cases (id) ON DELETE CASCADE
    );
    CREATE INDEX case_responses_by_case ON case_responses (case_id);

    CREATE TABLE feedback (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        case_id TEXT NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
        response_id TEXT NOT NULL,
        label TEXT NOT NULL,
        comment TEXT,
        created BIGINT NOT NULL
    );
    CREATE INDEX feedback_by_case ON feedback (case_id, created, seq);",
    // 2: who asked and who judged. Feedback stored before this has no caller and never votes.
    "ALTER TABLE responses ADD COLUMN caller TEXT;
    ALTER TABLE case_responses ADD COLUMN caller TEXT;
    ALTER TABLE feedback ADD COLUMN caller TEXT;
    ALTER TABLE feedback ADD COLUMN from_requester BOOLEAN NOT NULL DEFAULT false;",
];

/// Schema version this build writes.
pub(in crate::store) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the schema up to [`VERSION`]; a database from a newer build is refused, not touched.
pub(super) fn migrate(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATE])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS cada_schema (
            version BIGINT NOT NULL,
            migrated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )?;
    let found: i64 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM cada_schema", &[])?
        .get(0);
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
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        tx.batch_execute(sql)?;
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        tx.execute("INSERT INTO cada_schema (version) VALUES ($1)", &[&version])?;
    }
    tx.commit()?;
    Ok(())
}
