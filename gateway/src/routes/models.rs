//! `GET /v1/models` and `GET /v1/models/{id}`.

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::server::{json_response, Response};
use crate::state::{AppState, Served};

fn model_object(s: &Served) -> Value {
    let info = s.engine.info();
    json!({
        "id": s.name,
        "object": "model",
        "created": 0,
        "owned_by": "cada",
        "adapter": s.adapter,
        "meta": {
            "architecture": info.architecture,
            "n_params": info.n_params,
            "n_ctx_train": info.n_ctx_train,
            "n_ctx": info.ctx_per_slot,
            "n_vocab": info.n_vocab,
            "size_bytes": info.size_bytes,
        },
    })
}

pub fn list(state: &AppState) -> Response {
    let data: Vec<Value> = state
        .served()
        .map(|s| model_object(&s))
        .into_iter()
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

pub fn get(state: &AppState, id: &str) -> Result<Response, ApiError> {
    match state.served() {
        Some(s) if s.name == id => Ok(json_response(StatusCode::OK, &model_object(&s))),
        Some(_) => Err(ApiError::model_not_found(id)),
        None => Err(ApiError::not_ready()),
    }
}
