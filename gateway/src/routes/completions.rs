//! `POST /v1/completions` (legacy text completions): raw text in, raw text out, served without
//! deliberation (there is no conversation to deliberate over; see README "Deliberative safety"),
//! from the response cache when the same deterministic request was answered before.

use hyper::Request;

use super::{admit_tokens, look_up, replay_hit, Caller};
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
    let body = read_json(req, &state.config.limits).await?;
    let request = CompletionRequest::parse(&body, state.config.max_tokens_cap())?;
    let served = state.engine_for(&request.common.model)?;
    let engine = &served.engine;
    let adapter = served.adapter.clone();
    let common = request.common;
    let lookup = look_up(state, caller.as_ref(), "text", &common.params, |k| {
        k.field("model", &served.name)
            .opt("adapter", adapter.as_deref())
            .field("prompt", &request.prompt)
            .params(&common.params)
    });
    let cache = lookup.status();
    let (hit, fill) = lookup.into_parts();
    let (source, settle) = if let Some(entry) = hit {
        replay_hit(caller.as_ref(), &entry)?
    } else {
        let prompt = engine.text_prompt(&request.prompt);
        let settle = admit_tokens(caller.as_ref(), || Ok(prompt.len()))?;
        crate::metrics::model_started();
        // Raw text goes to the base model: the adapter is trained for the deliberation format.
        let generation = engine.generate_on(prompt, common.params, cada_core::Weights::Base)?;
        (Source::plain(generation, Decision::default()), settle)
    };
    let reply = Reply {
        source,
        envelope: Envelope::new(Shape::Text, &common.model, common.include_usage),
        include_reasoning: false,
        finisher: None,
        policy_version: None,
        adapter,
        settle,
        cache,
        fill,
    };
    generate::respond(reply, common.stream).await
}
