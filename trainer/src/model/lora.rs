//! LoRA: the only trainable parameters. Each adapted projection keeps its frozen base weight
//! `W` (out x in) and adds `scale * B A x` with `A` (rank x in) and `B` (out x rank), the layout
//! llama.cpp's adapter loader expects, so export is a plain copy. `B` starts at zero, so a fresh
//! adapter leaves the model unchanged.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Module, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::ModelError;

/// Projections of a llama block LoRA can adapt, named as in the GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    AttnQ,
    AttnK,
    AttnV,
    AttnOutput,
    FfnGate,
    FfnUp,
    FfnDown,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::AttnQ,
        Target::AttnK,
        Target::AttnV,
        Target::AttnOutput,
        Target::FfnGate,
        Target::FfnUp,
        Target::FfnDown,
    ];

    /// The GGUF tensor stem (`blk.N.<stem>.weight`).
    pub fn stem(self) -> &'static str {
        match self {
            Target::AttnQ => "attn_q",
            Target::AttnK => "attn_k",
            Target::AttnV => "attn_v",
            Target::AttnOutput => "attn_output",
            Target::FfnGate => "ffn_gate",
            Target::FfnUp => "ffn_up",
            Target::FfnDown => "ffn_down",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.stem())
    }
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Target::ALL
            .into_iter()
            .find(|t| t.stem() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Target::ALL.iter().map(|t| t.stem()).collect();
                format!("'{s}' is not a LoRA target; use {}", names.join(", "))
            })
    }
}

/// LoRA hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    pub rank: usize,
    /// Scale numerator: the update is `alpha / rank * B A x` (llama.cpp applies the same).
    pub alpha: f32,
    /// Dropout on the adapter's input while training; never at inference.
    pub dropout: f32,
    pub targets: Vec<Target>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: Target::ALL.to_vec(),
        }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        f64::from(self.alpha) / self.rank as f64
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        if self.rank == 0
            || self.alpha.is_nan()
            || self.alpha <= 0.0
            || !(0.0..1.0).contains(&self.dropout)
        {
            return Err(ModelError::Config(format!(
                "lora needs rank > 0, alpha > 0 and dropout in [0, 1): {self:?}"
            )));
        }
        Ok(())
    }
}

/// The adapter's pair for one projection.
#[derive(Debug, Clone)]
pub struct LoraPair {
    /// rank x in.
    pub a: Var,
    /// out x rank.
    pub b: Var,
}

/// All adapter parameters, keyed by the base tensor name (`blk.3.attn_q.weight`).
#[derive(Debug, Clone)]
pub struct Lora {
    pub config: LoraConfig,
    pub pairs: BTreeMap<String, LoraPair>,
}

impl Lora {
    /// A fresh adapter: `A` uniform in +-1/sqrt(in) (PEFT's Kaiming default), `B` zero.
    /// `shapes` gives (base name, out, in) for every adapted projection; `seed` fixes `A`.
    pub fn new(
        config: LoraConfig,
        shapes: &[(String, usize, usize)],
        device: &Device,
        seed: u64,
    ) -> Result<Self, ModelError> {
        config.validate()?;
        let mut pairs = BTreeMap::new();
        for (name, out, inp) in shapes {
            let bound = 1.0 / (*inp as f32).sqrt();
            let a = super::seeded::uniform(
                (config.rank, *inp),
                -bound,
                bound,
                super::seeded::stream(seed, name),
                device,
            )?;
            let a = Var::from_tensor(&a)?;
            let b = Var::zeros((*out, config.rank), DType::F32, device)?;
            pairs.insert(name.clone(), LoraPair { a, b });
        }
        Ok(Self { config, pairs })
    }

    /// Every trainable variable, in a stable order (A then B per projection, sorted by name).
    pub fn vars(&self) -> Vec<Var> {
        self.pairs
            .values()
            .flat_map(|p| [p.a.clone(), p.b.clone()])
            .collect()
    }

    /// Named tensors in llama.cpp's adapter naming (`<base>.lora_a`, `<base>.lora_b`).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.pairs
            .iter()
            .flat_map(|(name, p)| {
                [
                    (format!("{name}.lora_a"), p.a.as_tensor().clone()),
                    (format!("{name}.lora_b"), p.b.as_tensor().clone()),
                ]
            })
            .collect()
    }

    /// Replaces the values from named tensors (a checkpoint); every pair must be present.
    pub fn load_tensors(&self, tensors: &BTreeMap<String, Tensor>) -> Result<(), ModelError> {
        for (name, p) in &self.pairs {
            for (suffix, var) in [("lora_a", &p.a), ("lora_b", &p.b)] {
                let key = format!("{name}.{suffix}");
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| ModelError::Config(format!("checkpoint lacks '{key}'")))?;
                if t.dims() != var.dims() {
                    return Err(ModelError::Config(format!(
                        "checkpoint '{key}' has shape {:?}, the adapter {:?}",
                        t.dims(),
                        var.dims()
                    )));
                }
                var.set(&t.to_dtype(DType::F32)?)?;
            }
        }
        Ok(())
    }

    /// Number of trainable values.
    pub fn n_params(&self) -> usize {
        self.pairs
            .values()
            .map(|p| p.a.elem_count() + p.b.elem_count())
            .sum()
    }
}

/// A LoRA pair as one forward pass applies it.
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    pub pair: &'a LoraPair,
    /// alpha / rank.
    pub scale: f64,
    /// (probability, mask seed) while training; none otherwise.
    pub dropout: Option<(f32, u64)>,
}

/// A projection: frozen weight, optionally with its LoRA pair.
#[derive(Debug, Clone)]
pub struct Linear {
    /// out x in, never trained.
    weight: Tensor,
}

impl Linear {
    pub fn new(weight: Tensor) -> Self {
        Self { weight }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `x W^T`, plus `scale * dropout(x) A^T B^T` when an adapter pair is given; dropout
    /// (probability, mask seed) only while training.
    pub fn forward(&self, x: &Tensor, lora: Option<Applied<'_>>) -> candle_core::Result<Tensor> {
        let base = super::frozen::frozen_matmul(x, &self.weight)?;
        let Some(Applied {
            pair,
            scale,
            dropout,
        }) = lora
        else {
            return Ok(base);
        };
        let x = match dropout {
            Some((p, seed)) if p > 0.0 => super::seeded::dropout(x, p, seed)?,
            _ => x.clone(),
        };
        let delta = x
            .broadcast_matmul(&pair.a.as_tensor().t()?)?
            .broadcast_matmul(&pair.b.as_tensor().t()?)?;
        base + (delta * scale)?
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Linear::forward(self, x, None)
    }
}
