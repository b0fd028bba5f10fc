//! Routing: one file per endpoint group, all answering through the same error mapping.

pub mod adapter;
pub mod admin;
pub mod chat;
pub mod completions;
pub mod feedback;
pub mod health;
pub mod models;

use std::sync::Arc;

use hyper::{Method, Request};

use crate::error::ApiError;
use crate::server::{Incoming, Response};
use crate::state::AppState;

/// Dispatches a request to its handler.
pub async fn route(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response, ApiError> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match (method.clone(), path.as_str()) {
        (Method::GET, "/healthz") => Ok(health::live()),
        (Method::GET, "/readyz") => Ok(health::ready(&state)),
        (Method::GET, "/v1/models") => Ok(models::list(&state)),
        (Method::GET, p) if p.starts_with("/v1/models/") => {
            models::get(&state, &p["/v1/models/".len()..])
        }
        (Method::POST, "/v1/chat/completions") => chat::handle(&state, req).await,
        (Method::POST, "/v1/completions") => completions::handle(&state, req).await,
        (Method::POST, "/v1/feedback") => feedback::handle(&state, req).await,
        (_, p) if p == "/admin/cases" || p.starts_with("/admin/cases/") => {
            admin::route(&state, req).await
        }
        (_, p) if p == "/admin/adapter" || p.starts_with("/admin/adapter/") => {
            adapter::route(state, req).await
        }
        (
            _,
            "/healthz"
            | "/readyz"
            | "/v1/models"
            | "/v1/chat/completions"
            | "/v1/completions"
            | "/v1/feedback",
        ) => Err(ApiError::method_not_allowed(&method, &path)),
        _ => Err(ApiError::unknown_url(&method, &path)),
    }
}
