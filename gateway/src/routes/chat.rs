//! `POST /v1/chat/completions`: parses the request, picks its safety mode and serves it, from
//! the response cache when the same deterministic request was answered before.

use hyper::http::request::Parts;

use super::{admit_tokens, look_up, replay_hit, Caller};
use crate::error::ApiError;
use crate::generate::{self, Finisher, Reply};
use crate::openai::chat::ChatRequest;
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
    let limits = &state.config.limits;
    let request = ChatRequest::parse(&body, state.config.max_tokens_cap(), limits.max_messages)?;
    let served = state.engine_for(&request.common.model)?;
    let engine = &served.engine;
    let safety = state.safety().ok_or_else(ApiError::not_ready)?;
    let (mode, enforce) =
        super::safety_for(state, caller.as_ref(), request.safety_mode, &served.name)?;
    let include_reasoning = request.include_reasoning && safety.config.allow_reasoning;
    let common = request.common;
    let lookup = look_up(state, caller.as_ref(), "chat", &common.params, |k| {
        k.field("model", &served.name)
            .opt("adapter", served.adapter.as_deref())
            .field("rule", &format!("{:?}", served.rule))
            .field("policy", &safety.policy.version)
            .field("mode", mode.as_str())
            .field("enforce", if enforce { "1" } else { "0" })
            .field("reasoning", if include_reasoning { "1" } else { "0" })
            .messages(&request.messages)
            .params(&common.params)
    });
    let cache = lookup.status();
    let (hit, fill) = lookup.into_parts();
    let (source, settle) = if let Some(entry) = hit {
        replay_hit(caller.as_ref(), &entry)?
    } else {
        let settle = admit_tokens(caller.as_ref(), || {
            Ok(engine.chat_prompt(&request.messages)?.len())
        })?;
        let job = ChatJob {
            messages: request.messages.clone(),
            params: common.params,
            mode,
            rule: served.rule,
            enforce,
            text: None,
        };
        crate::metrics::model_started();
        (deliberate::start(engine, safety, job).await?, settle)
    };
    let reply = Reply {
        source,
        envelope: Envelope::new(Shape::Chat, &common.model, common.include_usage),
        include_reasoning,
        finisher: Some(Finisher {
            safety: std::sync::Arc::clone(safety),
            request_id,
            model: served.name.clone(),
            adapter: served.adapter.clone(),
            messages: request.messages,
            caller: caller.as_ref().map(|c| c.principal.name.clone()),
            log_text: state.config.log_prompts,
        }),
        policy_version: Some(safety.policy.version.clone()),
        adapter: served.adapter.clone(),
        settle,
        cache,
        fill,
    };
    generate::respond(reply, common.stream).await
}
