//! Rows back into the store's types. A value that does not decode is `corrupt`, named by record
//! id and column, never quoted (stored values are user text).

use rusqlite::{Connection, Row};

use crate::store::codec::{from_json, parse_label, ExportRow, Result};
use crate::store::embedding;
use crate::store::{CaseStatus, FeedbackEntry, ResponseRecord, StoreError, StoredCase};

/// Columns of `cases` that `case_from_row` reads, in its order.
pub(super) const CASE_COLUMNS: &str =
    "id, created, last_seen, occurrences, response_id, request_id, request, \
     messages, model, adapter, policy_version, mode, reasoning, answer, verdict, \
     verdict_probability, precedents, reasons, status, label, reviewer_note, reviewer, labelled_at";

pub(super) fn read_response(
    conn: &Connection,
    response_id: &str,
) -> Result<Option<ResponseRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT response_id, request_id, created, model, adapter, policy_version, mode, messages,
            request, reasoning, answer, verdict, verdict_probability, precedents, embedding,
            caller
         FROM responses WHERE response_id = ?1",
    )?;
    let mut rows = stmt.query([response_id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let id: String = row.get(0)?;
    let verdict: Option<String> = row.get(11)?;
    let blob: Option<Vec<u8>> = row.get(14)?;
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
        embedding: blob.as_deref().map(embedding::decode).transpose()?,
        caller: row.get(15)?,
        response_id: id,
    }))
}

pub(super) fn get_case(conn: &Connection, id: &str) -> Result<StoredCase> {
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
pub(super) fn case_from_row(row: &Row<'_>) -> Result<StoredCase> {
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
pub(super) fn feedback_of(conn: &Connection, case_id: &str) -> Result<Vec<FeedbackEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, response_id, label, comment, created, caller, from_requester FROM feedback
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
            caller: row.get(5)?,
            from_requester: row.get(6)?,
            id,
        });
    }
    Ok(out)
}

/// A row selected with [`crate::store::codec::EXPORT_COLUMNS`].
pub(super) fn export_row(row: &Row<'_>) -> Result<ExportRow> {
    Ok(ExportRow {
        id: row.get(0)?,
        request: row.get(1)?,
        messages: row.get(2)?,
        label: row.get(3)?,
        note: row.get(4)?,
        policy_version: row.get(5)?,
        created: row.get(6)?,
    })
}
