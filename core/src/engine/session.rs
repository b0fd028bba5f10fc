//! Sessions: a request that keeps its slot (and KV cache) across several operations, so the
//! gateway can generate reasoning, score the verdict token and then generate the answer without
//! processing the prompt again. One-shot generations are sessions with a single operation.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedReceiver;

use super::worker::{Command, Op, SessionId};
use super::{Engine, EngineError, Event, GenerationParams, Prompt, Weights};

/// An open session. Operations run in order; dropping the session frees its slot.
#[derive(Debug)]
pub struct Session {
    engine: Engine,
    id: SessionId,
    rx: UnboundedReceiver<Event>,
    /// Tokens sent so far (the session's context use, for callers' own checks).
    tokens: usize,
    /// A `last` operation was sent: the engine frees the slot on its own.
    finished: bool,
}

impl Session {
    pub(crate) fn open(engine: &Engine) -> Result<Self, EngineError> {
        let inner = &engine.inner;
        let queued = inner.stats.queued.fetch_add(1, Ordering::SeqCst);
        if queued >= inner.config.max_queue {
            inner.stats.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(EngineError::Overloaded { queued });
        }
        let id = inner.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // The engine's health keeps a (weak) sender too: a failure reaches the session even
        // when the engine thread can no longer send.
        if let Err(e) = inner.health.register(id, &tx) {
            inner.stats.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
        let opened = Command::Open {
            id,
            tx,
            enqueued: Instant::now(),
        };
        if !engine.send(opened) {
            inner.stats.queued.fetch_sub(1, Ordering::SeqCst);
            inner.health.unregister(id);
            return Err(EngineError::ShutDown);
        }
        Ok(Self {
            engine: engine.clone(),
            id,
            rx,
            tokens: 0,
            finished: false,
        })
    }

    /// Tokens appended so far (prompt and forced text, not generated tokens).
    pub fn appended_tokens(&self) -> usize {
        self.tokens
    }

    /// Appends `append` and generates; read the events with [`Session::next`]. With `last`, the
    /// slot is freed as soon as the generation ends (no further operations).
    pub fn generate(
        &mut self,
        append: Prompt,
        params: GenerationParams,
        last: bool,
    ) -> Result<(), EngineError> {
        self.tokens += append.len();
        self.send(
            Op::Generate {
                append: append.tokens,
                params,
                last,
            },
            last,
        )
    }

    /// Forgets everything appended and generated so far but keeps the slot, so a new prompt
    /// starts without queueing again.
    pub fn reset(&mut self) -> Result<(), EngineError> {
        self.reset_to(Weights::Adapted)
    }

    /// [`Session::reset`], continuing on `weights` (a session starts on [`Weights::Adapted`]).
    /// Weights change only with the context, so no KV cache mixes the two.
    pub fn reset_to(&mut self, weights: Weights) -> Result<(), EngineError> {
        self.tokens = 0;
        self.send(Op::Reset { weights }, false)
    }

    /// Appends `append` and returns the probability of each candidate's first token as the next
    /// token.
    pub async fn score(
        &mut self,
        append: Prompt,
        candidates: &[Prompt],
        last: bool,
    ) -> Result<Vec<f32>, EngineError> {
        self.send_score(append, candidates, last)?;
        scores(self.next().await)
    }

    /// Blocking variant of [`Session::score`].
    pub fn score_blocking(
        &mut self,
        append: Prompt,
        candidates: &[Prompt],
        last: bool,
    ) -> Result<Vec<f32>, EngineError> {
        self.send_score(append, candidates, last)?;
        scores(self.next_blocking())
    }

    fn send_score(
        &mut self,
        append: Prompt,
        candidates: &[Prompt],
        last: bool,
    ) -> Result<(), EngineError> {
        let candidates = candidates
            .iter()
            .map(|c| c.tokens.first().copied().ok_or(EngineError::EmptyPrompt))
            .collect::<Result<_, _>>()?;
        self.tokens += append.len();
        self.send(
            Op::Score {
                append: append.tokens,
                candidates,
                last,
            },
            last,
        )
    }

    fn send(&mut self, op: Op, last: bool) -> Result<(), EngineError> {
        if self.finished {
            return Err(EngineError::ShutDown);
        }
        self.finished = last;
        if self.engine.send(Command::Op { id: self.id, op }) {
            Ok(())
        } else {
            Err(EngineError::ShutDown)
        }
    }

    /// Next event of the current operation; `None` once the engine is gone (an engine that
    /// failed answers `Event::Error(EngineError::Failed)` instead).
    pub async fn next(&mut self) -> Option<Event> {
        let event = self.rx.recv().await;
        event.or_else(|| self.failed())
    }

    /// Blocking variant for callers outside an async runtime.
    pub fn next_blocking(&mut self) -> Option<Event> {
        let event = self.rx.blocking_recv();
        event.or_else(|| self.failed())
    }

    fn failed(&self) -> Option<Event> {
        let f = self.engine.inner.health.failure()?;
        Some(Event::Error(f.into()))
    }
}

/// The answer to a scoring operation.
fn scores(event: Option<Event>) -> Result<Vec<f32>, EngineError> {
    match event {
        Some(Event::Scores { probs }) => Ok(probs),
        Some(Event::Error(e)) => Err(e),
        _ => Err(EngineError::ShutDown),
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The worker also notices the closed event channel; this frees the slot without waiting
        // for the next step.
        self.engine.inner.health.unregister(self.id);
        self.engine.send(Command::Close { id: self.id });
    }
}
