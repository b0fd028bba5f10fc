//! `POST /v1/completions` (legacy text completions).

use hyper::Request;

use crate::error::ApiError;
use crate::generate;
use crate::openai::completion::CompletionRequest;
use crate::openai::response::Shape;
use crate::server::{read_json, Incoming, Response};
use crate::state::AppState;

pub async fn handle(state: &AppState, req: Request<Incoming>) -> Result<Response, ApiError> {
    let body = read_json(req, state.config.limits.max_body_bytes).await?;
    let request = CompletionRequest::parse(&body, state.config.max_tokens_cap())?;
    let engine = state.engine_for(&request.common.model)?;
    let prompt = engine.text_prompt(&request.prompt);
    generate::respond(engine, prompt, request.common, Shape::Text).await
}
