//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the model is loaded).

use hyper::StatusCode;
use serde_json::json;

use crate::server::{json_response, Response};
use crate::state::AppState;

pub fn live() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

pub fn ready(state: &AppState) -> Response {
    match state.served() {
        Some(s) => json_response(StatusCode::OK, &json!({"status": "ready", "model": s.name})),
        None => json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"status": "loading"})),
    }
}
