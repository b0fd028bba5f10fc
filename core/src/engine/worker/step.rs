//! One decode step of the engine thread: every slot of a weight group with work puts its next
//! token (generating slots) or its next prompt chunk into one `llama_decode` on that group's
//! context; then each slot's logits are sampled or scored, and finished tasks end.

use std::sync::atomic::Ordering;
use std::time::Instant;

use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::LlamaVocab;

use super::{weights, Slot, Task, Worker};
use crate::engine::{EngineError, Event, FinishReason, Timings, Usage, Weights};

impl<'m> Worker<'m> {
    /// One decode step: every slot with work, each weight group in its own context.
    pub(super) fn step(&mut self) {
        self.step_group(Weights::Adapted);
        if self.base_ctx.is_some() {
            self.step_group(Weights::Base);
        }
    }

    /// One decode over every slot of one weight group that has work (every slot when the engine
    /// has no adapter: then both kinds of slot run on the same weights).
    fn step_group(&mut self, group: Weights) {
        self.batch.clear();
        let mut failed = None;
        let mut sequences = 0;
        let split = self.base_ctx.is_some();
        let in_group = |slot: &Slot| !split || slot.weights == group;
        for slot in self.slots.iter_mut().flatten() {
            if in_group(slot) {
                slot.logits_at = None;
            }
        }
        // Generating slots first: one token each keeps their latency flat while prompts stream in.
        for slot in self.slots.iter_mut().flatten() {
            if !in_group(slot)
                || !matches!(slot.task, Task::Generate(_))
                || slot.fed < slot.feed.len()
            {
                continue;
            }
            if let Some(token) = slot.carry.take() {
                if let Err(e) = self.batch.add(token, slot.n_past, &[slot.seq], true) {
                    failed = Some(e.to_string());
                }
                slot.logits_at = Some(self.batch.n_tokens() - 1);
                slot.n_past += 1;
                sequences += 1;
            }
        }
        for slot in self.slots.iter_mut().flatten() {
            if !in_group(slot) || matches!(slot.task, Task::Idle) || slot.fed == slot.feed.len() {
                continue;
            }
            let room = self.n_batch.saturating_sub(self.batch.n_tokens() as usize);
            let take = (slot.feed.len() - slot.fed).min(room);
            for j in 0..take {
                let last = slot.fed + j + 1 == slot.feed.len();
                let token = slot.feed[slot.fed + j];
                if let Err(e) = self.batch.add(token, slot.n_past, &[slot.seq], last) {
                    failed = Some(e.to_string());
                }
                slot.n_past += 1;
            }
            slot.fed += take;
            sequences += usize::from(take > 0);
            if take > 0 && slot.fed == slot.feed.len() {
                slot.logits_at = Some(self.batch.n_tokens() - 1);
            }
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        self.stats
            .peak_batch_sequences
            .fetch_max(sequences, Ordering::Relaxed);
        let ctx = weights::context(&mut self.ctx, &mut self.base_ctx, group);
        let result = match failed {
            Some(e) => Err(e),
            None => ctx.decode(&mut self.batch).map_err(|e| e.to_string()),
        };
        if let Err(message) = result {
            tracing::error!(%message, "decode step failed; failing the requests in it");
            // The KV state of the batch's sequences is unknown: end every session rather than
            // risk wrong output (decode failures are exceptional).
            for i in 0..self.slots.len() {
                if let Some(slot) = self.release(i) {
                    let _ = slot
                        .tx
                        .send(Event::Error(EngineError::Decode(message.clone())));
                }
            }
            return;
        }
        let vocab = self.model.vocab();
        let mut ended = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot.as_mut().filter(|s| in_group(s)) else {
                continue;
            };
            let Some(at) = slot.logits_at else { continue };
            let done = match &mut slot.task {
                Task::Idle => None,
                Task::Generate(gen) => {
                    let token = gen.sampler.sample(ctx, at);
                    self.stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
                    on_token(slot, token, &vocab, self.ctx_per_slot)
                        .map(|reason| finish(slot, reason))
                }
                Task::Score(candidates) => Some(Event::Scores {
                    probs: probabilities(ctx.get_logits_ith(at), candidates),
                }),
            };
            if let Some(event) = done {
                ended.push((i, event));
            }
        }
        for (i, event) in ended {
            self.complete(i, event);
        }
    }
}

/// Probability of each candidate token under the softmax over the whole vocabulary.
fn probabilities(logits: &[f32], candidates: &[LlamaToken]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|l| f64::from(l - max).exp()).sum();
    candidates
        .iter()
        .map(|t| {
            usize::try_from(t.0)
                .ok()
                .and_then(|i| logits.get(i))
                .map_or(0.0, |l| (f64::from(l - max).exp() / sum) as f32)
        })
        .collect()
}

/// Handles a sampled token: emits text, and says whether (and why) the generation ends.
fn on_token(
    slot: &mut Slot,
    token: LlamaToken,
    vocab: &LlamaVocab<'_>,
    ctx_per_slot: i32,
) -> Option<FinishReason> {
    let Task::Generate(gen) = &mut slot.task else {
        return None;
    };
    gen.generated += 1;
    gen.first_token.get_or_insert_with(Instant::now);
    if vocab.is_eog(token) && !gen.params.ignore_eos {
        // An end-of-turn token never goes into the KV cache: a later operation continues the turn.
        return Some(FinishReason::Stop);
    }
    // Fed at the next step, or first by the session's next operation.
    slot.carry = Some(token);
    let piece = vocab.token_to_piece(token, false, None);
    let text = gen.utf8.push(&piece);
    let out = gen.stop.push(&text);
    if !out.text.is_empty() {
        let _ = slot.tx.send(Event::Text(out.text));
    }
    if out.stopped {
        return Some(FinishReason::Stop);
    }
    let at_max = gen
        .params
        .max_tokens
        .or(gen.params.limit)
        .is_some_and(|m| gen.generated >= m as usize);
    // The sampled token still needs a position when fed back.
    if at_max || slot.n_past + 1 > ctx_per_slot {
        return Some(FinishReason::Length);
    }
    None
}

/// Flushes held text and builds the final event of a generation.
fn finish(slot: &mut Slot, mut reason: FinishReason) -> Event {
    let Task::Generate(gen) = &mut slot.task else {
        return Event::Error(EngineError::Decode("no generation to finish".into()));
    };
    let tail = gen.utf8.finish();
    let out = gen.stop.push(&tail);
    let mut text = out.text;
    if out.stopped {
        reason = FinishReason::Stop;
    } else {
        text.push_str(&gen.stop.finish());
    }
    if !text.is_empty() {
        let _ = slot.tx.send(Event::Text(text));
    }
    let now = Instant::now();
    let first = gen.first_token.unwrap_or(now);
    Event::Done {
        finish_reason: reason,
        stop: gen.stop.matched().map(str::to_owned),
        usage: Usage {
            prompt_tokens: slot.feed.len(),
            completion_tokens: gen.generated,
        },
        timings: Timings {
            queued: std::mem::take(&mut slot.queued),
            prefill: first.duration_since(slot.started),
            decode: now.duration_since(first),
        },
    }
}
