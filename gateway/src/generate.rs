//! Turns a response's events ([`Out`]) into a complete JSON object or an SSE stream, for plain
//! and deliberated requests alike: reasoning goes to `reasoning_content` only when asked for and
//! allowed, never into `content`; the decision becomes headers and the `cada` extension; when the
//! response ends, the [`Finisher`] records it and logs it as a case if it was borderline.
//! Dropping the stream (client gone) drops the source, which frees the engine slot.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use cada_core::policy::refusal::{self, Refusal};
use cada_core::store::{NewCase, ResponseRecord};
use cada_core::{ChatMessage, Usage};
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::HeaderValue;
use serde_json::{json, Value};

use crate::cache::{CacheStatus, Fill};
use crate::error::ApiError;
use crate::events::{Out, Source};
use crate::openai::response::Envelope;
use crate::safety::{Decision, Safety};
use crate::server::{json_response, sse_response, Body, Response};
use crate::sse;

/// Records a finished response and logs it as a case when borderline.
#[derive(Debug)]
pub struct Finisher {
    pub safety: Arc<Safety>,
    pub request_id: String,
    pub model: String,
    /// Adapter the engine applied, recorded with the response.
    pub adapter: Option<String>,
    pub messages: Vec<ChatMessage>,
    /// Name of the key that asked (`None`: anonymous), stored so its own feedback on the
    /// answer counts as evidence, never as a vote.
    pub caller: Option<String>,
    /// Log the exchange's text (`log_prompts`); otherwise no user or model text is logged.
    pub log_text: bool,
}

/// What a finished response looked like, for the `cada` extension.
struct Verdicts {
    borderline: Vec<String>,
    refusal: Refusal,
    /// Logged as a case for review.
    logged: bool,
}

impl Finisher {
    fn finish(
        &self,
        envelope: &Envelope,
        decision: &Decision,
        reasoning: &str,
        answer: &str,
    ) -> Verdicts {
        let s = &self.safety;
        let refusal = refusal::detect(answer);
        let borderline = if decision.verdict.is_some() || decision.embedding.is_some() {
            decision.borderline(refusal, s.config.confidence_band)
        } else {
            Vec::new()
        };
        let mut messages = serde_json::to_value(
            self.messages
                .iter()
                .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
                .collect::<Vec<_>>(),
        )
        .unwrap_or(Value::Null);
        s.redactor.redact_value(&mut messages);
        let record = ResponseRecord {
            response_id: envelope.id.clone(),
            request_id: self.request_id.clone(),
            created: envelope.created as i64,
            model: self.model.clone(),
            adapter: self.adapter.clone(),
            policy_version: s.policy.version.clone(),
            mode: decision.mode.map_or("off", |m| m.as_str()).to_owned(),
            messages,
            request: s
                .redactor
                .redact(&crate::safety::deliberate::last_user_text(&self.messages)),
            reasoning: (!reasoning.is_empty()).then(|| s.redactor.redact(reasoning)),
            answer: s.redactor.redact(answer),
            verdict: decision.verdict,
            verdict_probability: decision.probability,
            precedents: decision.precedents.clone(),
            embedding: decision.embedding.clone(),
            caller: self.caller.clone(),
        };
        if self.log_text {
            tracing::info!(
                request_id = %self.request_id,
                request = %record.request,
                answer = %record.answer,
                "chat exchange"
            );
        }
        if decision.shadow
            && decision
                .verdict
                .is_some_and(|v| v != cada_core::policy::Label::Allow)
        {
            tracing::info!(
                request_id = %self.request_id,
                verdict = decision.verdict.map_or("none", |v| v.as_str()),
                "shadow mode: verdict not enforced, answered as off"
            );
        }
        let logged = decision.embedding.is_some() && !borderline.is_empty();
        match (&decision.embedding, borderline.is_empty()) {
            (Some(_), false) => {
                tracing::info!(request_id = %self.request_id, reasons = ?borderline, "borderline request logged as a case");
                s.store.record_response_detached(record.clone());
                s.store
                    .log_case_detached(NewCase::from_record(record, borderline.clone()));
            }
            _ => s.store.record_response_detached(record),
        }
        Verdicts {
            borderline,
            refusal,
            logged,
        }
    }
}

/// A response in the making.
#[derive(Debug)]
pub struct Reply {
    pub source: Source,
    pub envelope: Envelope,
    /// Reasoning is sent as `reasoning_content` (asked for and allowed).
    pub include_reasoning: bool,
    pub finisher: Option<Finisher>,
    /// Version stamped in headers and the `cada` extension.
    pub policy_version: Option<String>,
    /// Adapter version stamped in `x-cada-adapter` (`none` without one).
    pub adapter: Option<String>,
    /// Charges the caller's token budget for what the response used beyond its admission.
    pub settle: Option<Settle>,
    /// What the response cache did (`x-cache`).
    pub cache: CacheStatus,
    /// Stores the response in the cache when it ends well (a cacheable miss).
    pub fill: Option<Box<Fill>>,
}

