//! The engine thread: continuous batching over a fixed set of slots (one llama.cpp sequence id
//! each). Every step puts one token per decoding slot plus prompt chunks of newly admitted
//! requests into a single `llama_decode`; requests join and leave between steps.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::LlamaVocab;
use tokio::sync::mpsc::UnboundedSender;

use super::text::{StopMatcher, Utf8Stream};
use super::{
    sampler, EngineConfig, EngineError, EngineStats, Event, FinishReason, GenerationParams, Prompt,
    Timings, Usage,
};

/// A request on its way to a slot.
#[derive(Debug)]
pub(crate) struct Job {
    prompt: Prompt,
    params: GenerationParams,
    tx: UnboundedSender<Event>,
    enqueued: Instant,
}

impl Job {
    pub(crate) fn new(
        prompt: Prompt,
        params: GenerationParams,
        tx: UnboundedSender<Event>,
    ) -> Self {
        Self {
            prompt,
            params,
            tx,
            enqueued: Instant::now(),
        }
    }
}

/// A request being served by one sequence of the shared context.
struct Slot {
    seq: i32,
    job: Job,
    sampler: LlamaSampler,
    /// Prompt tokens already decoded into the KV cache.
    fed: usize,
    /// Position of the next token of this sequence.
    n_past: i32,
    /// Sampled token that still has to be fed back.
    next: Option<LlamaToken>,
    generated: usize,
    utf8: Utf8Stream,
    stop: StopMatcher,
    /// Index in the current batch whose logits belong to this slot.
    logits_at: Option<i32>,
    admitted: Instant,
    first_token: Option<Instant>,
}

pub(crate) struct Worker<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    ctx_per_slot: i32,
    slots: Vec<Option<Slot>>,
    pending: VecDeque<Job>,
    stats: Arc<EngineStats>,
}

impl<'m> Worker<'m> {
    pub(crate) fn new(
        backend: &LlamaBackend,
        model: &'m LlamaModel,
        config: &EngineConfig,
        stats: Arc<EngineStats>,
    ) -> Result<Self, EngineError> {
        let threads = config.n_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get() as i32),
            |n| n.max(1) as i32,
        );
        // Every decoding slot needs one batch position per step.
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
            // One KV stream per slot: each request is guaranteed `ctx_per_slot` cells and
            // attends only over its own cells, not over every request's.
            .with_kv_unified(false)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = model
            .new_context(backend, params)
            .map_err(|e| EngineError::Context(e.to_string()))?;
        Ok(Self {
            model,
            ctx,
            batch: LlamaBatch::new(n_batch, 1),
            n_batch,
            ctx_per_slot: i32::try_from(config.ctx_per_slot).unwrap_or(i32::MAX),
            slots: (0..config.n_slots).map(|_| None).collect(),
            pending: VecDeque::new(),
            stats,
        })
    }

    fn idle(&self) -> bool {
        self.pending.is_empty() && self.slots.iter().all(Option::is_none)
    }

    /// Serves jobs until the channel closes and all admitted work is done.
    pub(crate) fn run(&mut self, jobs: &mpsc::Receiver<Job>) {
        loop {
            if self.idle() {
                match jobs.recv() {
                    Ok(job) => self.pending.push_back(job),
                    Err(_) => return,
                }
            }
            while let Ok(job) = jobs.try_recv() {
                self.pending.push_back(job);
            }
            self.drop_cancelled();
            self.admit();
            self.step();
        }
    }

    /// Frees slots and queue entries whose client went away.
    fn drop_cancelled(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].as_ref().is_some_and(|s| s.job.tx.is_closed()) {
                self.release(i);
            }
        }
        let before = self.pending.len();
        self.pending.retain(|j| !j.tx.is_closed());
        self.stats
            .queued
            .fetch_sub(before - self.pending.len(), Ordering::SeqCst);
    }

    fn admit(&mut self) {
        let n_vocab = self.model.n_vocab();
        for (i, place) in self.slots.iter_mut().enumerate() {
            if place.is_some() {
                continue;
            }
            let Some(job) = self.pending.pop_front() else {
                break;
            };
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            self.stats.active.fetch_add(1, Ordering::SeqCst);
            *place = Some(Slot {
                seq: i as i32,
                sampler: sampler::build(&job.params, n_vocab),
                stop: StopMatcher::new(job.params.stop.clone()),
                job,
                fed: 0,
                n_past: 0,
                next: None,
                generated: 0,
                utf8: Utf8Stream::default(),
                logits_at: None,
                admitted: Instant::now(),
                first_token: None,
            });
        }
    }

    /// One decode step over every slot that has work.
    fn step(&mut self) {
        self.batch.clear();
        let mut failed = None;
        let mut sequences = 0;
        // Decoding slots first: one token each keeps their latency flat while prompts stream in.
        for slot in self.slots.iter_mut().flatten() {
            slot.logits_at = None;
            if let Some(token) = slot.next.take() {
                if let Err(e) = self.batch.add(token, slot.n_past, &[slot.seq], true) {
                    failed = Some(e.to_string());
                }
                slot.logits_at = Some(self.batch.n_tokens() - 1);
                slot.n_past += 1;
                sequences += 1;
            }
        }
        for slot in self.slots.iter_mut().flatten() {
            let prompt = &slot.job.prompt.tokens;
            let room = self.n_batch.saturating_sub(self.batch.n_tokens() as usize);
            let take = (prompt.len() - slot.fed).min(room);
            for (j, token) in prompt[slot.fed..slot.fed + take].iter().enumerate() {
                let last = slot.fed + j + 1 == prompt.len();
                if let Err(e) = self.batch.add(*token, slot.n_past, &[slot.seq], last) {
                    failed = Some(e.to_string());
                }
                slot.n_past += 1;
            }
            slot.fed += take;
            sequences += usize::from(take > 0);
            if take > 0 && slot.fed == prompt.len() {
                slot.logits_at = Some(self.batch.n_tokens() - 1);
            }
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        self.stats
            .peak_batch_sequences
            .fetch_max(sequences, Ordering::Relaxed);
        let result = match failed {
            Some(e) => Err(e),
            None => self.ctx.decode(&mut self.batch).map_err(|e| e.to_string()),
        };
        if let Err(message) = result {
            tracing::error!(%message, "decode step failed; failing the requests in it");
            // The KV state of the batch's sequences is unknown: end every active request
            // rather than risk wrong output (decode failures are exceptional).
            for i in 0..self.slots.len() {
                if let Some(slot) = self.release(i) {
                    let _ = slot
                        .job
                        .tx
                        .send(Event::Error(EngineError::Decode(message.clone())));
                }
            }
            return;
        }
        let vocab = self.model.vocab();
        for i in 0..self.slots.len() {
            let Some(slot) = self.slots[i].as_mut() else {
                continue;
            };
            let Some(at) = slot.logits_at else { continue };
            let token = slot.sampler.sample(&self.ctx, at);
            self.stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
            if let Some(reason) = on_token(slot, token, &vocab, self.ctx_per_slot) {
                // Release first, so counters are settled by the time the client sees `Done`.
                if let Some(mut slot) = self.release(i) {
                    finish(&mut slot, reason);
                }
            }
        }
    }

    /// Empties slot `i`: its KV cells are cleared and it counts as free again.
    fn release(&mut self, i: usize) -> Option<Slot> {
        let slot = self.slots[i].take()?;
        if let Ok(seq) = u32::try_from(slot.seq) {
            let _ = self.ctx.clear_kv_cache_seq(Some(seq), None, None);
        }
        self.stats.active.fetch_sub(1, Ordering::SeqCst);
        Some(slot)
    }
}

