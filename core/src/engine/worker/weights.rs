//! Which context a session's weights run in. llama.cpp applies an adapter to a whole context, not
//! to a sequence, so an engine with an adapter keeps two contexts on the one model: the adapter's
//! and the base model's, each with its own KV cache. Switching the adapter on one shared context
//! instead makes llama.cpp re-reserve its compute graphs at every switch, which mixed traffic
//! (the adapter's probes beside the base model's answers) paid at every step. Two decodes per
//! step still cost more than one batch of the same sessions: `cargo bench -p cada-core --bench
//! weights` measures both.

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};

use crate::engine::{EngineError, Weights};

/// The context for `Weights::Adapted` (the adapter applied, or the only context without one)
/// and, with an adapter, a second one for `Weights::Base`. Each holds every slot's sequence.
pub(super) fn contexts<'m>(
    backend: &LlamaBackend,
    model: &'m LlamaModel,
    adapter: Option<&'m mut LlamaLoraAdapter>,
    params: LlamaContextParams,
) -> Result<(LlamaContext<'m>, Option<LlamaContext<'m>>), EngineError> {
    let new = |params: LlamaContextParams| {
        model
            .new_context(backend, params)
            .map_err(|e| EngineError::Context(e.to_string()))
    };
    let Some(adapter) = adapter else {
        return Ok((new(params)?, None));
    };
    let mut adapted = new(params.clone())?;
    adapted
        .lora_adapter_set(adapter, 1.0)
        .map_err(|e| EngineError::Context(format!("cannot apply the adapter: {e}")))?;
    Ok((adapted, Some(new(params)?)))
}

/// The context `weights` run in. Takes the two fields rather than the worker, so a caller can
/// hold it while it walks the slots.
pub(super) fn context<'a, 'm>(
    adapted: &'a mut LlamaContext<'m>,
    base: &'a mut Option<LlamaContext<'m>>,
    weights: Weights,
) -> &'a mut LlamaContext<'m> {
    match (weights, base) {
        (Weights::Base, Some(base)) => base,
        _ => adapted,
    }
}

/// Forgets sequence `seq` in every context: a slot that leaves one weight group, or is freed,
/// leaves no cells behind in either, whichever it ran on.
pub(super) fn clear<'m>(
    adapted: &mut LlamaContext<'m>,
    base: &mut Option<LlamaContext<'m>>,
    seq: i32,
) {
    let Ok(seq) = u32::try_from(seq) else {
        return;
    };
    for ctx in std::iter::once(adapted).chain(base.as_mut()) {
        let _ = ctx.clear_kv_cache_seq(Some(seq), None, None);
    }
}
