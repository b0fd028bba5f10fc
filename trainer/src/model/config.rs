//! The llama hyper-parameters, read from a GGUF's metadata under its architecture prefix
//! (`llama.block_count`, ...), so the candle model matches exactly what llama.cpp serves.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};

use super::ModelError;

/// Shape of a llama-architecture model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// `general.architecture`; written back into exported adapters, which llama.cpp checks.
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// Dimensions RoPE rotates per head (`rope.dimension_count`, the head size by default).
    pub rope_dims: usize,
    pub rope_theta: f32,
    pub rms_eps: f64,
    pub context_length: usize,
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.n_heads
    }

    /// Reads the hyper-parameters of a llama-architecture GGUF.
    pub fn from_gguf(content: &Content) -> Result<Self, ModelError> {
        let md = &content.metadata;
        let architecture = string(md, "general.architecture")?;
        if architecture != "llama" {
            return Err(ModelError::Unsupported(format!(
                "architecture '{architecture}': the trainer runs llama-architecture models"
            )));
        }
        let key = |k: &str| format!("{architecture}.{k}");
        let hidden_size = int(md, &key("embedding_length"))?;
        let n_heads = int(md, &key("attention.head_count"))?;
        let n_kv_heads = int(md, &key("attention.head_count_kv")).unwrap_or(n_heads);
        let vocab_size = match md.get("tokenizer.ggml.tokens") {
            Some(Value::Array(tokens)) => tokens.len(),
            _ => int(md, &key("vocab_size"))?,
        };
        let config = Self {
            vocab_size,
            hidden_size,
            intermediate_size: int(md, &key("feed_forward_length"))?,
            n_layers: int(md, &key("block_count"))?,
            n_heads,
            n_kv_heads,
            rope_dims: int(md, &key("rope.dimension_count")).unwrap_or(hidden_size / n_heads),
            rope_theta: float(md, &key("rope.freq_base")).unwrap_or(10_000.0),
            rms_eps: f64::from(float(md, &key("attention.layer_norm_rms_epsilon"))?),
            context_length: int(md, &key("context_length"))?,
            architecture,
        };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let ok = self.n_heads > 0
            && self.n_kv_heads > 0
            && self.hidden_size % self.n_heads == 0
            && self.n_heads % self.n_kv_heads == 0
            && self.rope_dims <= self.head_dim()
            && self.rope_dims % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(ModelError::Unsupported(format!(
                "inconsistent shape: {self:?}"
            )))
        }
    }
}

fn get<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<&'a Value, ModelError> {
    md.get(key)
        .ok_or_else(|| ModelError::Metadata(format!("missing key '{key}'")))
}

fn string(md: &HashMap<String, Value>, key: &str) -> Result<String, ModelError> {
    get(md, key)?
        .to_string()
        .cloned()
        .map_err(|e| ModelError::Metadata(format!("'{key}': {e}")))
}

fn int(md: &HashMap<String, Value>, key: &str) -> Result<usize, ModelError> {
    let v = get(md, key)?;
    let n = v
        .to_u64()
        .or_else(|_| v.to_u32().map(u64::from))
        .or_else(|_| v.to_i32().map(|i| i.max(0) as u64))
        .map_err(|e| ModelError::Metadata(format!("'{key}': {e}")))?;
    usize::try_from(n).map_err(|_| ModelError::Metadata(format!("'{key}' is too large")))
}

fn float(md: &HashMap<String, Value>, key: &str) -> Result<f32, ModelError> {
    get(md, key)?
        .to_f32()
        .map_err(|e| ModelError::Metadata(format!("'{key}': {e}")))
}