/// A key's token charge still open when a response starts.
#[derive(Debug)]
pub struct Settle {
    pub principal: Arc<crate::auth::Principal>,
    /// Tokens charged at admission.
    pub charged: usize,
}

impl Settle {
    fn done(self, usage: &Usage) {
        let used = usage.prompt_tokens + usage.completion_tokens;
        let rest = used.saturating_sub(self.charged);
        self.principal
            .limiter
            .settle(u32::try_from(rest).unwrap_or(u32::MAX));
    }
}

/// Answers with a stream or one JSON object. Errors before any output become HTTP errors.
pub async fn respond(mut reply: Reply, stream: bool) -> Result<Response, ApiError> {
    // Wait for the decision unless reasoning is to be streamed as it comes.
    let mut early = Vec::new();
    let mut decision = None;
    let observed = crate::metrics::current();
    loop {
        let out = reply.source.next().await;
        crate::metrics::note(observed.as_deref(), out.as_ref());
        match out {
            Some(Out::Error(e)) => return Err(e),
            None => return Err(engine_gone()),
            Some(Out::Decided(d)) => {
                decision = Some(d);
                break;
            }
            Some(out) => {
                let streamed_reasoning = stream && reply.include_reasoning;
                early.push(out);
                if streamed_reasoning {
                    break;
                }
            }
        }
    }
    // The decision is read here, not through `State::next`: the cache entry notes it now.
    if let (Some(fill), Some(d)) = (&mut reply.fill, &decision) {
        fill.recorder.decided(d);
    }
    let mut headers = decision_headers(
        decision.as_deref(),
        reply.policy_version.as_deref(),
        &reply.envelope.model,
        reply.adapter.as_deref(),
    );
    headers.push(("x-cache", reply.cache.as_str().to_owned()));
    let mut st = State {
        reply,
        decision,
        early: early.into(),
        reasoning: String::new(),
        answer: String::new(),
        phase: Phase::Start,
        observed,
    };
    let mut resp = if stream {
        sse_response(into_stream(st))
    } else {
        complete(&mut st).await?
    };
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    Ok(resp)
}

fn decision_headers(
    decision: Option<&Decision>,
    policy: Option<&str>,
    model: &str,
    adapter: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("x-cada-model", model.to_owned()),
        ("x-cada-adapter", adapter.unwrap_or("none").to_owned()),
    ];
    if let Some(policy) = policy {
        h.push(("x-cada-policy-version", policy.to_owned()));
        let verdict = match decision {
            Some(d) => d.verdict.map_or("none", |v| v.as_str()),
            None => "deferred",
        };
        h.push(("x-cada-verdict", verdict.to_owned()));
        if let Some(d) = decision {
            if let Some(mode) = d.mode {
                h.push(("x-cada-safety-mode", mode.as_str().to_owned()));
            }
            h.push(("x-cada-enforcement", d.enforcement().to_owned()));
        }
    }
    h
}

struct State {
    reply: Reply,
    decision: Option<Box<Decision>>,
    /// Events read before the response started.
    early: std::collections::VecDeque<Out>,
    reasoning: String,
    answer: String,
    phase: Phase,
    /// The request's metrics, noting each event from the source.
    observed: Option<Arc<crate::metrics::RequestMetrics>>,
}

impl State {
    async fn next(&mut self) -> Option<Out> {
        let out = match self.early.pop_front() {
            Some(out) => Some(out),
            None => {
                let out = self.reply.source.next().await;
                crate::metrics::note(self.observed.as_deref(), out.as_ref());
                out
            }
        };
        if let (Some(fill), Some(out)) = (&mut self.reply.fill, &out) {
            fill.saw(out);
        }
        if let Some(Out::Done { usage, .. }) = &out {
            if let Some(settle) = self.reply.settle.take() {
                settle.done(usage);
            }
        }
        out
    }

    /// Whether the text is the gateway's refusal, which chat responses also carry in `refusal`
    /// as OpenAI's API carries a model's refusal (`content` keeps it for clients that only read
    /// `content`).
    fn refused(&self) -> bool {
        self.reply.envelope.shape == crate::openai::response::Shape::Chat
            && self.decision.as_deref().is_some_and(Decision::refused)
    }

