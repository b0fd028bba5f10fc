//! The events of a response, whatever produced it: a plain generation, a deliberation or
//! adaptive's probe (`safety/deliberate.rs`), or a cached response replayed. One renderer
//! (`generate.rs`), the cache and the metrics read them.

use cada_core::{Event, FinishReason, Generation, Usage};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::safety::Decision;

/// One step of a response, in order: `Reasoning`*, `Decided`, `Content`*, then `Done` or `Error`.
#[derive(Debug)]
pub enum Out {
    Reasoning(String),
    Decided(Box<Decision>),
    Content(String),
    Done {
        finish: FinishReason,
        usage: Usage,
        reasoning_tokens: usize,
    },
    Error(ApiError),
}

/// Where a response's events come from.
#[derive(Debug)]
pub enum Source {
    /// A plain generation; the decision (no verdict) is yielded first.
    Plain {
        generation: Generation,
        decision: Option<Box<Decision>>,
    },
    /// A driver task (deliberation, or adaptive's probe followed by either path).
    Driven(mpsc::Receiver<Out>),
    /// A cached response's events, replayed.
    Replay(std::collections::VecDeque<Out>),
}

impl Source {
    pub fn plain(generation: Generation, decision: Decision) -> Self {
        Source::Plain {
            generation,
            decision: Some(Box::new(decision)),
        }
    }

    pub async fn next(&mut self) -> Option<Out> {
        match self {
            Source::Plain {
                generation,
                decision,
            } => {
                if let Some(d) = decision.take() {
                    return Some(Out::Decided(d));
                }
                Some(match generation.next().await? {
                    Event::Text(t) => Out::Content(t),
                    Event::Done {
                        finish_reason,
                        usage,
                        ..
                    } => Out::Done {
                        finish: finish_reason,
                        usage,
                        reasoning_tokens: 0,
                    },
                    Event::Error(e) => Out::Error(e.into()),
                    Event::Scores { .. } => Out::Error(ApiError::internal("unexpected scores")),
                })
            }
            Source::Driven(rx) => rx.recv().await,
            Source::Replay(events) => events.pop_front(),
        }
    }
}
