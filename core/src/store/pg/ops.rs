//! The store's calls as single attempts on the current connection (`PgStore` wraps each to
//! notice a broken connection), and the queries behind them.

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::Transaction;

use super::nearest::norm;
use super::rows::{
    case_from_row, export_row, feedback_from_row, opt_text, response_from_row, text, CASE_COLUMNS,
    FEEDBACK_COLUMNS, RESPONSE_COLUMNS,
};
use super::{PgStore, LOCK_CASES};
use crate::policy::Label;
use crate::store::codec::{
    check_precedents, from_json, from_requester, new_id, now, to_i64, to_json, union_into, Result,
    EXPORT_COLUMNS, PENDING_EXPORT_COLUMNS,
};
use crate::store::embedding;
use crate::store::{
    CaseFilter, ExportFilter, FeedbackEntry, FeedbackOutcome, Logged, NewCase, NewFeedback,
    ResponseRecord, StoreCounts, StoreError, StoredCase, TrainingCase, MAX_LIST_LIMIT,
};

type Params<'a> = Vec<Box<dyn ToSql + Sync + 'a>>;

impl PgStore {
    pub(super) fn record_response_once(&mut self, r: &ResponseRecord) -> Result<()> {
        check_precedents(&r.precedents)?;
        let keep = i64::try_from(self.config.response_retention).unwrap_or(i64::MAX);
        let max_age = i64::try_from(self.config.response_max_age_secs).unwrap_or(i64::MAX);
        let mut tx = self.client()?.transaction()?;
        tx.execute(
            "DELETE FROM responses WHERE response_id = $1",
            &[&text(&r.response_id)],
        )?;
        let newest: i64 = tx
            .query_one(
                "INSERT INTO responses (response_id, request_id, created, model, adapter,
                    policy_version, mode, messages, request, reasoning, answer, verdict,
                    verdict_probability, precedents, embedding, caller)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                 RETURNING seq",
                &[
                    &text(&r.response_id),
                    &text(&r.request_id),
                    &r.created,
                    &text(&r.model),
                    &opt_text(r.adapter.as_deref()),
                    &text(&r.policy_version),
                    &text(&r.mode),
                    &r.messages.to_string(),
                    &text(&r.request),
                    &opt_text(r.reasoning.as_deref()),
                    &text(&r.answer),
                    &r.verdict.map(Label::as_str),
                    &r.verdict_probability.map(f64::from),
                    &to_json(&r.precedents),
                    &r.embedding,
                    &opt_text(r.caller.as_deref()),
                ],
            )?
            .get(0);
        // `seq` grows with each insert, so everything `retention` below the newest is older.
        tx.execute(
            "DELETE FROM responses WHERE seq <= $1",
            &[&newest.saturating_sub(keep)],
        )?;
        tx.execute(
            "DELETE FROM responses WHERE created < $1",
            &[&now().saturating_sub(max_age)],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub(super) fn log_case_once(&mut self, case: NewCase) -> Result<Logged> {
        embedding::validate(&case.embedding)?;
        check_precedents(&case.precedents)?;
        let threshold = self.config.merge_threshold;
        let room = (self.config.pending_max, self.config.pending_max_age_secs);
        self.client()?;
        let mut tx = self.client.transaction()?;
        // Held to commit: the search below sees every case other replicas logged before.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_CASES])?;
        let logged = match self.nearest.nearest_pending(&mut tx, &case.embedding)? {
            Some((id, similarity)) if similarity >= threshold => {
                match merge_into(&mut tx, &id, &case)? {
                    Some(occurrences) => Logged::Merged { id, occurrences },
                    // Labelled since the search (labelling takes no advisory lock).
                    None => Logged::Inserted {
                        id: insert_new(&mut tx, &case, room)?,
                    },
                }
            }
            _ => Logged::Inserted {
                id: insert_new(&mut tx, &case, room)?,
            },
        };
        link_response(
            &mut tx,
            &case.response_id,
            logged.id(),
            case.caller.as_deref(),
        )?;
        tx.commit()?;
        Ok(logged)
    }

    pub(super) fn feedback_once(&mut self, feedback: NewFeedback) -> Result<FeedbackOutcome> {
        let room = (self.config.pending_max, self.config.pending_max_age_secs);
        let mut tx = self.client()?.transaction()?;
        // Two replicas taking feedback on the same unlogged response make one case, not two.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_CASES])?;
        let response_id = text(&feedback.response_id);
        let linked = tx.query_opt(
            "SELECT case_id, caller FROM case_responses WHERE response_id = $1",
            &[&response_id],
        )?;
        let (case_id, requester, created_case) = match linked {
            Some(row) => (row.try_get::<_, String>(0)?, row.try_get(1)?, false),
            None => {
                let record = tx
                    .query_opt(
                        &format!("SELECT {RESPONSE_COLUMNS} FROM responses WHERE response_id = $1"),
                        &[&response_id],
                    )?
                    .map(|row| response_from_row(&row))
                    .transpose()?
                    .ok_or_else(|| StoreError::NotFound {
                        what: "response",
                        id: feedback.response_id.clone(),
                    })?;
                let case = NewCase::from_record(record, vec!["feedback".to_owned()]);
                let id = insert_new(&mut tx, &case, room)?;
                link_response(&mut tx, &case.response_id, &id, case.caller.as_deref())?;
                (id, case.caller, true)
            }
        };
        let from_requester = from_requester(feedback.caller.as_deref(), requester.as_deref());
        let feedback_id = new_id("fb");
        tx.execute(
            "INSERT INTO feedback (id, case_id, response_id, label, comment, created, caller,
                from_requester)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &feedback_id,
                &case_id,
                &response_id,
                &feedback.label.as_str(),
                &opt_text(feedback.comment.as_deref()),
                &now(),
                &opt_text(feedback.caller.as_deref()),
                &from_requester,
            ],
        )?;
        tx.commit()?;
        Ok(FeedbackOutcome {
            feedback_id,
            case_id,
            created_case,
        })
    }

    pub(super) fn list_cases_once(&mut self, filter: &CaseFilter) -> Result<Vec<StoredCase>> {
        let client = self.client()?;
        let mut sql = format!("SELECT {CASE_COLUMNS} FROM cases WHERE true");
        let mut args: Params<'_> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, value: Box<dyn ToSql + Sync>| {
            args.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", args.len())));
        };
        if let Some(status) = filter.status {
            arg(&mut sql, " AND status = ?", Box::new(status.as_str()));
        }
        if let Some(since) = filter.since {
            arg(&mut sql, " AND created >= ?", Box::new(since));
        }
        if let Some(until) = filter.until {
            arg(&mut sql, " AND created < ?", Box::new(until));
        }
        if let Some(before) = &filter.before_id {
            let row = client
                .query_opt(
                    "SELECT created, seq FROM cases WHERE id = $1",
                    &[&text(before)],
                )?
                .ok_or_else(|| StoreError::NotFound {
                    what: "case",
                    id: before.clone(),
                })?;
            let (created, seq): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            arg(&mut sql, " AND (created, seq) < (?", Box::new(created));
            arg(&mut sql, ", ?)", Box::new(seq));
        }
        let limit = to_i64(filter.limit.min(MAX_LIST_LIMIT));
        arg(
            &mut sql,
            " ORDER BY created DESC, seq DESC LIMIT ?",
            Box::new(limit),
        );
        arg(&mut sql, " OFFSET ?", Box::new(to_i64(filter.offset)));
        let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
        let mut cases = client
            .query(sql.as_str(), &refs)?
            .iter()
            .map(case_from_row)
            .collect::<Result<Vec<_>>>()?;
        attach_feedback(client, &mut cases)?;
        Ok(cases)
    }

    pub(super) fn get_case_once(&mut self, id: &str) -> Result<StoredCase> {
        get_case(self.client()?, id)
    }

    pub(super) fn response_once(&mut self, response_id: &str) -> Result<Option<ResponseRecord>> {
        self.client()?
            .query_opt(
                &format!("SELECT {RESPONSE_COLUMNS} FROM responses WHERE response_id = $1"),
                &[&text(response_id)],
            )?
            .map(|row| response_from_row(&row))
            .transpose()
    }

    pub(super) fn label_case_once(
        &mut self,
        id: &str,
        label: Label,
        note: Option<String>,
        reviewer: Option<String>,
    ) -> Result<StoredCase> {
        let mut tx = self.client()?.transaction()?;
        let changed = tx.execute(
            "UPDATE cases SET status = 'labelled', label = $2, reviewer_note = $3,
                reviewer = $4, labelled_at = $5
             WHERE id = $1",
            &[
                &text(id),
                &label.as_str(),
                &opt_text(note.as_deref()),
                &opt_text(reviewer.as_deref()),
                &now(),
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound {
                what: "case",
                id: id.to_owned(),
            });
        }
        let case = get_case(&mut tx, id)?;
        tx.commit()?;
        Ok(case)
    }

    pub(super) fn export_once(&mut self, filter: &ExportFilter) -> Result<Vec<TrainingCase>> {
        let client = self.client()?;
        let rows = client.query(
            &format!(
                "SELECT {EXPORT_COLUMNS} FROM cases
                 WHERE status = 'labelled' AND ($1::bigint IS NULL OR labelled_at >= $1)
                 ORDER BY created, seq"
            ),
            &[&filter.since],
        )?;
        let mut out = rows
            .iter()
            .map(|row| export_row(row)?.reviewed())
            .collect::<Result<Vec<_>>>()?;
        if !filter.include_feedback {
            return Ok(out);
        }
        let rows = client.query(
            &format!(
                "SELECT {PENDING_EXPORT_COLUMNS} FROM cases c
                 WHERE status = 'pending'
                   AND (SELECT max(created) FROM feedback f WHERE f.case_id = c.id) >= $1
                 ORDER BY created, seq"
            ),
            &[&filter.since.unwrap_or(i64::MIN)],
        )?;
        let rows = rows.iter().map(export_row).collect::<Result<Vec<_>>>()?;
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let mut feedback = feedback_of(client, &ids)?;
        for row in rows {
            let entries = feedback.remove(&row.id).unwrap_or_default();
            out.extend(row.with_feedback(&entries, filter.feedback_quorum)?);
        }
        Ok(out)
    }

    pub(super) fn counts_once(&mut self) -> Result<StoreCounts> {
        let row = self.client()?.query_one(
            "SELECT (SELECT count(*) FROM cases WHERE status = 'pending'),
                    (SELECT count(*) FROM cases WHERE status = 'labelled'),
                    (SELECT count(*) FROM responses)",
            &[],
        )?;
        let count =
            |i: usize| -> Result<u64> { Ok(u64::try_from(row.try_get::<_, i64>(i)?).unwrap_or(0)) };
        Ok(StoreCounts {
            pending: count(0)?,
            labelled: count(1)?,
            responses: count(2)?,
        })
    }
}

