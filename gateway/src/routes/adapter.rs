//! Adapter management under `/admin/adapter` (admin key): what is served and promoted, reload
//! (switch to the newly promoted version now instead of at the next registry poll), and
//! rollback (serve an earlier version again, fleet-wide for gateways that follow the registry).

use std::sync::Arc;

use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::error::ApiError;
use crate::openai::fields::Fields;
use crate::server::{json_response, read_json, Incoming, Response};
use crate::state::AppState;

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
            let registry = state.adapter_registry();
            let promoted =
                tokio::task::spawn_blocking(move || registry.rollback(version.as_deref()))
                    .await
                    .map_err(|e| ApiError::internal(e.to_string()))?
                    .map_err(|e| ApiError::invalid_value("version", e.to_string()))?;
            tracing::info!(
                promoted = promoted.as_deref().unwrap_or("none"),
                "adapter rolled back"
            );
            reload(state).await
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
        .map_err(|e| ApiError::internal(format!("adapter reload failed: {e}")))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"served": outcome.adapter, "changed": outcome.changed}),
    ))
}
