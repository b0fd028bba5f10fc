//! `POST /v1/completions` (legacy text completions): raw text in, raw text out. The prompt gets
//! the verdict of the caller's safety mode first, read over the prompt as one user turn, so a
//! request refused on chat is refused here too; an allowed prompt is continued on the base
//! model's weights as `off` continues it. A key's policy can disable the endpoint instead.
//! Served from the response cache when the same deterministic request was answered before.

use cada_core::{ChatMessage, ChatRole};
use hyper::http::request::Parts;

use super::{admit_tokens, look_up, replay_hit, safety_for, Caller};
use crate::error::ApiError;
use crate::generate::{self, Finisher, Reply};
use crate::openai::completion::CompletionRequest;
use crate::openai::response::{Envelope, Shape};
use crate::safety::deliberate::{self, ChatJob};
use crate::server::{RequestId, Response};
use crate::state::AppState;

pub async fn handle(
    state: &AppState,
    req: Parts,
    body: serde_json::Value,
) -> Result<Response, ApiError> {
    let request_id = req
        .extensions
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let caller = req.extensions.get::<Caller>().cloned();
    state
        .keys
        .safety_policy(caller.as_ref().map(|c| &*c.principal))
        .check_completions()?;
    let request = CompletionRequest::parse(&body, state.config.max_tokens_cap())?;
    let served = state.engine_for(&request.common.model)?;
    let engine = &served.engine;
    let safety = state.safety().ok_or_else(ApiError::not_ready)?;
    let (mode, enforce) = safety_for(state, caller.as_ref(), request.safety_mode, &served.name)?;
    let adapter = served.adapter.clone();
    let common = request.common;
    let lookup = look_up(state, caller.as_ref(), "text", &common.params, |k| {
        k.field("model", &served.name)
            .opt("adapter", adapter.as_deref())
            .field("rule", &format!("{:?}", served.rule))
            .field("policy", &safety.policy.version)
            .field("mode", mode.as_str())
            .field("enforce", if enforce { "1" } else { "0" })
            .field("prompt", &request.prompt)
            .params(&common.params)
    });
    let cache = lookup.status();
    let (hit, fill) = lookup.into_parts();
    let messages = vec![ChatMessage::new(ChatRole::User, request.prompt.clone())];
    let (source, settle) = if let Some(entry) = hit {
        replay_hit(caller.as_ref(), &entry)?
    } else {
        let settle = admit_tokens(caller.as_ref(), || {
            Ok(engine.text_prompt(&request.prompt).len())
        })?;
        let job = ChatJob {
            messages: messages.clone(),
            params: common.params,
            mode,
            rule: served.rule,
            enforce,
            text: Some(request.prompt),
        };
        crate::metrics::model_started();
        (deliberate::start(engine, safety, job).await?, settle)
    };
    let reply = Reply {
        source,
        envelope: Envelope::new(Shape::Text, &common.model, common.include_usage),
        include_reasoning: false,
        finisher: Some(Finisher {
            safety: std::sync::Arc::clone(safety),
            request_id,
            model: served.name.clone(),
            adapter: adapter.clone(),
            messages,
            caller: caller.as_ref().map(|c| c.principal.name.clone()),
            log_text: state.config.log_prompts,
        }),
        policy_version: Some(safety.policy.version.clone()),
        adapter,
        settle,
        cache,
        fill,
    };
    generate::respond(reply, common.stream).await
}