/// Counts another occurrence of a pending case; returns the new count, or `None` when the case
/// is no longer pending.
fn merge_into(tx: &mut Transaction<'_>, id: &str, case: &NewCase) -> Result<Option<u32>> {
    let Some(row) = tx.query_opt(
        "SELECT occurrences, reasons FROM cases WHERE id = $1 AND status = 'pending' FOR UPDATE",
        &[&id],
    )?
    else {
        return Ok(None);
    };
    let (occurrences, reasons): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
    let mut reasons: Vec<String> = from_json(&reasons, "reasons", id)?;
    union_into(&mut reasons, &case.reasons);
    let occurrences = occurrences.saturating_add(1);
    tx.execute(
        "UPDATE cases SET occurrences = $2, last_seen = greatest(last_seen, $3), reasons = $4
         WHERE id = $1",
        &[&id, &occurrences, &case.created, &text(&to_json(&reasons))],
    )?;
    u32::try_from(occurrences)
        .map(Some)
        .map_err(|_| StoreError::corrupt(format!("case {id} has {occurrences} occurrences")))
}

/// Inserts a new pending case once there is room (see `StoreConfig::pending_max`): pending
/// cases without feedback not seen for `max_age_secs` go first. Run under the case lock.
fn insert_new(
    tx: &mut Transaction<'_>,
    case: &NewCase,
    (max, max_age_secs): (usize, u64),
) -> Result<String> {
    let max_age = i64::try_from(max_age_secs).unwrap_or(i64::MAX);
    tx.execute(
        "DELETE FROM cases c WHERE status = 'pending' AND last_seen < $1
           AND NOT EXISTS (SELECT 1 FROM feedback f WHERE f.case_id = c.id)",
        &[&now().saturating_sub(max_age)],
    )?;
    let pending: i64 = tx
        .query_one("SELECT count(*) FROM cases WHERE status = 'pending'", &[])?
        .try_get(0)?;
    if pending >= to_i64(max) {
        return Err(StoreError::Full { pending_max: max });
    }
    insert_case(tx, case)
}

