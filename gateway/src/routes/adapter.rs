//! Adapter management under `/admin/adapter` (admin key): what is served and promoted, reload
//! (switch to the newly promoted version now instead of at the next registry poll), and
//! rollback (serve an earlier version again, fleet-wide for gateways that follow the registry).

use std::sync::Arc;

use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::config::AdapterChoice;
use crate::error::ApiError;
use crate::openai::fields::Fields;
use crate::server::{json_response, read_json, Incoming, Response};
use crate::state::{AppState, Reload};
use crate::GatewayError;

pub async fn route(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response, ApiError> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match (method.clone(), path.as_str()) {
        (Method::GET, "/admin/adapter") => show(&state),
        (Method::POST, "/admin/adapter/reload") => reload(state).await,
        (Method::POST, "/admin/adapter/rollback") => {
            let body = read_json(req, &state.config.limits).await?;
            let f = Fields::of(&body)?;
            let version = f.string("version")?.map(str::to_owned);
            if state.config.adapter != AdapterChoice::Promoted {
                return Err(ApiError::unsupported(
                    "version",
                    "this gateway serves a configured adapter, not the registry's promoted one",
                ));
            }
            let registry = state.adapter_registry();
            let target =
                tokio::task::spawn_blocking(move || registry.rollback_target(version.as_deref()))
                    .await
                    .map_err(|e| ApiError::internal(e.to_string()))?
                    .map_err(|e| ApiError::invalid_value("version", e.to_string()))?;
            // Loaded first, recorded after: a version this gateway refuses never reaches the
            // registry the other replicas follow.
            let s = Arc::clone(&state);
            let t = target.clone();
            let outcome = tokio::task::spawn_blocking(move || s.serve_version(t.as_deref()))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .map_err(reload_error)?;
            tracing::info!(
                promoted = target.as_deref().unwrap_or("none"),
                served = outcome.adapter.as_deref().unwrap_or("none"),
                "adapter rolled back"
            );
            Ok(outcome_response(&outcome))
        }
        _ => Err(ApiError::unknown_url(&method, &path)),
    }
}

fn show(state: &AppState) -> Result<Response, ApiError> {
    let index = state
        .adapter_registry()
        .read()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let versions: Vec<_> = index
        .versions
        .iter()
        .map(|v| {
            json!({
                "version": v.version,
                "parent": v.parent,
                "created": v.created,
                "data_hash": v.data_hash,
                "figures": v.figures,
            })
        })
        .collect();
    let served = state.served();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "served": served.as_ref().and_then(|s| s.adapter.clone()),
            "refuse_log_odds": served.as_ref().and_then(|s| s.rule.refuse_log_odds),
            "promoted": index.promoted,
            "versions": versions,
        }),
    ))
}

/// Switches to the adapter the configuration asks for now (loading it off the runtime).
async fn reload(state: Arc<AppState>) -> Result<Response, ApiError> {
    let outcome = tokio::task::spawn_blocking(move || state.reload_adapter())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(reload_error)?;
    Ok(outcome_response(&outcome))
}

fn outcome_response(outcome: &Reload) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"served": outcome.adapter, "changed": outcome.changed}),
    )
}

/// A refused version is the caller's to fix (422, the served adapter unchanged); anything else
/// is the gateway's.
fn reload_error(e: GatewayError) -> ApiError {
    match e {
        GatewayError::AdapterRefused { .. } => {
            ApiError::adapter_refused(format!("{e}; the served adapter is unchanged"))
        }
        other => ApiError::internal(format!("adapter reload failed: {other}")),
    }
}
