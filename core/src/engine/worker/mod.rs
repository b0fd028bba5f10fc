//! The engine thread: continuous batching over a fixed set of slots (one llama.cpp sequence id
//! each). A slot belongs to one session from admission until the session closes; each session
//! operation appends tokens and then either generates or scores the next token. Every step puts
//! one token per generating slot plus chunks of appended tokens into a single `llama_decode`;
//! sessions join and leave between steps. llama.cpp applies an adapter to a whole context, so an
//! engine with an adapter keeps a second context on the same model without it (see `weights`):
//! a step decodes the adapter's sessions in one and the base model's in the other.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;

mod step;
mod warm_up;
mod weights;

use super::health::Health;
use super::text::{StopMatcher, Utf8Stream};
use super::{sampler, EngineConfig, EngineError, EngineStats, Event, GenerationParams, Weights};

/// Session identity, unique for the engine's lifetime.
pub(crate) type SessionId = u64;

/// What a session asks of its slot.
#[derive(Debug)]
pub(crate) enum Op {
    /// Decode `append`, then sample until a stop, EOS or `max_tokens`.
    Generate {
        append: Vec<LlamaToken>,
        params: GenerationParams,
        /// Free the slot when done (one-shot generations).
        last: bool,
    },
    /// Forget the session's context (KV cache and position) and keep the slot; what follows
    /// runs on `weights`.
    Reset { weights: Weights },
    /// Decode `append`, then report the probability of each candidate as the next token.
    Score {
        append: Vec<LlamaToken>,
        candidates: Vec<LlamaToken>,
        last: bool,
    },
}

/// Messages to the engine thread.
#[derive(Debug)]
pub(crate) enum Command {
    Open {
        id: SessionId,
        tx: UnboundedSender<Event>,
        enqueued: Instant,
    },
    Op {
        id: SessionId,
        op: Op,
    },
    Close {
        id: SessionId,
    },
}

/// A session waiting for a slot, with the operations it already sent.
struct Waiting {
    id: SessionId,
    tx: UnboundedSender<Event>,
    enqueued: Instant,
    ops: VecDeque<Op>,
}

/// A generation in progress.
struct Gen {
    params: GenerationParams,
    sampler: LlamaSampler,
    generated: usize,
    utf8: Utf8Stream,
    stop: StopMatcher,
    first_token: Option<Instant>,
}

enum Task {
    /// Waiting for the session's next operation.
    Idle,
    Generate(Box<Gen>),
    Score(Vec<LlamaToken>),
}

/// A session being served by one sequence of the shared context.
struct Slot {
    id: SessionId,
    seq: i32,
    tx: UnboundedSender<Event>,
    ops: VecDeque<Op>,
    task: Task,
    /// Release the slot once the current task ends.
    last: bool,
    /// Tokens of the current operation still to decode (from `fed` on).
    feed: Vec<LlamaToken>,
    fed: usize,
    /// Position of the next token of this sequence.
    n_past: i32,
    /// Sampled token not yet in the KV cache: fed next step, or first by the next operation.
    carry: Option<LlamaToken>,
    /// Index in the current batch whose logits belong to this slot.
    logits_at: Option<i32>,
    /// Time the session waited for this slot; reported once, by its first operation.
    queued: std::time::Duration,
    /// When the current operation started on the slot.
    started: Instant,
    /// What the slot's operations run on.
    weights: Weights,
}

pub(crate) struct Worker<'m> {
    model: &'m LlamaModel,
    /// The context with the engine's adapter applied (the only one without an adapter).
    ctx: LlamaContext<'m>,
    /// With an adapter: a context on the same model without it, for `Weights::Base` sessions.
    base_ctx: Option<LlamaContext<'m>>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    ctx_per_slot: i32,
    slots: Vec<Option<Slot>>,
    waiting: VecDeque<Waiting>,
    /// Session id to slot index.
    placed: HashMap<SessionId, usize>,
    stats: Arc<EngineStats>,
}