fn insert_case(tx: &mut Transaction<'_>, case: &NewCase) -> Result<String> {
    let id = new_id("case");
    let mut reasons = Vec::new();
    union_into(&mut reasons, &case.reasons);
    tx.execute(
        "INSERT INTO cases (id, created, last_seen, occurrences, response_id, request_id, request,
            messages, model, adapter, policy_version, mode, reasoning, answer, verdict,
            verdict_probability, precedents, reasons, status, embedding, embedding_norm)
         VALUES ($1, $2, $2, 1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
            'pending', $17, $18)",
        &[
            &id,
            &case.created,
            &text(&case.response_id),
            &text(&case.request_id),
            &text(&case.request),
            &case.messages.to_string(),
            &text(&case.model),
            &opt_text(case.adapter.as_deref()),
            &text(&case.policy_version),
            &text(&case.mode),
            &opt_text(case.reasoning.as_deref()),
            &text(&case.answer),
            &case.verdict.map(Label::as_str),
            &case.verdict_probability.map(f64::from),
            &to_json(&case.precedents),
            &text(&to_json(&reasons)),
            &case.embedding,
            &norm(&case.embedding),
        ],
    )?;
    Ok(id)
}

/// Later feedback on `response_id` goes to `case_id`; `caller` made the request.
fn link_response(
    tx: &mut Transaction<'_>,
    response_id: &str,
    case_id: &str,
    caller: Option<&str>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO case_responses (response_id, case_id, caller) VALUES ($1, $2, $3)
         ON CONFLICT (response_id)
         DO UPDATE SET case_id = EXCLUDED.case_id, caller = EXCLUDED.caller",
        &[&text(response_id), &case_id, &opt_text(caller)],
    )?;
    Ok(())
}

