//! The pieces of a llama block, each built from the GGUF tensors it is named after. Every op is
//! a plain differentiable candle op: the fused candle-nn kernels (`softmax_last_dim`, `rms_norm`,
//! `rope_i`) have no backward pass and would silently stop the gradients to the adapter.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};

use super::lora::{Applied, Linear, Lora, Target};
use super::{LlamaConfig, ModelError};

/// Takes a named tensor out of the loaded map, checking its shape.
pub(crate) fn take(
    tensors: &mut HashMap<String, Tensor>,
    name: &str,
    shape: &[usize],
) -> Result<Tensor, ModelError> {
    let t = tensors
        .remove(name)
        .ok_or_else(|| ModelError::Metadata(format!("missing tensor '{name}'")))?;
    if t.dims() != shape {
        return Err(ModelError::Metadata(format!(
            "tensor '{name}' has shape {:?}, expected {shape:?}",
            t.dims()
        )));
    }
    Ok(t)
}

/// Root-mean-square norm with a learned scale (`*_norm.weight`).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn load(
        tensors: &mut HashMap<String, Tensor>,
        name: &str,
        cfg: &LlamaConfig,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            weight: take(tensors, name, &[cfg.hidden_size])?,
            eps: cfg.rms_eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let x = x.broadcast_div(&(ms + self.eps)?.sqrt()?)?;
        x.broadcast_mul(&self.weight)
    }
}

/// Rotary position tables. GGUF llama weights are permuted for llama.cpp's interleaved
/// ("normal") RoPE, so pairs are adjacent dimensions (2i, 2i+1), not halves.
#[derive(Debug, Clone)]
pub struct Rope {
    /// positions x rope_dims/2.
    cos: Tensor,
    sin: Tensor,
    dims: usize,
}

impl Rope {
    pub fn new(cfg: &LlamaConfig, max_len: usize, device: &Device) -> candle_core::Result<Self> {
        let half = cfg.rope_dims / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f32 / cfg.rope_dims as f32))
            .collect();
        let inv = Tensor::from_vec(inv, (1, half), device)?;
        let pos = Tensor::arange(0u32, max_len as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_len, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        Ok(Self {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
            dims: cfg.rope_dims,
        })
    }

    pub fn max_len(&self) -> usize {
        self.cos.dim(0).unwrap_or(0)
    }

    /// x: batch x heads x seq x head_dim, positions from 0.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, h, t, d) = x.dims4()?;
        let half = self.dims / 2;
        let (rot, pass) = if self.dims == d {
            (x.clone(), None)
        } else {
            (
                x.narrow(D::Minus1, 0, self.dims)?,
                Some(x.narrow(D::Minus1, self.dims, d - self.dims)?),
            )
        };
        let cos = self.cos.narrow(0, 0, t)?.reshape((1, 1, t, half, 1))?;
        let sin = self.sin.narrow(0, 0, t)?.reshape((1, 1, t, half, 1))?;
        let rot = rot.reshape((b, h, t, half, 2))?;
        let x0 = rot.narrow(D::Minus1, 0, 1)?;
        let x1 = rot.narrow(D::Minus1, 1, 1)?;
        let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
        let y1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
        let y = Tensor::cat(&[y0, y1], D::Minus1)?.reshape((b, h, t, self.dims))?;
        match pass {
            Some(p) => Tensor::cat(&[y, p], D::Minus1),
            None => Ok(y),
        }
    }
}

/// What a block needs from the adapter while running.
#[derive(Debug, Clone, Copy)]
pub struct AdapterCtx<'a> {
    pub lora: Option<&'a Lora>,
    /// Some while training: the seed of this forward pass's dropout masks (one stream per
    /// projection). None: no dropout.
    pub dropout_seed: Option<u64>,
}

impl AdapterCtx<'_> {
    fn linear(&self, linear: &Linear, name: &str, x: &Tensor) -> candle_core::Result<Tensor> {
        let pair = self.lora.and_then(|l| {
            l.pairs.get(name).map(|p| {
                let dropout = self
                    .dropout_seed
                    .map(|seed| (l.config.dropout, super::seeded::stream(seed, name)));
                Applied {
                    pair: p,
                    scale: l.config.scale(),
                    dropout,
                }
            })
        });
        linear.forward(x, pair)
    }
}

/// A projection with its GGUF name, so the adapter can find its pair.
#[derive(Debug, Clone)]
pub struct Proj {
    pub name: String,
    pub target: Target,
    pub linear: Linear,
}

impl Proj {
    fn load(
        tensors: &mut HashMap<String, Tensor>,
        layer: usize,
        target: Target,
        out: usize,
        inp: usize,
    ) -> Result<Self, ModelError> {
        let name = format!("blk.{layer}.{}.weight", target.stem());
        let weight = take(tensors, &name, &[out, inp])?;
        Ok(Self {
            name,
            target,
            linear: Linear::new(weight),
        })
    }

