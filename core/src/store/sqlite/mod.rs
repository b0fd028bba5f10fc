//! The embedded SQLite backend (the default): one file in WAL mode, safe to share between threads and
//! processes (each with its own `CaseStore`). Every write is one transaction; case merging scans
//! the pending embeddings inside a `BEGIN IMMEDIATE` transaction, so concurrent writers queue up
//! instead of inserting the same case twice.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use rusqlite::{OpenFlags, TransactionBehavior};

use super::embedding;
use super::{
    CaseFilter, ExportFilter, FeedbackOutcome, Logged, NewCase, NewFeedback, ResponseRecord,
    StoreConfig, StoreCounts, StoreError, StoredCase, TrainingCase, MAX_LIST_LIMIT,
};
use crate::policy::Label;

mod read;
mod schema;
mod write;

use super::codec::{
    check_precedents, from_requester, new_id, now, to_i64, to_json, Result, EXPORT_COLUMNS,
    PENDING_EXPORT_COLUMNS,
};
use read::{case_from_row, export_row, feedback_of, get_case, read_response, CASE_COLUMNS};
use write::{insert_case, link_response, make_room, merge_into, nearest_pending};

/// A connection to a case store file. Not `Sync`: give each thread its own, or share one
/// through [`super::StoreHandle`].
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    config: StoreConfig,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating the directory and file if needed) and migrates the store.
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !config.merge_threshold.is_finite() {
            return Err(StoreError::Invalid(
                "merge_threshold must be a finite number".into(),
            ));
        }
        let io = |e: std::io::Error| StoreError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // Not SQLITE_OPEN_URI: a path is a path, even with `?` or `#` in it.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&path, flags)?;
        // SQLite counts the timeout in `int` milliseconds.
        let timeout = Duration::from_millis(config.busy_timeout_ms.min(i32::MAX as u64));
        conn.busy_timeout(timeout)?;
        // Switching to WAL while another connection opens the file can fail with `busy` at once,
        // without waiting (SQLite will not wait where waiting could deadlock): retry until the
        // busy timeout. Every step is idempotent.
        let deadline = Instant::now() + timeout;
        loop {
            match set_up(&mut conn, &path) {
                Err(StoreError::Busy) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                done => break done?,
            }
        }
        Ok(Self { conn, config, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Keeps a response for feedback (replacing one with the same id), then drops records beyond
    /// the retention count and age. Both deletes touch only what they remove.
    pub fn record_response(&mut self, r: &ResponseRecord) -> Result<()> {
        check_precedents(&r.precedents)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO responses (response_id, request_id, created, model, adapter,
                policy_version, mode, messages, request, reasoning, answer, verdict,
                verdict_probability, precedents, embedding, caller)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?
        .execute(params![
            r.response_id,
            r.request_id,
            r.created,
            r.model,
            r.adapter,
            r.policy_version,
            r.mode,
            r.messages.to_string(),
            r.request,
            r.reasoning,
            r.answer,
            r.verdict.map(Label::as_str),
            r.verdict_probability.map(f64::from),
            to_json(&r.precedents),
            r.embedding.as_deref().map(embedding::encode),
            r.caller,
        ])?;
        // `seq` grows with each insert, so everything `retention` below the newest is older.
        let newest = tx.last_insert_rowid();
        let keep = i64::try_from(self.config.response_retention).unwrap_or(i64::MAX);
        tx.prepare_cached("DELETE FROM responses WHERE seq <= ?1")?
            .execute([newest.saturating_sub(keep)])?;
        let max_age = i64::try_from(self.config.response_max_age_secs).unwrap_or(i64::MAX);
        tx.prepare_cached("DELETE FROM responses WHERE created < ?1")?
            .execute([now().saturating_sub(max_age)])?;
        tx.commit()?;
        Ok(())
    }

    /// Logs a case, merging it into the most similar pending case when the cosine similarity of
    /// their embeddings reaches `merge_threshold`.
    pub fn log_case(&mut self, case: NewCase) -> Result<Logged> {
        embedding::validate(&case.embedding)?;
        check_precedents(&case.precedents)?;
        let threshold = self.config.merge_threshold;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let nearest = nearest_pending(&tx, &case.embedding)?;
        let logged = match nearest {
            Some((id, similarity)) if similarity >= threshold => {
                let occurrences = merge_into(&tx, &id, &case)?;
                Logged::Merged { id, occurrences }
            }
            _ => {
                make_room(
                    &tx,
                    self.config.pending_max,
                    self.config.pending_max_age_secs,
                )?;
                Logged::Inserted {
                    id: insert_case(&tx, &case)?,
                }
            }
        };
        link_response(&tx, &case.response_id, logged.id(), case.caller.as_deref())?;
        tx.commit()?;
        Ok(logged)
    }

    /// Attaches feedback to the case logged from the response, or makes a case from the kept
    /// response record. Committed before it returns.
    pub fn feedback(&mut self, feedback: NewFeedback) -> Result<FeedbackOutcome> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let linked: Option<(String, Option<String>)> = tx
            .prepare_cached("SELECT case_id, caller FROM case_responses WHERE response_id = ?1")?
            .query_row([&feedback.response_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (case_id, requester, created_case) = match linked {
            Some((id, requester)) => (id, requester, false),
            None => {
                let record = read_response(&tx, &feedback.response_id)?.ok_or_else(|| {
                    StoreError::NotFound {
                        what: "response",
                        id: feedback.response_id.clone(),
                    }
                })?;
                let case = NewCase::from_record(record, vec!["feedback".to_owned()]);
                make_room(
                    &tx,
                    self.config.pending_max,
                    self.config.pending_max_age_secs,
                )?;
                let id = insert_case(&tx, &case)?;
                link_response(&tx, &case.response_id, &id, case.caller.as_deref())?;
                (id, case.caller, true)
            }
        };
        let from_requester = from_requester(feedback.caller.as_deref(), requester.as_deref());
        let feedback_id = new_id("fb");
        tx.prepare_cached(
            "INSERT INTO feedback (id, case_id, response_id, label, comment, created, caller,
                from_requester)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            feedback_id,
            case_id,
            feedback.response_id,
            feedback.label.as_str(),
            feedback.comment,
            now(),
            feedback.caller,
            from_requester,
        ])?;
        tx.commit()?;
        Ok(FeedbackOutcome {
            feedback_id,
            case_id,
            created_case,
        })
    }

    /// Cases matching the filter, newest first.
    pub fn list_cases(&self, filter: &CaseFilter) -> Result<Vec<StoredCase>> {
        let mut sql = format!("SELECT {CASE_COLUMNS} FROM cases WHERE 1 = 1");
        let mut args: Vec<Value> = Vec::new();
        if let Some(status) = filter.status {
            sql.push_str(" AND status = ?");
            args.push(Value::Text(status.as_str().to_owned()));
        }
        if let Some(since) = filter.since {
            sql.push_str(" AND created >= ?");
            args.push(Value::Integer(since));
        }
        if let Some(until) = filter.until {
            sql.push_str(" AND created < ?");
            args.push(Value::Integer(until));
        }
        if let Some(before) = &filter.before_id {
            let (created, seq): (i64, i64) = self
                .conn
                .prepare_cached("SELECT created, seq FROM cases WHERE id = ?1")?
                .query_row([before], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .ok_or_else(|| StoreError::NotFound {
                    what: "case",
                    id: before.clone(),
                })?;
            sql.push_str(" AND (created < ? OR (created = ? AND seq < ?))");
            args.extend([
                Value::Integer(created),
                Value::Integer(created),
                Value::Integer(seq),
            ]);
        }
        sql.push_str(" ORDER BY created DESC, seq DESC LIMIT ? OFFSET ?");
        args.push(Value::Integer(to_i64(filter.limit.min(MAX_LIST_LIMIT))));
        args.push(Value::Integer(to_i64(filter.offset)));
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(params_from_iter(args))?;
        let mut cases = Vec::new();
        while let Some(row) = rows.next()? {
            cases.push(case_from_row(row)?);
        }
        for case in &mut cases {
            case.feedback = feedback_of(&self.conn, &case.id)?;
        }
        Ok(cases)
    }

    pub fn get_case(&self, id: &str) -> Result<StoredCase> {
        get_case(&self.conn, id)
    }

    /// A kept response record, if it has not been dropped yet.
    pub fn response(&self, response_id: &str) -> Result<Option<ResponseRecord>> {
        read_response(&self.conn, response_id)
    }

    /// Records a reviewer's label; the case leaves the pending set (nothing merges into it).
    pub fn label_case(
        &mut self,
        id: &str,
        label: Label,
        note: Option<String>,
        reviewer: Option<String>,
    ) -> Result<StoredCase> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx
            .prepare_cached(
                "UPDATE cases SET status = 'labelled', label = ?2, reviewer_note = ?3,
                    reviewer = ?4, labelled_at = ?5
                 WHERE id = ?1",
            )?
            .execute(params![id, label.as_str(), note, reviewer, now()])?;
        if changed == 0 {
            return Err(StoreError::NotFound {
                what: "case",
                id: id.to_owned(),
            });
        }
        let case = get_case(&tx, id)?;
        tx.commit()?;
        Ok(case)
    }

    /// Training cases, oldest first: labelled cases, then (if asked) pending cases whose feedback
    /// agrees on a label.
    pub fn export(&self, filter: &ExportFilter) -> Result<Vec<TrainingCase>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {EXPORT_COLUMNS} FROM cases
             WHERE status = 'labelled' AND (?1 IS NULL OR labelled_at >= ?1)
             ORDER BY created, seq"
        ))?;
        let mut out = Vec::new();
        let mut rows = stmt.query([filter.since])?;
        while let Some(row) = rows.next()? {
            out.push(export_row(row)?.reviewed()?);
        }
        if !filter.include_feedback {
            return Ok(out);
        }
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {PENDING_EXPORT_COLUMNS} FROM cases c
             WHERE status = 'pending'
               AND (SELECT max(created) FROM feedback f WHERE f.case_id = c.id) >= ?1
             ORDER BY created, seq"
        ))?;
        let mut rows = stmt.query([filter.since.unwrap_or(i64::MIN)])?;
        while let Some(row) = rows.next()? {
            let row = export_row(row)?;
            let feedback = feedback_of(&self.conn, &row.id)?;
            out.extend(row.with_feedback(&feedback, filter.feedback_quorum)?);
        }
        Ok(out)
    }

    pub fn counts(&self) -> Result<StoreCounts> {
        let (pending, labelled) = self.conn.query_row(
            "SELECT coalesce(sum(status = 'pending'), 0), coalesce(sum(status = 'labelled'), 0)
             FROM cases",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )?;
        let responses: i64 = self
            .conn
            .query_row("SELECT count(*) FROM responses", [], |r| r.get(0))?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(StoreCounts {
            pending: count(pending),
            labelled: count(labelled),
            responses: count(responses),
        })
    }
}

/// WAL mode, durability and the schema.
fn set_up(conn: &mut Connection, path: &Path) -> Result<()> {
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "cannot switch {} to WAL mode (it stays in `{mode}` mode)",
            path.display()
        )));
    }
    // FULL: a commit reaches the disk before the caller is told, so acknowledged feedback
    // survives a power cut, not only a crash.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    schema::migrate(conn)
}

#[cfg(test)]
mod tests;
