//! Training objectives over per-token log-probabilities (the flat layout
//! [`crate::model::Llama::token_logprobs`] returns, sequences one after another):
//! supervised fine-tuning on kept chains, GRPO and DPO.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::ModelError;

/// How per-token GRPO terms become one loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Mean over every token of the group: long chains weigh by their length (DAPO).
    #[default]
    Token,
    /// Mean over each sequence, then over sequences (the original GRPO).
    Sequence,
}

/// GRPO settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoConfig {
    /// Weight of the KL penalty to the frozen base.
    pub beta: f64,
    /// Clip range of the importance ratio: [1 - epsilon, 1 + epsilon].
    pub epsilon: f64,
    pub aggregation: Aggregation,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        Self {
            beta: 0.04,
            epsilon: 0.2,
            aggregation: Aggregation::Token,
        }
    }
}

/// Token spans of the sequences in a flat token tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segments {
    pub lengths: Vec<usize>,
}

impl Segments {
    pub fn new(lengths: Vec<usize>) -> Result<Self, ModelError> {
        if lengths.is_empty() || lengths.contains(&0) {
            return Err(ModelError::Config(
                "every sequence needs at least one scored token".into(),
            ));
        }
        Ok(Self { lengths })
    }

    pub fn total(&self) -> usize {
        self.lengths.iter().sum()
    }

    /// sequences x tokens, 1 where the token belongs to the sequence.
    fn matrix(&self, scale: impl Fn(usize) -> f32, device: &Device) -> candle_core::Result<Tensor> {
        let n = self.total();
        let mut m = vec![0f32; self.lengths.len() * n];
        let mut at = 0;
        for (s, &len) in self.lengths.iter().enumerate() {
            for t in at..at + len {
                m[s * n + t] = scale(len);
            }
            at += len;
        }
        Tensor::from_vec(m, (self.lengths.len(), n), device)
    }

    /// Per-sequence sums of a flat per-token tensor.
    pub fn sums(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.matrix(|_| 1.0, x.device())?
            .matmul(&x.unsqueeze(1)?)?
            .squeeze(1)
    }

    /// Per-sequence means of a flat per-token tensor.
    pub fn means(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.matrix(|len| 1.0 / len as f32, x.device())?
            .matmul(&x.unsqueeze(1)?)?
            .squeeze(1)
    }

    /// A per-sequence value repeated over its tokens.
    pub fn spread(&self, per_seq: &[f32], device: &Device) -> candle_core::Result<Tensor> {
        let flat: Vec<f32> = per_seq
            .iter()
            .zip(&self.lengths)
            .flat_map(|(&v, &len)| std::iter::repeat_n(v, len))
            .collect();
        Tensor::new(flat.as_slice(), device)
    }
}

/// Negative mean log-likelihood of the scored tokens.
pub fn sft(logp: &Tensor) -> Result<Tensor, ModelError> {
    Ok(logp.mean_all()?.neg()?)
}

/// Weighted negative log-likelihood: `-sum(w log p) / sum(w)`, so single decisive tokens (the
/// verdict) can count more than the prose around them.
pub fn weighted_sft(logp: &Tensor, weights: &Tensor) -> Result<Tensor, ModelError> {
    let total = weights.sum_all()?.to_scalar::<f32>()?;
    if total <= 0.0 {
        return Err(ModelError::Config(
            "weights must sum to a positive value".into(),
        ));
    }
    Ok(((logp * weights)?.sum_all()? / f64::from(total))?.neg()?)
}

/// Group-normalised advantages: (r - mean) / (std + 1e-4); all zero when the group agrees.
pub fn group_advantages(rewards: &[f32]) -> Vec<f32> {
    let n = rewards.len().max(1) as f32;
    let mean = rewards.iter().sum::<f32>() / n;
    let var = rewards.iter().map(|r| (r - mean).powi(2)).sum::<f32>() / n;
    let std = var.sqrt();
    rewards.iter().map(|r| (r - mean) / (std + 1e-4)).collect()
}

/// GRPO loss and its parts, as scalars for logging.
#[derive(Debug)]
pub struct GrpoLoss {
    pub loss: Tensor,
    /// Mean k3 KL estimate to the reference over tokens.
    pub kl: f32,
    /// Share of tokens whose ratio was clipped.
    pub clip_fraction: f32,
}

/// GRPO: `-min(r A, clip(r, 1-e, 1+e) A) + beta * k3`, with `r = exp(new - old)` and
/// `k3 = exp(ref - new) - (ref - new) - 1`, aggregated as configured. `old` and `reference`
/// carry no gradient; `advantages` holds one value per sequence.
pub fn grpo(
    new: &Tensor,
    old: &Tensor,
    reference: &Tensor,
    advantages: &[f32],
    segments: &Segments,
    config: &GrpoConfig,
) -> Result<GrpoLoss, ModelError> {
    if advantages.len() != segments.lengths.len() {
        return Err(ModelError::Config("one advantage per sequence".into()));
    }
    let device = new.device();
    let adv = segments.spread(advantages, device)?;
    let ratio = (new - old.detach())?.exp()?;
    let clipped = ratio.clamp(1.0 - config.epsilon, 1.0 + config.epsilon)?;
    let surrogate = (&ratio * &adv)?.minimum(&(&clipped * &adv)?)?;
    let delta = (reference.detach() - new)?;
    let k3 = ((delta.exp()? - &delta)? - 1.0)?;
    let per_token = ((k3.clone() * config.beta)? - surrogate)?;
    let loss = match config.aggregation {
        Aggregation::Token => per_token.mean_all()?,
        Aggregation::Sequence => segments.means(&per_token)?.mean_all()?,
    };
    let outside = ratio
        .ne(&clipped)?
        .to_dtype(candle_core::DType::F32)?
        .mean_all()?
        .to_scalar::<f32>()?;
    Ok(GrpoLoss {
        loss,
        kl: k3.mean_all()?.to_scalar::<f32>()?,
        clip_fraction: outside,
    })
}

/// DPO over pairs: `-log sigmoid(beta ((pc - rc) - (pr - rr)))`, averaged; inputs are summed
/// sequence log-probabilities (policy chosen/rejected, reference chosen/rejected).
pub fn dpo(
    policy_chosen: &Tensor,
    policy_rejected: &Tensor,
    ref_chosen: &Tensor,
    ref_rejected: &Tensor,
    beta: f64,
) -> Result<Tensor, ModelError> {
    let margin =
        ((policy_chosen - ref_chosen.detach())? - (policy_rejected - ref_rejected.detach())?)?;
    let x = (margin * beta)?;
    // -log sigmoid(x) = softplus(-x) = max(-x, 0) + log(1 + exp(-|x|)), stable for any x.
    let softplus = (x.neg()?.relu()? + ((x.abs()?.neg()?.exp()? + 1.0)?.log())?)?;
    Ok(softplus.mean_all()?)
}

#[cfg(test)]
mod tests;
