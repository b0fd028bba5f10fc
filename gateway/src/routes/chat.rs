//! `POST /v1/chat/completions`.

use hyper::Request;

use crate::error::ApiError;
use crate::generate;
use crate::openai::chat::ChatRequest;
use crate::openai::response::Shape;
use crate::server::{read_json, Incoming, Response};
use crate::state::AppState;

pub async fn handle(state: &AppState, req: Request<Incoming>) -> Result<Response, ApiError> {
    let limits = &state.config.limits;
    let body = read_json(req, limits.max_body_bytes).await?;
    let request = ChatRequest::parse(&body, state.config.max_tokens_cap(), limits.max_messages)?;
    let engine = state.engine_for(&request.common.model)?;
    let prompt = engine.chat_prompt(&request.messages)?;
    generate::respond(engine, prompt, request.common, Shape::Chat).await
}
