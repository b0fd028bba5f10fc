//! The warm-up decode an engine runs before it reports ready, as llama-server does before it
//! listens: a crash in a kernel this CPU cannot run (llama.cpp #20824) then ends start-up, where
//! an orchestrator sees it, instead of the first user's request.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;

use super::Worker;
use crate::engine::EngineError;

impl<'m> Worker<'m> {
    /// Runs one decode through the kernels requests use, before the engine reports ready: a
    /// prefill of a few tokens, then one single-token step, then the cells are cleared, in each
    /// context. A
    /// kernel that crashes on this CPU (llama.cpp #20824) ends start-up here.
    pub(crate) fn warm_up(&mut self) -> Result<(), EngineError> {
        let vocab = self.model.vocab();
        let mut tokens = vocab.tokenize(b"The engine warms up before it serves.", true, false);
        tokens.truncate(
            self.n_batch
                .min(self.ctx_per_slot as usize)
                .saturating_sub(1)
                .max(1),
        );
        if tokens.is_empty() {
            tokens.push(vocab.bos());
        }
        let warm = |ctx: &mut LlamaContext<'m>, batch: &mut LlamaBatch<'static>| {
            let decode = |ctx: &mut LlamaContext<'m>, batch: &mut LlamaBatch<'static>| {
                ctx.decode(batch)
                    .map_err(|e| EngineError::Decode(format!("warm-up: {e}")))
            };
            batch.clear();
            let last = tokens.len() - 1;
            for (i, t) in tokens.iter().enumerate() {
                batch
                    .add(*t, i as i32, &[0], i == last)
                    .map_err(|e| EngineError::Decode(format!("warm-up: {e}")))?;
            }
            decode(ctx, batch)?;
            if (tokens.len() as i32) < self.ctx_per_slot {
                let next = ctx
                    .token_data_array_ith(last as i32)
                    .data
                    .iter()
                    .max_by(|a, b| a.logit().total_cmp(&b.logit()))
                    .map_or(tokens[0], |d| d.id());
                batch.clear();
                batch
                    .add(next, tokens.len() as i32, &[0], true)
                    .map_err(|e| EngineError::Decode(format!("warm-up: {e}")))?;
                decode(ctx, batch)?;
            }
            batch.clear();
            let _ = ctx.clear_kv_cache_seq(Some(0), None, None);
            Ok::<(), EngineError>(())
        };
        // Both contexts: the base one runs the same kernels without the adapter's.
        warm(&mut self.ctx, &mut self.batch)?;
        if let Some(base) = self.base_ctx.as_mut() {
            warm(base, &mut self.batch)?;
        }
        Ok(())
    }
}