impl<'m> Worker<'m> {
    pub(crate) fn new(
        backend: &LlamaBackend,
        model: &'m LlamaModel,
        adapter: Option<&'m mut LlamaLoraAdapter>,
        config: &EngineConfig,
        stats: Arc<EngineStats>,
    ) -> Result<Self, EngineError> {
        let threads = config.n_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get() as i32),
            |n| n.max(1) as i32,
        );
        // Every generating slot needs one batch position per step.
        let n_batch = (config.n_batch as usize).max(config.n_slots);
        let n_ctx = u32::try_from(config.n_slots)
            .ok()
            .and_then(|s| s.checked_mul(config.ctx_per_slot))
            .and_then(NonZeroU32::new)
            .ok_or_else(|| EngineError::Context("n_slots * ctx_per_slot overflows".into()))?;
        let params = LlamaContextParams::default()
            .with_n_ctx(Some(n_ctx))
            .with_n_batch(n_batch as u32)
            .with_n_ubatch(n_batch as u32)
            .with_n_seq_max(config.n_slots as u32)
            // One KV stream per slot: each session is guaranteed `ctx_per_slot` cells and
            // attends only over its own cells, not over every session's.
            .with_kv_unified(false)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let params = match config.flash_attention.resolve(config.n_gpu_layers) {
            Some(on) => params.with_flash_attention_policy(i32::from(on)),
            None => params,
        };
        let (ctx, base_ctx) = weights::contexts(backend, model, adapter, params)?;
        Ok(Self {
            model,
            ctx,
            base_ctx,
            batch: LlamaBatch::new(n_batch, 1),
            n_batch,
            ctx_per_slot: i32::try_from(config.ctx_per_slot).unwrap_or(i32::MAX),
            slots: (0..config.n_slots).map(|_| None).collect(),
            waiting: VecDeque::new(),
            placed: HashMap::new(),
            stats,
        })
    }

    /// Whether a step would do anything: a session can be admitted or a slot has work.
    fn runnable(&self) -> bool {
        let free = self.slots.iter().any(Option::is_none);
        (free && !self.waiting.is_empty())
            || self
                .slots
                .iter()
                .flatten()
                .any(|s| !matches!(s.task, Task::Idle) || !s.ops.is_empty())
    }

    /// Serves sessions until the channel closes and all admitted work is done. Each step
    /// beats `health`'s heartbeat, so the watchdog can tell a hung step from waiting for work.
    pub(crate) fn run(&mut self, commands: &mpsc::Receiver<Command>, health: &Health) {
        let mut open = true;
        loop {
            if !self.runnable() {
                if !open {
                    return;
                }
                health.idle();
                let next = commands.recv();
                health.working();
                match next {
                    Ok(c) => self.handle(c),
                    Err(_) => {
                        open = false;
                        continue;
                    }
                }
            }
            health.working();
            while let Ok(c) = commands.try_recv() {
                self.handle(c);
            }
            self.drop_cancelled();
            self.admit();
            self.start_ops();
            #[cfg(feature = "test-util")]
            if self.runnable() {
                super::fault::raise_armed();
            }
            self.step();
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Open { id, tx, enqueued } => self.waiting.push_back(Waiting {
                id,
                tx,
                enqueued,
                ops: VecDeque::new(),
            }),
            Command::Op { id, op } => {
                if let Some(&i) = self.placed.get(&id) {
                    if let Some(slot) = self.slots[i].as_mut() {
                        slot.ops.push_back(op);
                    }
                } else if let Some(w) = self.waiting.iter_mut().find(|w| w.id == id) {
                    w.ops.push_back(op);
                }
            }
            Command::Close { id } => {
                if let Some(&i) = self.placed.get(&id) {
                    self.release(i);
                } else if let Some(at) = self.waiting.iter().position(|w| w.id == id) {
                    self.waiting.remove(at);
                    self.stats.queued.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// Frees slots and queue entries whose client went away.
    fn drop_cancelled(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].as_ref().is_some_and(|s| s.tx.is_closed()) {
                self.release(i);
            }
        }
        let before = self.waiting.len();
        self.waiting.retain(|w| !w.tx.is_closed());
        self.stats
            .queued
            .fetch_sub(before - self.waiting.len(), Ordering::SeqCst);
    }

    fn admit(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].is_some() {
                continue;
            }
            let Some(w) = self.waiting.pop_front() else {
                break;
            };
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            self.stats.active.fetch_add(1, Ordering::SeqCst);
            self.placed.insert(w.id, i);
            let now = Instant::now();
            self.slots[i] = Some(Slot {
                id: w.id,
                seq: i as i32,
                tx: w.tx,
                ops: w.ops,
                task: Task::Idle,
                last: false,
                feed: Vec::new(),
                fed: 0,
                n_past: 0,
                carry: None,
                logits_at: None,
                queued: now.duration_since(w.enqueued),
                started: now,
                weights: Weights::Adapted,
            });
        }
    }

    /// Idle slots take their session's next operation.
    fn start_ops(&mut self) {
        let n_vocab = self.model.n_vocab();
        for i in 0..self.slots.len() {
            let Some(slot) = self.slots[i].as_mut() else {
                continue;
            };
            if !matches!(slot.task, Task::Idle) {
                continue;
            }
            let Some(mut op) = slot.ops.pop_front() else {
                continue;
            };
            while let Op::Reset { weights } = op {
                weights::clear(&mut self.ctx, &mut self.base_ctx, slot.seq);
                slot.n_past = 0;
                slot.carry = None;
                slot.weights = weights;
                match slot.ops.pop_front() {
                    Some(next) => op = next,
                    None => break,
                }
            }
            if matches!(op, Op::Reset { .. }) {
                continue;
            }
            let (append, last, completion) = match &op {
                Op::Generate {
                    append,
                    params,
                    last,
                } => (append, *last, params.max_tokens.map_or(1, |m| m as usize)),
                Op::Score { append, last, .. } => (append, *last, 0),
                Op::Reset { .. } => continue,
            };
            let mut feed: Vec<LlamaToken> = slot.carry.iter().copied().collect();
            feed.extend_from_slice(append);
            let prompt = slot.n_past as usize + feed.len();
            let limit = self.ctx_per_slot as usize;
            let error = if feed.is_empty() {
                Some(EngineError::EmptyPrompt)
            } else if prompt + completion > limit {
                Some(EngineError::ContextLengthExceeded {
                    limit,
                    requested: prompt + completion,
                    prompt,
                    completion,
                })
            } else {
                None
            };
            if let Some(e) = error {
                let _ = slot.tx.send(Event::Error(e));
                if last {
                    self.release(i);
                }
                continue;
            }
            slot.carry = None;
            slot.feed = feed;
            slot.fed = 0;
            slot.last = last;
            slot.started = Instant::now();
            slot.task = match op {
                Op::Generate { params, .. } => Task::Generate(Box::new(Gen {
                    sampler: sampler::build(&params, n_vocab),
                    stop: StopMatcher::new(params.stop.clone()),
                    params,
                    generated: 0,
                    utf8: Utf8Stream::default(),
                    first_token: None,
                })),
                Op::Score { candidates, .. } => Task::Score(candidates),
                Op::Reset { .. } => Task::Idle,
            };
        }
    }

    /// Ends the slot's current task with its final event; one-shot slots are freed first, so
    /// counters are settled by the time the client sees the event.
    fn complete(&mut self, i: usize, event: Event) {
        let Some(slot) = self.slots[i].as_mut() else {
            return;
        };
        slot.task = Task::Idle;
        slot.feed.clear();
        slot.fed = 0;
        let tx = slot.tx.clone();
        if slot.last {
            self.release(i);
        }
        let _ = tx.send(event);
    }

    /// Empties slot `i`: its KV cells are cleared and it counts as free again.
    fn release(&mut self, i: usize) -> Option<Slot> {
        let slot = self.slots[i].take()?;
        self.placed.remove(&slot.id);
        weights::clear(&mut self.ctx, &mut self.base_ctx, slot.seq);
        self.stats.active.fetch_sub(1, Ordering::SeqCst);
        Some(slot)
    }
}
