//! The embedded SQLite backend: one file in WAL mode, safe to share between threads and
//! processes (each with its own `CaseStore`). Every write is one transaction; case merging scans
//! the pending embeddings inside a `BEGIN IMMEDIATE` transaction, so concurrent writers queue up
//! instead of inserting the same case twice.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, Transaction};
use rusqlite::{OpenFlags, TransactionBehavior};

use super::embedding;
use super::schema;
use super::{
    majority_label, CaseFilter, CaseStatus, ExportFilter, FeedbackEntry, FeedbackOutcome, Logged,
    NewCase, NewFeedback, PrecedentRef, ResponseRecord, StoreConfig, StoreCounts, StoreError,
    StoredCase, TrainingCase, TrainingSource, MAX_LIST_LIMIT,
};
use crate::policy::Label;

type Result<T> = std::result::Result<T, StoreError>;

/// A connection to a case store file. Not `Sync`: give each thread its own, or share one
/// through [`super::StoreHandle`].
#[derive(Debug)]
pub struct CaseStore {
    conn: Connection,
    config: StoreConfig,
    path: PathBuf,
}

/// Columns of `cases` that `case_from_row` reads, in its order.
const CASE_COLUMNS: &str =
    "id, created, last_seen, occurrences, response_id, request_id, request, \
     messages, model, adapter, policy_version, mode, reasoning, answer, verdict, \
     verdict_probability, precedents, reasons, status, label, reviewer_note, reviewer, labelled_at";

impl CaseStore {
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
                verdict_probability, precedents, embedding)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
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
            _ => Logged::Inserted {
                id: insert_case(&tx, &case)?,
            },
        };
        link_response(&tx, &case.response_id, logged.id())?;
        tx.commit()?;
        Ok(logged)
    }

    /// Attaches feedback to the case logged from the response, or makes a case from the kept
    /// response record. Committed before it returns.
    pub fn feedback(&mut self, feedback: NewFeedback) -> Result<FeedbackOutcome> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let linked: Option<String> = tx
            .prepare_cached("SELECT case_id FROM case_responses WHERE response_id = ?1")?
            .query_row([&feedback.response_id], |r| r.get(0))
            .optional()?;
        let (case_id, created_case) = match linked {
            Some(id) => (id, false),
            None => {
                let record = read_response(&tx, &feedback.response_id)?.ok_or_else(|| {
                    StoreError::NotFound {
                        what: "response",
                        id: feedback.response_id.clone(),
                    }
                })?;
                let case = NewCase::from_record(record, vec!["feedback".to_owned()]);
                let id = insert_case(&tx, &case)?;
                link_response(&tx, &case.response_id, &id)?;
                (id, true)
            }
        };
        let feedback_id = new_id("fb");
        tx.prepare_cached(
            "INSERT INTO feedback (id, case_id, response_id, label, comment, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            feedback_id,
            case_id,
            feedback.response_id,
            feedback.label.as_str(),
            feedback.comment,
            now(),
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
        let mut out = Vec::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, request, messages, label, reviewer_note, policy_version, created
             FROM cases WHERE status = 'labelled' AND (?1 IS NULL OR labelled_at >= ?1)
             ORDER BY created, seq",
        )?;
        let mut rows = stmt.query([filter.since])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let label: Option<String> = row.get(3)?;
            let label = parse_label(label.as_deref(), &id)?
                .ok_or_else(|| StoreError::corrupt(format!("labelled case {id} has no label")))?;
            out.push(TrainingCase {
                request: row.get(1)?,
                messages: from_json(&row.get::<_, String>(2)?, "messages", &id)?,
                label,
                source: TrainingSource::Review,
                note: row.get(4)?,
                policy_version: row.get(5)?,
                created: row.get(6)?,
                id,
            });
        }
        if !filter.include_feedback {
            return Ok(out);
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, request, messages, verdict, policy_version, created FROM cases c
             WHERE status = 'pending'
               AND (SELECT max(created) FROM feedback f WHERE f.case_id = c.id) >= ?1
             ORDER BY created, seq",
        )?;
        let mut rows = stmt.query([filter.since.unwrap_or(i64::MIN)])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let verdict: Option<String> = row.get(3)?;
            let verdict = parse_label(verdict.as_deref(), &id)?;
            let Some(label) = majority_label(&feedback_of(&self.conn, &id)?, verdict) else {
                continue;
            };
            out.push(TrainingCase {
                request: row.get(1)?,
                messages: from_json(&row.get::<_, String>(2)?, "messages", &id)?,
                label,
                source: TrainingSource::Feedback,
                note: None,
                policy_version: row.get(4)?,
                created: row.get(5)?,
                id,
            });
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