    fn forward(&self, ctx: AdapterCtx<'_>, x: &Tensor) -> candle_core::Result<Tensor> {
        ctx.linear(&self.linear, &self.name, x)
    }

    pub fn shape(&self) -> (usize, usize) {
        let d = self.linear.weight().dims();
        (d[0], d[1])
    }
}

/// Grouped-query self-attention with a causal mask.
#[derive(Debug, Clone)]
pub struct Attention {
    pub q: Proj,
    pub k: Proj,
    pub v: Proj,
    pub o: Proj,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    pub fn load(
        tensors: &mut HashMap<String, Tensor>,
        layer: usize,
        cfg: &LlamaConfig,
    ) -> Result<Self, ModelError> {
        let h = cfg.hidden_size;
        let kv = cfg.n_kv_heads * cfg.head_dim();
        Ok(Self {
            q: Proj::load(tensors, layer, Target::AttnQ, h, h)?,
            k: Proj::load(tensors, layer, Target::AttnK, kv, h)?,
            v: Proj::load(tensors, layer, Target::AttnV, kv, h)?,
            o: Proj::load(tensors, layer, Target::AttnOutput, h, h)?,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim(),
        })
    }

    /// x: batch x seq x hidden; `mask` is seq x seq with -inf above the diagonal.
    pub fn forward(
        &self,
        ctx: AdapterCtx<'_>,
        x: &Tensor,
        rope: &Rope,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let split = |y: Tensor, heads: usize| {
            y.reshape((b, t, heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = rope.forward(&split(self.q.forward(ctx, x)?, self.n_heads)?)?;
        let k = rope.forward(&split(self.k.forward(ctx, x)?, self.n_kv_heads)?)?;
        let v = split(self.v.forward(ctx, x)?, self.n_kv_heads)?;
        let rep = self.n_heads / self.n_kv_heads;
        let k = candle_transformers::utils::repeat_kv(k, rep)?.contiguous()?;
        let v = candle_transformers::utils::repeat_kv(v, rep)?.contiguous()?;
        let scores = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?;
        let scores = scores.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let y = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, ()))?;
        self.o.forward(ctx, &y)
    }
}

/// SwiGLU feed-forward: down(silu(gate x) * up x).
#[derive(Debug, Clone)]
pub struct Mlp {
    pub gate: Proj,
    pub up: Proj,
    pub down: Proj,
}

impl Mlp {
    pub fn load(
        tensors: &mut HashMap<String, Tensor>,
        layer: usize,
        cfg: &LlamaConfig,
    ) -> Result<Self, ModelError> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate: Proj::load(tensors, layer, Target::FfnGate, i, h)?,
            up: Proj::load(tensors, layer, Target::FfnUp, i, h)?,
            down: Proj::load(tensors, layer, Target::FfnDown, h, i)?,
        })
    }

    pub fn forward(&self, ctx: AdapterCtx<'_>, x: &Tensor) -> candle_core::Result<Tensor> {
        let gate = self.gate.forward(ctx, x)?;
        self.down
            .forward(ctx, &(gate.silu()? * self.up.forward(ctx, x)?)?)
    }
}

/// One transformer block: pre-norm attention and feed-forward with residuals.
#[derive(Debug, Clone)]
pub struct Block {
    pub attn_norm: RmsNorm,
    pub attn: Attention,
    pub ffn_norm: RmsNorm,
    pub mlp: Mlp,
}

impl Block {
    pub fn load(
        tensors: &mut HashMap<String, Tensor>,
        layer: usize,
        cfg: &LlamaConfig,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            attn_norm: RmsNorm::load(tensors, &format!("blk.{layer}.attn_norm.weight"), cfg)?,
            attn: Attention::load(tensors, layer, cfg)?,
            ffn_norm: RmsNorm::load(tensors, &format!("blk.{layer}.ffn_norm.weight"), cfg)?,
            mlp: Mlp::load(tensors, layer, cfg)?,
        })
    }

    pub fn forward(
        &self,
        ctx: AdapterCtx<'_>,
        x: &Tensor,
        rope: &Rope,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let h = (x + self
            .attn
            .forward(ctx, &self.attn_norm.forward(x)?, rope, mask)?)?;
        &h + self.mlp.forward(ctx, &self.ffn_norm.forward(&h)?)?
    }

    pub fn projections(&self) -> [&Proj; 7] {
        [
            &self.attn.q,
            &self.attn.k,
            &self.attn.v,
            &self.attn.o,
            &self.mlp.gate,
            &self.mlp.up,
            &self.mlp.down,
        ]
    }
}
