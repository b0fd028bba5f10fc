//! Review endpoints under `/admin/` for safety teams: list cases by status and time, read one,
//! label it, and export labelled cases as the JSONL the trainer reads. Routing checks the
//! admin scope (see `auth`).

use std::collections::HashMap;

use cada_core::policy::Label;
use cada_core::store::{
    export_jsonl, CaseFilter, CaseStatus, ExportFilter, DEFAULT_FEEDBACK_QUORUM,
};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::error::ApiError;
use crate::openai::fields::Fields;
use crate::server::{json_response, read_json, text_response, Incoming, Response};
use crate::state::AppState;

pub async fn route(state: &AppState, req: Request<Incoming>) -> Result<Response, ApiError> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let rest = path
        .trim_start_matches("/admin/cases")
        .trim_start_matches('/');
    match (method.clone(), rest) {
        (Method::GET, "") => list(state, &query).await,
        (Method::GET, "export") => export(state, &query).await,
        (Method::GET, id) if !id.contains('/') => {
            let case = store(state)?.get_case(id).await?;
            Ok(json_response(StatusCode::OK, &json!(case)))
        }
        (Method::POST, p) if p.ends_with("/label") && p.matches('/').count() == 1 => {
            let id = p.trim_end_matches("/label").to_owned();
            label(state, &id, req).await
        }
        _ => Err(ApiError::unknown_url(&method, &path)),
    }
}

fn store(state: &AppState) -> Result<&cada_core::store::StoreHandle, ApiError> {
    Ok(&state.safety().ok_or_else(ApiError::not_ready)?.store)
}

fn int(query: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    query
        .get(name)
        .map(|v| {
            v.parse()
                .map_err(|_| ApiError::invalid_value(name, format!("'{name}' must be an integer.")))
        })
        .transpose()
}

async fn list(state: &AppState, query: &HashMap<String, String>) -> Result<Response, ApiError> {
    let status = query
        .get("status")
        .map(|s| {
            s.parse::<CaseStatus>().map_err(|_| {
                ApiError::invalid_value("status", "'status' must be pending or labelled.")
            })
        })
        .transpose()?;
    let mut filter = CaseFilter {
        status,
        since: int(query, "since")?,
        until: int(query, "until")?,
        before_id: query.get("before").cloned(),
        ..CaseFilter::default()
    };
    if let Some(limit) = int(query, "limit")? {
        filter.limit = usize::try_from(limit)
            .map_err(|_| ApiError::invalid_value("limit", "'limit' must be positive."))?;
    }
    if let Some(offset) = int(query, "offset")? {
        filter.offset = usize::try_from(offset)
            .map_err(|_| ApiError::invalid_value("offset", "'offset' must not be negative."))?;
    }
    let cases = store(state)?.list_cases(filter).await?;
    let last = cases.last().map(|c| c.id.clone());
    Ok(json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": cases, "last_id": last}),
    ))
}

async fn label(state: &AppState, id: &str, req: Request<Incoming>) -> Result<Response, ApiError> {
    let body = read_json(req, &state.config.limits).await?;
    let f = Fields::of(&body)?;
    let label: Label = f.required_string("label")?.parse().map_err(|_| {
        ApiError::invalid_value(
            "label",
            "'label' must be one of allow, refuse, safe_complete.",
        )
    })?;
    let note = f.string("note")?.map(str::to_owned);
    let reviewer = f.string("reviewer")?.map(str::to_owned);
    let case = store(state)?.label_case(id, label, note, reviewer).await?;
    tracing::info!(case_id = %id, %label, "case labelled");
    Ok(json_response(StatusCode::OK, &json!(case)))
}

async fn export(state: &AppState, query: &HashMap<String, String>) -> Result<Response, ApiError> {
    let include_feedback = match query.get("include_feedback").map(String::as_str) {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(_) => {
            return Err(ApiError::invalid_value(
                "include_feedback",
                "'include_feedback' must be true or false.",
            ))
        }
    };
    let feedback_quorum = match int(query, "feedback_quorum")? {
        None => DEFAULT_FEEDBACK_QUORUM,
        Some(q) => u32::try_from(q).ok().filter(|q| *q >= 1).ok_or_else(|| {
            ApiError::invalid_value(
                "feedback_quorum",
                "'feedback_quorum' must be a whole number of at least 1.",
            )
        })?,
    };
    let cases = store(state)?
        .export(ExportFilter {
            include_feedback,
            feedback_quorum,
            since: int(query, "since")?,
        })
        .await?;
    let mut resp = text_response(StatusCode::OK, export_jsonl(&cases));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}
