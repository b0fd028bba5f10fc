//! PostgreSQL rows back into the store's types, and text made storable. A value that does not
//! decode is `corrupt`, named by record id and column, never quoted.

use std::borrow::Cow;

use postgres::types::FromSql;
use postgres::Row;

use crate::store::codec::{from_json, parse_label, ExportRow, Result};
use crate::store::{CaseStatus, FeedbackEntry, ResponseRecord, StoreError, StoredCase};

/// Columns of `cases` that [`case_from_row`] reads, in its order.
pub(super) const CASE_COLUMNS: &str =
    "id, created, last_seen, occurrences, response_id, request_id, request, \
     messages, model, adapter, policy_version, mode, reasoning, answer, verdict, \
     verdict_probability, precedents, reasons, status, label, reviewer_note, reviewer, labelled_at";

/// Columns of `responses` that [`response_from_row`] reads, in its order.
pub(super) const RESPONSE_COLUMNS: &str =
    "response_id, request_id, created, model, adapter, policy_version, mode, messages, \
     request, reasoning, answer, verdict, verdict_probability, precedents, embedding, caller";

/// Columns of `feedback` that [`feedback_from_row`] reads, in its order.
pub(super) const FEEDBACK_COLUMNS: &str =
    "case_id, id, response_id, label, comment, created, caller, from_requester";

/// PostgreSQL `text` cannot hold NUL, which JSON strings (and so requests) may: it is stored as
/// U+FFFD, the replacement character. Everything else is stored as given.
pub(super) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// Like [`text`] for optional columns.
pub(super) fn opt_text(s: Option<&str>) -> Option<Cow<'_, str>> {
    s.map(text)
}

/// Column `i`, or `corrupt` naming the column when its type does not match.
fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize, id: &str) -> Result<T> {
    row.try_get(i).map_err(|_| {
        let column = row.columns().get(i).map_or("?", |c| c.name());
        StoreError::corrupt(format!("`{column}` of {id} has an unexpected type"))
    })
}

pub(super) fn response_from_row(row: &Row) -> Result<ResponseRecord> {
    let id: String = get(row, 0, "a response")?;
    let verdict: Option<String> = get(row, 11, &id)?;
    Ok(ResponseRecord {
        request_id: get(row, 1, &id)?,
        created: get(row, 2, &id)?,
        model: get(row, 3, &id)?,
        adapter: get(row, 4, &id)?,
        policy_version: get(row, 5, &id)?,
        mode: get(row, 6, &id)?,
        messages: from_json(&get::<String>(row, 7, &id)?, "messages", &id)?,
        request: get(row, 8, &id)?,
        reasoning: get(row, 9, &id)?,
        answer: get(row, 10, &id)?,
        verdict: parse_label(verdict.as_deref(), &id)?,
        verdict_probability: get::<Option<f64>>(row, 12, &id)?.map(|p| p as f32),
        precedents: from_json(&get::<String>(row, 13, &id)?, "precedents", &id)?,
        embedding: get(row, 14, &id)?,
        caller: get(row, 15, &id)?,
        response_id: id,
    })
}

/// A case row as selected with [`CASE_COLUMNS`], without its feedback.
pub(super) fn case_from_row(row: &Row) -> Result<StoredCase> {
    let id: String = get(row, 0, "a case")?;
    let occurrences: i64 = get(row, 3, &id)?;
    let verdict: Option<String> = get(row, 14, &id)?;
    let status: String = get(row, 18, &id)?;
    let label: Option<String> = get(row, 19, &id)?;
    Ok(StoredCase {
        created: get(row, 1, &id)?,
        last_seen: get(row, 2, &id)?,
        occurrences: u32::try_from(occurrences)
            .map_err(|_| StoreError::corrupt(format!("case {id} has {occurrences} occurrences")))?,
        response_id: get(row, 4, &id)?,
        request_id: get(row, 5, &id)?,
        request: get(row, 6, &id)?,
        messages: from_json(&get::<String>(row, 7, &id)?, "messages", &id)?,
        model: get(row, 8, &id)?,
        adapter: get(row, 9, &id)?,
        policy_version: get(row, 10, &id)?,
        mode: get(row, 11, &id)?,
        reasoning: get(row, 12, &id)?,
        answer: get(row, 13, &id)?,
        verdict: parse_label(verdict.as_deref(), &id)?,
        verdict_probability: get::<Option<f64>>(row, 15, &id)?.map(|p| p as f32),
        precedents: from_json(&get::<String>(row, 16, &id)?, "precedents", &id)?,
        reasons: from_json(&get::<String>(row, 17, &id)?, "reasons", &id)?,
        status: status
            .parse::<CaseStatus>()
            .map_err(|_| StoreError::corrupt(format!("case {id} has an unknown status")))?,
        label: parse_label(label.as_deref(), &id)?,
        reviewer_note: get(row, 20, &id)?,
        reviewer: get(row, 21, &id)?,
        labelled_at: get(row, 22, &id)?,
        feedback: Vec::new(),
        id,
    })
}

/// A feedback row ([`FEEDBACK_COLUMNS`]) with its case id.
pub(super) fn feedback_from_row(row: &Row) -> Result<(String, FeedbackEntry)> {
    let id: String = get(row, 1, "feedback")?;
    let label: String = get(row, 3, &id)?;
    Ok((
        get(row, 0, &id)?,
        FeedbackEntry {
            response_id: get(row, 2, &id)?,
            label: label
                .parse()
                .map_err(|_| StoreError::corrupt(format!("feedback {id} has an unknown label")))?,
            comment: get(row, 4, &id)?,
            created: get(row, 5, &id)?,
            caller: get(row, 6, &id)?,
            from_requester: get(row, 7, &id)?,
            id,
        },
    ))
}

/// A row selected with [`crate::store::codec::EXPORT_COLUMNS`].
pub(super) fn export_row(row: &Row) -> Result<ExportRow> {
    let id: String = get(row, 0, "a case")?;
    Ok(ExportRow {
        request: get(row, 1, &id)?,
        messages: get(row, 2, &id)?,
        label: get(row, 3, &id)?,
        note: get(row, 4, &id)?,
        policy_version: get(row, 5, &id)?,
        created: get(row, 6, &id)?,
        id,
    })
}