/// Handles a sampled token: emits text, and says whether (and why) the generation ends.
fn on_token(
    slot: &mut Slot,
    token: LlamaToken,
    vocab: &LlamaVocab<'_>,
    ctx_per_slot: i32,
) -> Option<FinishReason> {
    slot.generated += 1;
    slot.first_token.get_or_insert_with(Instant::now);
    if vocab.is_eog(token) && !slot.job.params.ignore_eos {
        return Some(FinishReason::Stop);
    }
    let piece = vocab.token_to_piece(token, false, None);
    let text = slot.utf8.push(&piece);
    let out = slot.stop.push(&text);
    if !out.text.is_empty() {
        let _ = slot.job.tx.send(Event::Text(out.text));
    }
    if out.stopped {
        return Some(FinishReason::Stop);
    }
    let at_max = slot
        .job
        .params
        .max_tokens
        .is_some_and(|m| slot.generated >= m as usize);
    // The sampled token still needs a position when fed back.
    if at_max || slot.n_past + 1 > ctx_per_slot {
        return Some(FinishReason::Length);
    }
    slot.next = Some(token);
    None
}

/// Flushes held text and sends the final event.
fn finish(slot: &mut Slot, mut reason: FinishReason) {
    let tail = slot.utf8.finish();
    let out = slot.stop.push(&tail);
    let mut text = out.text;
    if out.stopped {
        reason = FinishReason::Stop;
    } else {
        text.push_str(&slot.stop.finish());
    }
    if !text.is_empty() {
        let _ = slot.job.tx.send(Event::Text(text));
    }
    let now = Instant::now();
    let first = slot.first_token.unwrap_or(now);
    let _ = slot.job.tx.send(Event::Done {
        finish_reason: reason,
        usage: Usage {
            prompt_tokens: slot.job.prompt.len(),
            completion_tokens: slot.generated,
        },
        timings: Timings {
            queued: slot.admitted.duration_since(slot.job.enqueued),
            prefill: first.duration_since(slot.admitted),
            decode: now.duration_since(first),
        },
    });
}
