//! `POST /v1/completions` (legacy text completions): raw text in, raw text out, served without
//! deliberation (there is no conversation to deliberate over; see README "Deliberative safety").

use hyper::Request;

use super::{admit_tokens, Caller};
use crate::error::ApiError;
use crate::generate::{self, Reply};
use crate::openai::completion::CompletionRequest;
use crate::openai::response::{Envelope, Shape};
use crate::safety::deliberate::Source;
use crate::safety::Decision;
use crate::server::{read_json, Incoming, Response};
use crate::state::AppState;

pub async fn handle(state: &AppState, req: Request<Incoming>) -> Result<Response, ApiError> {
    let caller = req.extensions().get::<Caller>().cloned();
    let body = read_json(req, state.config.limits.max_body_bytes).await?;
    let request = CompletionRequest::parse(&body, state.config.max_tokens_cap())?;
    let served = state.engine_for(&request.common.model)?;
    let engine = &served.engine;
    let adapter = served.adapter.clone();
    let prompt = engine.text_prompt(&request.prompt);
    let settle = admit_tokens(caller.as_ref(), || Ok(prompt.len()))?;
    let common = request.common;
    crate::metrics::model_started();
    let generation = engine.generate(prompt, common.params)?;
    let reply = Reply {
        source: Source::plain(generation, Decision::default()),
        envelope: Envelope::new(Shape::Text, &common.model, common.include_usage),
        include_reasoning: false,
        finisher: None,
        policy_version: None,
        adapter,
        settle,
    };
    generate::respond(reply, common.stream).await
}
