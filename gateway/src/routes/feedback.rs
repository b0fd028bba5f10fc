//! `POST /v1/feedback`: a user's judgement of an answer (`over_refusal`, `harmful`, `correct`),
//! attached to the case logged from that response or turning the response into a new case.
//! Stored with the name of the key that sent it, so the export can tell independent keys from
//! the requester; within the key's own feedback budget. Answered only once the store has
//! written it.

use cada_core::store::{FeedbackLabel, NewFeedback};
use hyper::{Request, StatusCode};
use serde_json::json;

use super::Caller;
use crate::error::ApiError;
use crate::openai::fields::Fields;
use crate::server::{json_response, read_json, Incoming, Response};
use crate::state::AppState;

/// Longest accepted comment, in characters.
const MAX_COMMENT: usize = 4000;

pub async fn handle(state: &AppState, req: Request<Incoming>) -> Result<Response, ApiError> {
    let caller = req
        .extensions()
        .get::<Caller>()
        .map(|c| c.principal.clone());
    let budget = caller
        .as_ref()
        .map_or(&state.keys.anonymous_feedback, |p| &p.feedback);
    if let Err(e) = budget.admit_feedback() {
        tracing::info!(
            key = caller.as_ref().map_or("anonymous", |p| p.name.as_str()),
            "feedback rate limit reached"
        );
        state.metrics.rate_limited("feedback");
        return Err(e);
    }
    let body = read_json(req, &state.config.limits).await?;
    let f = Fields::of(&body)?;
    let response_id = f.required_string("response_id")?.to_owned();
    let label: FeedbackLabel = f.required_string("label")?.parse().map_err(|_| {
        ApiError::invalid_value(
            "label",
            "'label' must be one of over_refusal, harmful, correct.",
        )
    })?;
    let comment = f.string("comment")?;
    if comment.is_some_and(|c| c.chars().count() > MAX_COMMENT) {
        return Err(ApiError::invalid_value(
            "comment",
            format!("'comment' is longer than {MAX_COMMENT} characters."),
        ));
    }
    let safety = state.safety().ok_or_else(ApiError::not_ready)?;
    let comment = comment.map(|c| safety.redactor.redact(c));
    let outcome = safety
        .store
        .feedback(NewFeedback {
            response_id: response_id.clone(),
            label,
            comment,
            caller: caller.as_ref().map(|p| p.name.clone()),
        })
        .await
        .map_err(|e| match e {
            cada_core::store::StoreError::NotFound { .. } => ApiError::from(e)
                .with_message(format!("No response with id '{response_id}' is on record.")),
            other => other.into(),
        })?;
    tracing::info!(%response_id, label = ?label, case_id = %outcome.case_id, created_case = outcome.created_case, "feedback stored");
    state.metrics.feedback(label);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "object": "feedback",
            "id": outcome.feedback_id,
            "response_id": response_id,
            "label": label,
            "case_id": outcome.case_id,
            "created_case": outcome.created_case,
        }),
    ))
}