/// The pending case most similar to `query`, with its similarity.
fn nearest_pending(tx: &Transaction<'_>, query: &[f32]) -> Result<Option<(String, f32)>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, embedding FROM cases WHERE status = 'pending' AND length(embedding) = ?1",
    )?;
    let mut rows = stmt.query([to_i64(query.len() * 4)])?;
    let mut best: Option<(String, f32)> = None;
    while let Some(row) = rows.next()? {
        let blob = row
            .get_ref(1)?
            .as_blob()
            .map_err(|_| StoreError::corrupt("a case embedding is not a blob"))?;
        let similarity = embedding::cosine(query, blob);
        if best.as_ref().is_none_or(|(_, b)| similarity > *b) {
            best = Some((row.get(0)?, similarity));
        }
    }
    Ok(best)
}

/// Counts another occurrence of a pending case; returns the new count.
fn merge_into(tx: &Transaction<'_>, id: &str, case: &NewCase) -> Result<u32> {
    let (occurrences, reasons): (i64, String) = tx
        .prepare_cached("SELECT occurrences, reasons FROM cases WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut reasons: Vec<String> = from_json(&reasons, "reasons", id)?;
    union_into(&mut reasons, &case.reasons);
    let occurrences = occurrences.saturating_add(1);
    tx.prepare_cached(
        "UPDATE cases SET occurrences = ?2, last_seen = max(last_seen, ?3), reasons = ?4
         WHERE id = ?1",
    )?
    .execute(params![id, occurrences, case.created, to_json(&reasons)])?;
    u32::try_from(occurrences)
        .map_err(|_| StoreError::corrupt(format!("case {id} has {occurrences} occurrences")))
}

fn insert_case(tx: &Transaction<'_>, case: &NewCase) -> Result<String> {
    let id = new_id("case");
    let mut reasons = Vec::new();
    union_into(&mut reasons, &case.reasons);
    tx.prepare_cached(
        "INSERT INTO cases (id, created, last_seen, occurrences, response_id, request_id, request,
            messages, model, adapter, policy_version, mode, reasoning, answer, verdict,
            verdict_probability, precedents, reasons, status, embedding)
         VALUES (?1, ?2, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
            'pending', ?17)",
    )?
    .execute(params![
        id,
        case.created,
        case.response_id,
        case.request_id,
        case.request,
        case.messages.to_string(),
        case.model,
        case.adapter,
        case.policy_version,
        case.mode,
        case.reasoning,
        case.answer,
        case.verdict.map(Label::as_str),
        case.verdict_probability.map(f64::from),
        to_json(&case.precedents),
        to_json(&reasons),
        embedding::encode(&case.embedding),
    ])?;
    Ok(id)
}

/// Later feedback on `response_id` goes to `case_id`.
fn link_response(tx: &Transaction<'_>, response_id: &str, case_id: &str) -> Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO case_responses (response_id, case_id) VALUES (?1, ?2)",
    )?
    .execute([response_id, case_id])?;
    Ok(())
}

