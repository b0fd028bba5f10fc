//! The writes behind `log_case` and `feedback`: finding the nearest pending case, merging into
//! it or inserting a new one, and linking responses to cases.

use rusqlite::{params, Transaction};

use crate::policy::Label;
use crate::store::codec::{from_json, new_id, now, to_i64, to_json, union_into, Result};
use crate::store::embedding;
use crate::store::{NewCase, StoreError};

/// The pending case most similar to `query`, with its similarity.
pub(super) fn nearest_pending(
    tx: &Transaction<'_>,
    query: &[f32],
) -> Result<Option<(String, f32)>> {
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
pub(super) fn merge_into(tx: &Transaction<'_>, id: &str, case: &NewCase) -> Result<u32> {
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

/// Makes room for a new pending case: drops pending cases without feedback not seen for
/// `max_age_secs`, then refuses when `max` are still pending.
pub(super) fn make_room(tx: &Transaction<'_>, max: usize, max_age_secs: u64) -> Result<()> {
    let max_age = i64::try_from(max_age_secs).unwrap_or(i64::MAX);
    tx.prepare_cached(
        "DELETE FROM cases WHERE status = 'pending' AND last_seen < ?1
           AND NOT EXISTS (SELECT 1 FROM feedback f WHERE f.case_id = cases.id)",
    )?
    .execute([now().saturating_sub(max_age)])?;
    let pending: i64 = tx
        .prepare_cached("SELECT count(*) FROM cases WHERE status = 'pending'")?
        .query_row([], |r| r.get(0))?;
    if pending >= to_i64(max) {
        return Err(StoreError::Full { pending_max: max });
    }
    Ok(())
}

pub(super) fn insert_case(tx: &Transaction<'_>, case: &NewCase) -> Result<String> {
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

/// Later feedback on `response_id` goes to `case_id`; `caller` made the request.
pub(super) fn link_response(
    tx: &Transaction<'_>,
    response_id: &str,
    case_id: &str,
    caller: Option<&str>,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO case_responses (response_id, case_id, caller)
         VALUES (?1, ?2, ?3)",
    )?
    .execute(params![response_id, case_id, caller])?;
    Ok(())
}
