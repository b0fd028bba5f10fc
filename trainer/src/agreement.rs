//! How closely the candle model (with or without an adapter) tracks llama.cpp on the same token
//! ids: next-token top-1 agreement and the mean absolute difference of the log-probability of
//! the actual next token. llama.cpp multiplies quantized weights with quantized activations
//! while candle uses the dequantized weights in f32, so the two differ slightly by design.

use std::num::NonZeroU32;
use std::path::Path;

use cada_core::llama_cpp_2::context::params::LlamaContextParams;
use cada_core::llama_cpp_2::llama_batch::LlamaBatch;
use cada_core::llama_cpp_2::model::params::LlamaModelParams;
use cada_core::llama_cpp_2::model::LlamaModel;
use cada_core::llama_cpp_2::token::LlamaToken;
use candle_core::{Tensor, D};
use serde::Serialize;

use crate::model::{AdapterCtx, Llama, Lora, ModelError};

/// Per-position log-softmax rows over the vocabulary.
pub type LogProbs = Vec<Vec<f32>>;

/// The comparison's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Agreement {
    pub positions: usize,
    /// Share of positions where both pick the same most likely next token.
    pub top1: f64,
    /// Mean |log p_candle - log p_llama| of the token that actually comes next.
    pub mean_abs_logprob_diff: f64,
}

fn llama_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Unsupported(format!("llama.cpp: {e}"))
}

/// Tokenizes text with the GGUF's own vocabulary (no BOS, special tokens parsed as text).
pub fn tokenize(model_path: &Path, text: &str) -> Result<Vec<u32>, ModelError> {
    let backend = cada_core::llama_backend().map_err(llama_err)?;
    let model = LlamaModel::load_from_file(backend, model_path, &LlamaModelParams::default())
        .map_err(llama_err)?;
    let tokens = model.vocab().tokenize(text.as_bytes(), false, true);
    Ok(tokens.into_iter().map(|t| t.0 as u32).collect())
}

/// llama.cpp's log-probabilities at every position of `tokens`, with an optional LoRA adapter
/// at scale 1.
pub fn llama_cpp_logprobs(
    model_path: &Path,
    adapter: Option<&Path>,
    tokens: &[u32],
) -> Result<LogProbs, ModelError> {
    let backend = cada_core::llama_backend().map_err(llama_err)?;
    let mut model = LlamaModel::load_from_file(backend, model_path, &LlamaModelParams::default())
        .map_err(llama_err)?;
    let mut lora = adapter
        .map(|p| model.lora_adapter_init(p))
        .transpose()
        .map_err(llama_err)?;
    let n = tokens.len();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n.max(16) as u32))
        .with_n_batch(n as u32)
        .with_n_ubatch(n as u32);
    let mut ctx = model.new_context(backend, params).map_err(llama_err)?;
    if let Some(lora) = lora.as_mut() {
        ctx.lora_adapter_set(lora, 1.0).map_err(llama_err)?;
    }
    let mut batch = LlamaBatch::new(n, 1);
    for (i, &t) in tokens.iter().enumerate() {
        batch
            .add(LlamaToken(t as i32), i as i32, &[0], true)
            .map_err(llama_err)?;
    }
    ctx.decode(&mut batch).map_err(llama_err)?;
    Ok((0..n)
        .map(|i| log_softmax(ctx.get_logits_ith(i as i32)))
        .collect())
}

/// The candle model's log-probabilities at every position of `tokens`.
pub fn candle_logprobs(
    model: &Llama,
    lora: Option<&Lora>,
    tokens: &[u32],
) -> Result<LogProbs, ModelError> {
    let ids = Tensor::new(tokens, model.device())?.unsqueeze(0)?;
    let hidden = model.hidden(
        &ids,
        AdapterCtx {
            lora,
            dropout_seed: None,
        },
    )?;
    let logp = candle_nn::ops::log_softmax(&model.logits(&hidden.squeeze(0)?)?, D::Minus1)?;
    Ok(logp.to_vec2::<f32>()?)
}

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let log_sum = sum.ln() as f32 + max;
    logits.iter().map(|&l| l - log_sum).collect()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Compares two sets of rows over the positions that have a next token.
pub fn compare(a: &LogProbs, b: &LogProbs, tokens: &[u32]) -> Agreement {
    let positions = a.len().min(b.len()).min(tokens.len()).saturating_sub(1);
    let mut same = 0usize;
    let mut diff = 0f64;
    for i in 0..positions {
        same += usize::from(argmax(&a[i]) == argmax(&b[i]));
        let next = tokens[i + 1] as usize;
        diff += f64::from((a[i][next] - b[i][next]).abs());
    }
    let n = positions.max(1) as f64;
    Agreement {
        positions,
        top1: same as f64 / n,
        mean_abs_logprob_diff: diff / n,
    }
}