    /// The `cada` extension, recording the response first when it has a finisher.
    fn finish(&self) -> Option<Value> {
        let f = self.reply.finisher.as_ref()?;
        let decision = self.decision.as_deref().cloned().unwrap_or_default();
        let v = f.finish(
            &self.reply.envelope,
            &decision,
            &self.reasoning,
            &self.answer,
        );
        if let (true, Some(m)) = (v.logged, &self.observed) {
            m.borderline(&v.borderline);
        }
        Some(decision.to_json(
            self.reply.policy_version.as_deref().unwrap_or(""),
            &v.borderline,
            Some(v.refusal),
        ))
    }
}

fn usage_json(usage: Usage, reasoning_tokens: usize) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    })
}

/// Waits for the whole response and answers one JSON object.
async fn complete(st: &mut State) -> Result<Response, ApiError> {
    loop {
        match st.next().await {
            Some(Out::Reasoning(t)) => st.reasoning.push_str(&t),
            Some(Out::Content(t)) => st.answer.push_str(&t),
            Some(Out::Decided(d)) => st.decision = Some(d),
            Some(Out::Done {
                finish,
                usage,
                reasoning_tokens,
            }) => {
                let env = &st.reply.envelope;
                let mut body = env.complete(&st.answer, finish, usage);
                body["usage"] = usage_json(usage, reasoning_tokens);
                if st.reply.include_reasoning {
                    body["choices"][0]["message"]["reasoning_content"] =
                        Value::String(st.reasoning.clone());
                }
                if st.refused() {
                    body["choices"][0]["message"]["refusal"] = Value::String(st.answer.clone());
                }
                if let Some(ext) = st.finish() {
                    body["cada"] = ext;
                }
                return Ok(json_response(hyper::StatusCode::OK, &body));
            }
            Some(Out::Error(e)) => return Err(e),
            None => return Err(engine_gone()),
        }
    }
}

/// The engine dropped a request without a final event (it shut down mid-generation).
fn engine_gone() -> ApiError {
    ApiError::internal("the engine stopped before finishing the request")
}

enum Phase {
    Start,
    Body,
    Usage(Usage, usize),
    Done,
    End,
}

fn into_stream(st: State) -> Body {
    let events = stream::unfold(st, |mut st| async move {
        let bytes = next_frame(&mut st).await?;
        Some((Ok::<_, Infallible>(Frame::data(bytes)), st))
    });
    StreamBody::new(events).boxed()
}

async fn next_frame(st: &mut State) -> Option<Bytes> {
    loop {
        match std::mem::replace(&mut st.phase, Phase::End) {
            Phase::Start => {
                st.phase = Phase::Body;
                if let Some(chunk) = st.reply.envelope.role_chunk() {
                    return Some(sse::event(&chunk));
                }
            }
            Phase::Body => {
                st.phase = Phase::Body;
                match st.next().await {
                    Some(Out::Reasoning(t)) => {
                        st.reasoning.push_str(&t);
                        if st.reply.include_reasoning {
                            let mut chunk = st.reply.envelope.text_chunk("");
                            chunk["choices"][0]["delta"] = json!({"reasoning_content": t});
                            return Some(sse::event(&chunk));
                        }
                    }
                    Some(Out::Decided(d)) => st.decision = Some(d),
                    Some(Out::Content(t)) => {
                        st.answer.push_str(&t);
                        let mut chunk = st.reply.envelope.text_chunk(&t);
                        if st.refused() {
                            chunk["choices"][0]["delta"]["refusal"] = Value::String(t);
                        }
                        return Some(sse::event(&chunk));
                    }
                    Some(Out::Done {
                        finish,
                        usage,
                        reasoning_tokens,
                    }) => {
                        st.phase = if st.reply.envelope.include_usage {
                            Phase::Usage(usage, reasoning_tokens)
                        } else {
                            Phase::Done
                        };
                        let mut chunk = st.reply.envelope.finish_chunk(finish);
                        if let Some(ext) = st.finish() {
                            chunk["cada"] = ext;
                        }
                        return Some(sse::event(&chunk));
                    }
                    Some(Out::Error(e)) => {
                        st.phase = Phase::Done;
                        return Some(sse::event(&e.body()));
                    }
                    None => {
                        st.phase = Phase::Done;
                        return Some(sse::event(&engine_gone().body()));
                    }
                }
            }
            Phase::Usage(usage, reasoning_tokens) => {
                st.phase = Phase::Done;
                let mut chunk = st.reply.envelope.usage_chunk(usage);
                chunk["usage"] = usage_json(usage, reasoning_tokens);
                return Some(sse::event(&chunk));
            }
            Phase::Done => {
                st.phase = Phase::End;
                return Some(sse::done());
            }
            Phase::End => return None,
        }
    }
}
