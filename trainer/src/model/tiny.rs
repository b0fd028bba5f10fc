//! A tiny randomly initialised llama, so unit tests of losses, gradients and the optimiser run
//! in milliseconds; tests that are about the real model load the real GGUF instead.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::{Llama, LlamaConfig, ModelError};

/// Two layers, four heads over two KV heads, a 64-token vocabulary.
pub fn config() -> LlamaConfig {
    LlamaConfig {
        architecture: "llama".into(),
        vocab_size: 64,
        hidden_size: 32,
        intermediate_size: 48,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        rope_dims: 8,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
        context_length: 128,
    }
}

/// Normal(0, std) values from a fixed seed (candle's CPU generator cannot be seeded).
pub fn seeded_normal(
    shape: &[usize],
    std: f32,
    seed: u64,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        // xorshift64*: plenty for test weights.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        ((state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let values: Vec<f32> = (0..n)
        .map(|_| {
            let (u1, u2) = (uniform(), uniform());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            z as f32 * std
        })
        .collect();
    Tensor::from_vec(values, shape, device)
}

/// The tiny model with normal(0, 0.2) weights and unit norms; the seed fixes them.
pub fn model(seed: u64, device: &Device) -> Result<Llama, ModelError> {
    let c = config();
    let mut next_seed = seed;
    let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let kv = c.n_kv_heads * c.head_dim();
    let mut t = HashMap::new();
    let mut put = |name: String, shape: &[usize], ones: bool| -> Result<(), ModelError> {
        let x = if ones {
            Tensor::ones(shape, candle_core::DType::F32, device)?
        } else {
            next_seed += 1;
            seeded_normal(shape, 0.2, next_seed, device)?
        };
        t.insert(name, x);
        Ok(())
    };
    put("token_embd.weight".into(), &[v, h], false)?;
    put("output_norm.weight".into(), &[h], true)?;
    for l in 0..c.n_layers {
        let b = |s: &str| format!("blk.{l}.{s}.weight");
        put(b("attn_norm"), &[h], true)?;
        put(b("ffn_norm"), &[h], true)?;
        put(b("attn_q"), &[h, h], false)?;
        put(b("attn_k"), &[kv, h], false)?;
        put(b("attn_v"), &[kv, h], false)?;
        put(b("attn_output"), &[h, h], false)?;
        put(b("ffn_gate"), &[i, h], false)?;
        put(b("ffn_up"), &[i, h], false)?;
        put(b("ffn_down"), &[h, i], false)?;
    }
    Llama::from_tensors(c, t, device)
}