fn read_response(tx: &Transaction<'_>, response_id: &str) -> Result<Option<ResponseRecord>> {
    let mut stmt = tx.prepare_cached(
        "SELECT response_id, request_id, created, model, adapter, policy_version, mode, messages,
            request, reasoning, answer, verdict, verdict_probability, precedents, embedding
         FROM responses WHERE response_id = ?1",
    )?;
    let mut rows = stmt.query([response_id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let id: String = row.get(0)?;
    let verdict: Option<String> = row.get(11)?;
    let embedding: Option<Vec<u8>> = row.get(14)?;
    Ok(Some(ResponseRecord {
        request_id: row.get(1)?,
        created: row.get(2)?,
        model: row.get(3)?,
        adapter: row.get(4)?,
        policy_version: row.get(5)?,
        mode: row.get(6)?,
        messages: from_json(&row.get::<_, String>(7)?, "messages", &id)?,
        request: row.get(8)?,
        reasoning: row.get(9)?,
        answer: row.get(10)?,
        verdict: parse_label(verdict.as_deref(), &id)?,
        verdict_probability: row.get::<_, Option<f64>>(12)?.map(|p| p as f32),
        precedents: from_json(&row.get::<_, String>(13)?, "precedents", &id)?,
        embedding: embedding.map(|b| {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }),
        response_id: id,
    }))
}

fn get_case(conn: &Connection, id: &str) -> Result<StoredCase> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {CASE_COLUMNS} FROM cases WHERE id = ?1"))?;
    let mut rows = stmt.query([id])?;
    let row = rows.next()?.ok_or_else(|| StoreError::NotFound {
        what: "case",
        id: id.to_owned(),
    })?;
    let mut case = case_from_row(row)?;
    case.feedback = feedback_of(conn, id)?;
    Ok(case)
}

/// A case row as selected with [`CASE_COLUMNS`], without its feedback.
fn case_from_row(row: &Row<'_>) -> Result<StoredCase> {
    let id: String = row.get(0)?;
    let occurrences: i64 = row.get(3)?;
    let verdict: Option<String> = row.get(14)?;
    let status: String = row.get(18)?;
    let label: Option<String> = row.get(19)?;
    Ok(StoredCase {
        created: row.get(1)?,
        last_seen: row.get(2)?,
        occurrences: u32::try_from(occurrences)
            .map_err(|_| StoreError::corrupt(format!("case {id} has {occurrences} occurrences")))?,
        response_id: row.get(4)?,
        request_id: row.get(5)?,
        request: row.get(6)?,
        messages: from_json(&row.get::<_, String>(7)?, "messages", &id)?,
        model: row.get(8)?,
        adapter: row.get(9)?,
        policy_version: row.get(10)?,
        mode: row.get(11)?,
        reasoning: row.get(12)?,
        answer: row.get(13)?,
        verdict: parse_label(verdict.as_deref(), &id)?,
        verdict_probability: row.get::<_, Option<f64>>(15)?.map(|p| p as f32),
        precedents: from_json(&row.get::<_, String>(16)?, "precedents", &id)?,
        reasons: from_json(&row.get::<_, String>(17)?, "reasons", &id)?,
        status: status
            .parse::<CaseStatus>()
            .map_err(|_| StoreError::corrupt(format!("case {id} has an unknown status")))?,
        label: parse_label(label.as_deref(), &id)?,
        reviewer_note: row.get(20)?,
        reviewer: row.get(21)?,
        labelled_at: row.get(22)?,
        feedback: Vec::new(),
        id,
    })
}

/// Feedback on a case, oldest first.
fn feedback_of(conn: &Connection, case_id: &str) -> Result<Vec<FeedbackEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, response_id, label, comment, created FROM feedback
         WHERE case_id = ?1 ORDER BY created, seq",
    )?;
    let mut rows = stmt.query([case_id])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let label: String = row.get(2)?;
        out.push(FeedbackEntry {
            response_id: row.get(1)?,
            label: label
                .parse()
                .map_err(|_| StoreError::corrupt(format!("feedback {id} has an unknown label")))?,
            comment: row.get(3)?,
            created: row.get(4)?,
            id,
        });
    }
    Ok(out)
}

