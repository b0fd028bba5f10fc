//! The served llama model in candle, for training: loaded from the same GGUF llama.cpp serves,
//! dequantized to frozen f32 tensors (quantized matmuls block gradients), with LoRA pairs as the
//! only trainable parameters. Layer and field names mirror the GGUF tensor names.

mod config;
mod frozen;
mod layers;
pub mod lora;
pub mod seeded;
pub mod tiny;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::{DType, Device, Tensor, D};

pub use config::LlamaConfig;
pub use layers::AdapterCtx;
use layers::{take, Block, RmsNorm, Rope};
pub use lora::{Lora, LoraConfig, Target};

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    #[error("GGUF metadata: {0}")]
    Metadata(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A llama-architecture decoder.
#[derive(Debug, Clone)]
pub struct Llama {
    pub config: LlamaConfig,
    /// vocab x hidden (`token_embd.weight`).
    token_embd: Tensor,
    blocks: Vec<Block>,
    output_norm: RmsNorm,
    /// vocab x hidden (`output.weight`, or the embedding when tied).
    output: Tensor,
    rope: Rope,
    device: Device,
}

impl Llama {
    /// Loads a llama GGUF (any ggml type candle can dequantize) as frozen f32 weights.
    pub fn load(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let read_err = |e: &dyn std::fmt::Display| ModelError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let mut file = File::open(path).map_err(|e| read_err(&e))?;
        let content = Content::read(&mut file).map_err(|e| read_err(&e))?;
        let config = LlamaConfig::from_gguf(&content)?;
        let mut tensors = HashMap::new();
        for name in content.tensor_infos.keys() {
            let q = content
                .tensor(&mut file, name, device)
                .map_err(|e| read_err(&e))?;
            tensors.insert(name.clone(), q.dequantize(device)?.to_dtype(DType::F32)?);
        }
        Self::from_tensors(config, tensors, device)
    }

    /// Builds the model from named f32 tensors (GGUF names and candle shape order).
    pub fn from_tensors(
        config: LlamaConfig,
        mut tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self, ModelError> {
        config.validate()?;
        let (v, h) = (config.vocab_size, config.hidden_size);
        let token_embd = take(&mut tensors, "token_embd.weight", &[v, h])?;
        let output = match tensors.contains_key("output.weight") {
            true => take(&mut tensors, "output.weight", &[v, h])?,
            false => token_embd.clone(),
        };
        let blocks = (0..config.n_layers)
            .map(|i| Block::load(&mut tensors, i, &config))
            .collect::<Result<Vec<_>, _>>()?;
        let output_norm = RmsNorm::load(&mut tensors, "output_norm.weight", &config)?;
        // llama.cpp ignores the precomputed rope table some converters add.
        tensors.remove("rope_freqs.weight");
        if let Some(extra) = tensors.keys().next() {
            return Err(ModelError::Unsupported(format!(
                "tensor '{extra}' is not part of a plain llama model"
            )));
        }
        let rope = Rope::new(&config, config.context_length.min(4096), device)?;
        Ok(Self {
            config,
            token_embd,
            blocks,
            output_norm,
            output,
            rope,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// (base tensor name, out, in) of every projection a LoRA with these targets adapts.
    pub fn lora_shapes(&self, targets: &[Target]) -> Vec<(String, usize, usize)> {
        self.blocks
            .iter()
            .flat_map(|b| b.projections())
            .filter(|p| targets.contains(&p.target))
            .map(|p| {
                let (out, inp) = p.shape();
                (p.name.clone(), out, inp)
            })
            .collect()
    }

    /// A fresh adapter for this model; `seed` fixes its initial `A`.
    pub fn new_lora(&self, config: LoraConfig, seed: u64) -> Result<Lora, ModelError> {
        let shapes = self.lora_shapes(&config.targets);
        Lora::new(config, &shapes, &self.device, seed)
    }

    /// Final hidden states (after the output norm): batch x seq x hidden. Sequences start at
    /// position 0; pad on the right (causal attention keeps padding from reaching real tokens).
    pub fn hidden(&self, ids: &Tensor, ctx: AdapterCtx<'_>) -> Result<Tensor, ModelError> {
        let (_, t) = ids.dims2()?;
        if t == 0 || t > self.rope.max_len() {
            return Err(ModelError::Config(format!(
                "sequence of {t} tokens; the trainer runs 1 to {} tokens",
                self.rope.max_len()
            )));
        }
        let mask = causal_mask(t, &self.device)?;
        let mut x = self.token_embd.embedding(&ids.flatten_all()?)?.reshape((
            ids.dim(0)?,
            t,
            self.config.hidden_size,
        ))?;
        for block in &self.blocks {
            x = block.forward(ctx, &x, &self.rope, &mask)?;
        }
        Ok(self.output_norm.forward(&x)?)
    }

    /// Logits for hidden states of any leading shape: ... x vocab.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        Ok(frozen::frozen_matmul(hidden, &self.output)?)
    }

    /// Log-probabilities of `targets` under the logits at `positions` of each row: the
    /// per-token building block of every loss. `ids`: batch x seq; `positions[r]` lists the
    /// positions whose next token is scored, `targets[r]` those tokens. Returns one flat
    /// tensor of all scored tokens in row order.
    pub fn token_logprobs(
        &self,
        ids: &Tensor,
        positions: &[Vec<u32>],
        targets: &[Vec<u32>],
        ctx: AdapterCtx<'_>,
    ) -> Result<Tensor, ModelError> {
        let hidden = self.hidden(ids, ctx)?;
        let (b, t, h) = hidden.dims3()?;
        // Only scored positions reach the (vocab-wide) output head.
        let flat: Vec<u32> = positions
            .iter()
            .enumerate()
            .flat_map(|(r, ps)| ps.iter().map(move |p| r as u32 * t as u32 + p))
            .collect();
        if positions.len() != b || flat.is_empty() {
            return Err(ModelError::Config(
                "one non-empty position list per row is required".into(),
            ));
        }
        let index = Tensor::new(flat.as_slice(), &self.device)?;
        let picked = hidden.reshape((b * t, h))?.index_select(&index, 0)?;
        let logp = candle_nn::ops::log_softmax(&self.logits(&picked)?, D::Minus1)?;
        let tgt: Vec<u32> = targets.iter().flatten().copied().collect();
        let tgt = Tensor::new(tgt.as_slice(), &self.device)?.unsqueeze(1)?;
        Ok(logp.gather(&tgt, 1)?.squeeze(1)?)
    }
}

/// seq x seq: 0 on and below the diagonal, -inf above.
fn causal_mask(t: usize, device: &Device) -> candle_core::Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (t, t), device)
}

#[cfg(test)]
mod tests;