fn get_case(client: &mut impl postgres::GenericClient, id: &str) -> Result<StoredCase> {
    let row = client
        .query_opt(
            &format!("SELECT {CASE_COLUMNS} FROM cases WHERE id = $1"),
            &[&text(id)],
        )?
        .ok_or_else(|| StoreError::NotFound {
            what: "case",
            id: id.to_owned(),
        })?;
    let mut cases = vec![case_from_row(&row)?];
    attach_feedback(client, &mut cases)?;
    Ok(cases.remove(0))
}

/// Fills in each case's feedback with one query.
fn attach_feedback(
    client: &mut impl postgres::GenericClient,
    cases: &mut [StoredCase],
) -> Result<()> {
    let ids: Vec<String> = cases.iter().map(|c| c.id.clone()).collect();
    let mut feedback = feedback_of(client, &ids)?;
    for case in cases {
        case.feedback = feedback.remove(&case.id).unwrap_or_default();
    }
    Ok(())
}

/// Feedback on each of `case_ids`, oldest first.
fn feedback_of(
    client: &mut impl postgres::GenericClient,
    case_ids: &[String],
) -> Result<HashMap<String, Vec<FeedbackEntry>>> {
    let mut out: HashMap<String, Vec<FeedbackEntry>> = HashMap::new();
    if case_ids.is_empty() {
        return Ok(out);
    }
    let rows = client.query(
        &format!(
            "SELECT {FEEDBACK_COLUMNS} FROM feedback
             WHERE case_id = ANY($1) ORDER BY created, seq"
        ),
        &[&case_ids],
    )?;
    for row in &rows {
        let (case_id, entry) = feedback_from_row(row)?;
        out.entry(case_id).or_default().push(entry);
    }
    Ok(out)
}