/// A NaN similarity would be stored as JSON `null` and make the row unreadable.
fn check_precedents(precedents: &[PrecedentRef]) -> Result<()> {
    match precedents.iter().find(|p| !p.similarity.is_finite()) {
        Some(p) => Err(StoreError::Invalid(format!(
            "precedent {} has a non-finite similarity",
            p.id
        ))),
        None => Ok(()),
    }
}

/// Appends the reasons not there yet, keeping first-seen order.
fn union_into(reasons: &mut Vec<String>, new: &[String]) {
    for r in new {
        if !reasons.contains(r) {
            reasons.push(r.clone());
        }
    }
}

fn parse_label(s: Option<&str>, id: &str) -> Result<Option<Label>> {
    s.map(|s| {
        s.parse::<Label>()
            .map_err(|_| StoreError::corrupt(format!("record {id} has an unknown label")))
    })
    .transpose()
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Strings, labels and floats (finite: see `check_precedents`): serialising cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, column: &str, id: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::corrupt(format!(
            "`{column}` of {id} is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// `prefix_` + 12 hex digits of milliseconds since the epoch + 16 random hex digits: unique, and
/// sorted by creation time to the millisecond.
fn new_id(prefix: &str) -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{millis:012x}{}", &random[..16])
}

/// Unix seconds now.
pub(super) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;
    use crate::store::testutil::{case, near, record, unit};
    use crate::store::{export_jsonl, read_training_jsonl, FeedbackLabel};

    fn open(dir: &tempfile::TempDir) -> CaseStore {
        CaseStore::open(dir.path().join("cases.db"), StoreConfig::default()).unwrap()
    }

    fn feedback(response_id: &str, label: FeedbackLabel) -> NewFeedback {
        NewFeedback {
            response_id: response_id.into(),
            label,
            comment: Some("it refused a harmless question".into()),
        }
    }

    #[test]
    fn a_logged_case_reads_back_field_for_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/cases.db");
        let mut store = CaseStore::open(&path, StoreConfig::default()).unwrap();
        assert!(path.is_file());
        let new = case(
            "chatcmpl-1",
            unit(3),
            &["low_confidence", "possible_over_refusal"],
        );
        let Logged::Inserted { id } = store.log_case(new.clone()).unwrap() else {
            panic!("an empty store merged");
        };
        assert!(id.starts_with("case_"), "{id}");
        let got = store.get_case(&id).unwrap();
        let want = StoredCase {
            id: id.clone(),
            created: new.created,
            last_seen: new.created,
            occurrences: 1,
            response_id: new.response_id,
            request_id: new.request_id,
            request: new.request,
            messages: new.messages,
            model: new.model,
            adapter: new.adapter,
            policy_version: new.policy_version,
            mode: new.mode,
            reasoning: new.reasoning,
            answer: new.answer,
            verdict: new.verdict,
            verdict_probability: new.verdict_probability,
            precedents: new.precedents,
            reasons: new.reasons,
            status: CaseStatus::Pending,
            label: None,
            reviewer_note: None,
            reviewer: None,
            labelled_at: None,
            feedback: Vec::new(),
        };
        assert_eq!(got, want);
        assert_eq!(
            store.list_cases(&CaseFilter::default()).unwrap(),
            vec![want]
        );
        let stored: Vec<u8> = store
            .conn
            .query_row("SELECT embedding FROM cases WHERE id = ?1", [&id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(embedding::decode(&stored).unwrap(), unit(3));
    }

    #[test]
    fn a_response_record_reads_back_field_for_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let mut r = record("chatcmpl-r", now());
        r.adapter = None;
        r.reasoning = None;
        r.verdict = None;
        r.verdict_probability = None;
        store.record_response(&r).unwrap();
        let full = record("chatcmpl-full", now());
        store.record_response(&full).unwrap();
        let tx = store.conn.transaction().unwrap();
        assert_eq!(read_response(&tx, "chatcmpl-r").unwrap(), Some(r));
        assert_eq!(read_response(&tx, "chatcmpl-full").unwrap(), Some(full));
        assert_eq!(read_response(&tx, "chatcmpl-none").unwrap(), None);
    }

    #[test]
    fn near_duplicates_merge_into_pending_cases_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let first = store.log_case(case("chatcmpl-1", unit(0), &["low_confidence"]));
        let Ok(Logged::Inserted { id }) = first else {
            panic!("{first:?}")
        };
        // Same request again, and a paraphrase (cosine 0.95 >= 0.92), a day later.
        let mut again = case("chatcmpl-2", unit(0), &["possible_over_refusal"]);
        again.created += 86_400;
        let merged = Logged::Merged {
            id: id.clone(),
            occurrences: 2,
        };
        assert_eq!(store.log_case(again).unwrap(), merged);
        let paraphrase = case("chatcmpl-3", near(0, 1, 0.95), &["low_confidence"]);
        assert!(matches!(
            store.log_case(paraphrase).unwrap(),
            Logged::Merged { occurrences: 3, .. }
        ));
        let c = store.get_case(&id).unwrap();
        assert_eq!(c.occurrences, 3);
        assert_eq!(c.reasons, ["low_confidence", "possible_over_refusal"]);
        assert_eq!(c.last_seen, c.created + 86_400);
        assert_eq!(c.response_id, "chatcmpl-1");
        // Orthogonal, and merely related (cosine 0.5), stay apart.
        let other = store.log_case(case("chatcmpl-4", unit(1), &["x"])).unwrap();
        assert!(matches!(other, Logged::Inserted { .. }));
        let related = store
            .log_case(case("chatcmpl-5", near(0, 2, 0.5), &["x"]))
            .unwrap();
        assert!(matches!(related, Logged::Inserted { .. }));
        // A labelled case is closed: the same request opens a new one.
        store.label_case(&id, Label::Allow, None, None).unwrap();
        let after = store.log_case(case("chatcmpl-6", unit(0), &["x"])).unwrap();
        assert!(matches!(&after, Logged::Inserted { id: new } if *new != id));
        assert_eq!(store.get_case(&id).unwrap().occurrences, 3);
        let counts = store.counts().unwrap();
        assert_eq!((counts.pending, counts.labelled), (3, 1));
    }

    #[test]
    fn concurrent_writers_never_insert_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.db");
        let start = Barrier::new(8);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (path, start) = (&path, &start);
                s.spawn(move || {
                    start.wait();
                    let config = StoreConfig {
                        busy_timeout_ms: 60_000,
                        ..StoreConfig::default()
                    };
                    let mut store = CaseStore::open(path, config).unwrap();
                    for i in 0..50 {
                        let id = format!("chatcmpl-{t}-{i}");
                        store
                            .log_case(case(&id, unit((t * 7 + i) % 10), &["low_confidence"]))
                            .unwrap();
                    }
                });
            }
        });
        let store = CaseStore::open(&path, StoreConfig::default()).unwrap();
        let cases = store
            .list_cases(&CaseFilter {
                limit: 100,
                ..CaseFilter::default()
            })
            .unwrap();
        assert_eq!(cases.len(), 10);
        assert_eq!(cases.iter().map(|c| c.occurrences).sum::<u32>(), 400);
        let links: i64 = store
            .conn
            .query_row("SELECT count(*) FROM case_responses", [], |r| r.get(0))
            .unwrap();
        assert_eq!(links, 400);
    }

    #[test]
    fn feedback_on_an_unknown_response_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let err = store
            .feedback(feedback("chatcmpl-nope", FeedbackLabel::Harmful))
            .unwrap_err();
        assert_eq!(err.code(), "not_found");
        assert_eq!(store.counts().unwrap(), StoreCounts::default());
    }

    #[test]
    fn feedback_lands_on_the_logged_case_or_makes_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let t = now();
        for id in ["chatcmpl-a", "chatcmpl-b", "chatcmpl-c"] {
            store.record_response(&record(id, t)).unwrap();
        }
        // a was logged, b merged into a's case, c only recorded.
        let logged = store.log_case(case("chatcmpl-a", unit(5), &["x"])).unwrap();
        let merged = store.log_case(case("chatcmpl-b", unit(5), &["y"])).unwrap();
        assert_eq!(merged.id(), logged.id());
        let on_a = store
            .feedback(feedback("chatcmpl-a", FeedbackLabel::OverRefusal))
            .unwrap();
        let on_b = store
            .feedback(feedback("chatcmpl-b", FeedbackLabel::Correct))
            .unwrap();
        assert_eq!(
            (on_a.case_id.as_str(), on_a.created_case),
            (logged.id(), false)
        );
        assert_eq!(
            (on_b.case_id.as_str(), on_b.created_case),
            (logged.id(), false)
        );
        let fb = store.get_case(logged.id()).unwrap().feedback;
        assert_eq!(fb.len(), 2);
        assert_eq!(fb[0].id, on_a.feedback_id);
        assert_eq!(fb[0].response_id, "chatcmpl-a");
        assert_eq!(fb[0].label, FeedbackLabel::OverRefusal);
        assert_eq!(
            fb[0].comment.as_deref(),
            Some("it refused a harmless question")
        );
        assert!(fb[0].created >= t);
        assert_eq!(fb[1].label, FeedbackLabel::Correct);

        let on_c = store
            .feedback(feedback("chatcmpl-c", FeedbackLabel::Harmful))
            .unwrap();
        assert!(on_c.created_case);
        let c = store.get_case(&on_c.case_id).unwrap();
        assert_eq!(c.reasons, ["feedback"]);
        assert_eq!(c.response_id, "chatcmpl-c");
        assert_eq!(c.request, record("chatcmpl-c", t).request);
        assert_eq!(c.precedents, record("chatcmpl-c", t).precedents);
        assert_eq!(c.feedback.len(), 1);
        let again = store
            .feedback(NewFeedback {
                comment: None,
                ..feedback("chatcmpl-c", FeedbackLabel::Harmful)
            })
            .unwrap();
        assert_eq!((again.case_id, again.created_case), (on_c.case_id, false));
        assert_eq!(store.counts().unwrap().pending, 2);
    }

    #[test]
    fn a_case_from_a_record_without_embedding_never_merges() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let mut r = record("chatcmpl-plain", now());
        r.embedding = None;
        store.record_response(&r).unwrap();
        let out = store
            .feedback(feedback("chatcmpl-plain", FeedbackLabel::OverRefusal))
            .unwrap();
        assert!(out.created_case);
        let later = store.log_case(case("chatcmpl-x", unit(0), &["x"])).unwrap();
        assert_ne!(later.id(), out.case_id);
    }

    #[test]
    fn labelled_cases_export_through_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let a = store.log_case(case("chatcmpl-a", unit(0), &["x"])).unwrap();
        let b = store.log_case(case("chatcmpl-b", unit(1), &["x"])).unwrap();
        let labelled = store
            .label_case(
                a.id(),
                Label::Allow,
                Some("killing a process is routine".into()),
                Some("reviewer@example.org".into()),
            )
            .unwrap();
        assert_eq!(labelled.status, CaseStatus::Labelled);
        assert_eq!(labelled.label, Some(Label::Allow));
        assert_eq!(labelled.reviewer.as_deref(), Some("reviewer@example.org"));
        assert!(labelled.labelled_at.is_some_and(|t| t >= labelled.created));
        let err = store.label_case("case_nope", Label::Refuse, None, None);
        assert_eq!(err.unwrap_err().code(), "not_found");

        let exported = store.export(&ExportFilter::default()).unwrap();
        assert_eq!(exported.len(), 1);
        let t = &exported[0];
        assert_eq!(t.id, a.id());
        assert_eq!((t.label, t.source), (Label::Allow, TrainingSource::Review));
        assert_eq!(t.note.as_deref(), Some("killing a process is routine"));
        assert_eq!(t.request, labelled.request);
        assert_eq!(t.messages, labelled.messages);
        assert_eq!(t.policy_version, labelled.policy_version);
        assert_eq!(t.created, labelled.created);
        assert_eq!(
            read_training_jsonl(&export_jsonl(&exported)).unwrap(),
            exported
        );

        let pending = CaseFilter {
            status: Some(CaseStatus::Pending),
            ..CaseFilter::default()
        };
        let listed = store.list_cases(&pending).unwrap();
        assert_eq!(
            listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            [b.id()]
        );
        let later = ExportFilter {
            since: Some(now() + 3600),
            ..ExportFilter::default()
        };
        assert!(store.export(&later).unwrap().is_empty());
    }

    #[test]
    fn export_adds_cases_whose_feedback_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        for id in [
            "chatcmpl-agree",
            "chatcmpl-split",
            "chatcmpl-none",
            "chatcmpl-done",
        ] {
            store.record_response(&record(id, now())).unwrap();
        }
        let fb = |store: &mut CaseStore, id: &str, label| {
            store.feedback(feedback(id, label)).unwrap().case_id
        };
        let agree = fb(&mut store, "chatcmpl-agree", FeedbackLabel::OverRefusal);
        fb(&mut store, "chatcmpl-agree", FeedbackLabel::OverRefusal);
        // The verdict was refuse: `correct` votes refuse, and one each is no majority.
        fb(&mut store, "chatcmpl-split", FeedbackLabel::OverRefusal);
        fb(&mut store, "chatcmpl-split", FeedbackLabel::Correct);
        store
            .log_case(case("chatcmpl-none", unit(9), &["x"]))
            .unwrap();
        let done = fb(&mut store, "chatcmpl-done", FeedbackLabel::Harmful);
        store
            .label_case(&done, Label::SafeComplete, None, None)
            .unwrap();

        let review_only = store.export(&ExportFilter::default()).unwrap();
        assert_eq!(review_only.len(), 1);
        let with_feedback = ExportFilter {
            include_feedback: true,
            since: None,
        };
        let all = store.export(&with_feedback).unwrap();
        let got: Vec<_> = all
            .iter()
            .map(|t| (t.id.as_str(), t.label, t.source))
            .collect();
        assert_eq!(
            got,
            [
                (done.as_str(), Label::SafeComplete, TrainingSource::Review),
                (agree.as_str(), Label::Allow, TrainingSource::Feedback),
            ]
        );
        let later = ExportFilter {
            include_feedback: true,
            since: Some(now() + 3600),
        };
        assert!(store.export(&later).unwrap().is_empty());
    }

    #[test]
    fn old_and_excess_response_records_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            response_retention: 5,
            response_max_age_secs: 3600,
            ..StoreConfig::default()
        };
        let mut store = CaseStore::open(dir.path().join("r.db"), config).unwrap();
        let t = now();
        for i in 0..20 {
            store
                .record_response(&record(&format!("chatcmpl-{i}"), t))
                .unwrap();
        }
        assert_eq!(store.counts().unwrap().responses, 5);
        let gone = store.feedback(feedback("chatcmpl-14", FeedbackLabel::Harmful));
        assert_eq!(gone.unwrap_err().code(), "not_found");
        assert!(store
            .feedback(feedback("chatcmpl-15", FeedbackLabel::Harmful))
            .is_ok());
        // Older than the maximum age: dropped at once, and it takes nothing newer with it.
        store
            .record_response(&record("chatcmpl-old", t - 7200))
            .unwrap();
        assert_eq!(store.counts().unwrap().responses, 4);
        let old = store.feedback(feedback("chatcmpl-old", FeedbackLabel::Harmful));
        assert_eq!(old.unwrap_err().code(), "not_found");
        // A logged case keeps taking feedback after its response record is gone.
        store
            .log_case(case("chatcmpl-logged", unit(1), &["x"]))
            .unwrap();
        for i in 20..30 {
            store
                .record_response(&record(&format!("chatcmpl-{i}"), t))
                .unwrap();
        }
        assert!(store
            .feedback(feedback("chatcmpl-logged", FeedbackLabel::Correct))
            .is_ok());
    }

    #[test]
    fn reopening_finds_everything_and_migrates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (id, counts) = {
            let mut store = open(&dir);
            store.record_response(&record("chatcmpl-1", now())).unwrap();
            let id = store
                .feedback(feedback("chatcmpl-1", FeedbackLabel::OverRefusal))
                .unwrap()
                .case_id;
            store.log_case(case("chatcmpl-2", unit(7), &["x"])).unwrap();
            (id, store.counts().unwrap())
        };
        let before = open(&dir).get_case(&id).unwrap();
        let store = open(&dir);
        assert_eq!(store.get_case(&id).unwrap(), before);
        assert_eq!(before.feedback.len(), 1);
        assert_eq!(store.counts().unwrap(), counts);
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, schema::VERSION);
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn listing_pages_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let mut ids = Vec::new();
        for i in 0..5 {
            let mut c = case(&format!("chatcmpl-{i}"), unit(i), &["x"]);
            c.created = 1_000 + i as i64;
            ids.push(store.log_case(c).unwrap().id().to_owned());
        }
        ids.reverse();
        let list = |filter: CaseFilter| -> Vec<String> {
            let cases = store.list_cases(&filter).unwrap();
            cases.into_iter().map(|c| c.id).collect()
        };
        let page = |before_id: Option<&String>, offset| CaseFilter {
            limit: 2,
            before_id: before_id.cloned(),
            offset,
            ..CaseFilter::default()
        };
        assert_eq!(list(CaseFilter::default()), ids);
        assert_eq!(list(page(None, 0)), ids[..2]);
        assert_eq!(list(page(Some(&ids[1]), 0)), ids[2..4]);
        assert_eq!(list(page(Some(&ids[3]), 0)), ids[4..]);
        assert_eq!(list(page(None, 2)), ids[2..4]);
        let window = CaseFilter {
            since: Some(1_001),
            until: Some(1_003),
            ..CaseFilter::default()
        };
        assert_eq!(list(window), ids[2..4]);
        let huge = CaseFilter {
            limit: 1_000_000,
            ..CaseFilter::default()
        };
        assert_eq!(list(huge).len(), 5);
        let unknown = store.list_cases(&page(Some(&"case_nope".to_owned()), 0));
        assert_eq!(unknown.unwrap_err().code(), "not_found");
        assert_eq!(store.get_case("case_nope").unwrap_err().code(), "not_found");
    }

    #[test]
    fn bad_input_is_refused_before_it_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let empty = store.log_case(case("chatcmpl-1", Vec::new(), &["x"]));
        assert_eq!(empty.unwrap_err().code(), "invalid_input");
        let mut nan = case("chatcmpl-2", unit(0), &["x"]);
        nan.precedents[0].similarity = f32::NAN;
        assert_eq!(store.log_case(nan).unwrap_err().code(), "invalid_input");
        assert_eq!(store.counts().unwrap(), StoreCounts::default());
        let bad = StoreConfig {
            merge_threshold: f32::NAN,
            ..StoreConfig::default()
        };
        let err = CaseStore::open(dir.path().join("x.db"), bad).unwrap_err();
        assert_eq!(err.code(), "invalid_input");
    }
}
