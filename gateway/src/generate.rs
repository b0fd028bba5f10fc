//! Runs one generation for either endpoint and turns its events into a complete response or
//! an SSE stream. Dropping the stream (client gone) drops the generation, which frees its slot.

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use cada_core::{Event, Generation, Usage};
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use cada_core::{Engine, Prompt};

use crate::error::ApiError;
use crate::openai::response::{Envelope, Shape};
use crate::openai::sampling::Common;
use crate::server::{json_response, sse_response, Body, Response};
use crate::sse;

/// Starts the generation and answers with a stream or a complete object, as the request asked.
pub async fn respond(
    engine: &Engine,
    prompt: Prompt,
    common: Common,
    shape: Shape,
) -> Result<Response, ApiError> {
    let generation = engine.generate(prompt, common.params)?;
    let envelope = Envelope::new(shape, &common.model, common.include_usage);
    if common.stream {
        Ok(sse_response(stream(generation, envelope)))
    } else {
        complete(generation, envelope).await
    }
}

/// Waits for the whole generation and answers one JSON object.
pub async fn complete(
    mut generation: Generation,
    envelope: Envelope,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    let started = Instant::now();
    loop {
        match generation.next().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done {
                finish_reason,
                usage,
                timings,
            }) => {
                tracing::debug!(id = %envelope.id, completion_tokens = usage.completion_tokens,
                    queued_ms = timings.queued.as_millis() as u64, prefill_ms = timings.prefill.as_millis() as u64,
                    decode_ms = timings.decode.as_millis() as u64, total_ms = started.elapsed().as_millis() as u64, "completed");
                let body = envelope.complete(&text, finish_reason, usage);
                return Ok(json_response(hyper::StatusCode::OK, &body));
            }
            Some(Event::Error(e)) => return Err(e.into()),
            Some(Event::Scores { .. }) | None => return Err(engine_gone()),
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
    Usage(Usage),
    Done,
    End,
}

struct StreamState {
    generation: Generation,
    envelope: Envelope,
    phase: Phase,
}

/// Streams the generation as SSE chunks, ending with `data: [DONE]`.
pub fn stream(generation: Generation, envelope: Envelope) -> Body {
    let state = StreamState {
        generation,
        envelope,
        phase: Phase::Start,
    };
    let events = stream::unfold(state, |mut st| async move {
        let bytes = next_frame(&mut st).await?;
        Some((Ok::<_, Infallible>(Frame::data(bytes)), st))
    });
    StreamBody::new(events).boxed()
}

async fn next_frame(st: &mut StreamState) -> Option<Bytes> {
    loop {
        match std::mem::replace(&mut st.phase, Phase::End) {
            Phase::Start => {
                st.phase = Phase::Body;
                if let Some(chunk) = st.envelope.role_chunk() {
                    return Some(sse::event(&chunk));
                }
            }
            Phase::Body => match st.generation.next().await {
                Some(Event::Text(t)) => {
                    st.phase = Phase::Body;
                    return Some(sse::event(&st.envelope.text_chunk(&t)));
                }
                Some(Event::Done {
                    finish_reason,
                    usage,
                    ..
                }) => {
                    st.phase = if st.envelope.include_usage {
                        Phase::Usage(usage)
                    } else {
                        Phase::Done
                    };
                    return Some(sse::event(&st.envelope.finish_chunk(finish_reason)));
                }
                Some(Event::Error(e)) => {
                    st.phase = Phase::Done;
                    return Some(sse::event(&ApiError::from(e).body()));
                }
                Some(Event::Scores { .. }) | None => {
                    st.phase = Phase::Done;
                    return Some(sse::event(&engine_gone().body()));
                }
            },
            Phase::Usage(usage) => {
                st.phase = Phase::Done;
                return Some(sse::event(&st.envelope.usage_chunk(usage)));
            }
            Phase::Done => {
                st.phase = Phase::End;
                return Some(sse::done());
            }
            Phase::End => return None,
        }
    }
}
