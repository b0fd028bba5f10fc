//! Packs training sequences into right-padded id tensors with the positions and targets of
//! their completion tokens, the input [`Llama::token_logprobs`] takes.

use candle_core::Tensor;

use crate::chain::Sequence;
use crate::loss::Segments;
use crate::model::{AdapterCtx, Llama, ModelError};

/// A batch ready for the model.
#[derive(Debug)]
pub struct Batch {
    pub ids: Tensor,
    pub positions: Vec<Vec<u32>>,
    pub targets: Vec<Vec<u32>>,
    pub segments: Segments,
    /// Tokens in the batch (padding excluded).
    pub tokens: usize,
    /// Offsets, in the flat scored-token order, of each sequence's verdict token.
    pub verdicts: Vec<usize>,
}

impl Batch {
    pub fn new(model: &Llama, seqs: &[&Sequence]) -> Result<Self, ModelError> {
        let width = seqs.iter().map(|s| s.tokens.len()).max().unwrap_or(0);
        let mut flat = Vec::with_capacity(width * seqs.len());
        let mut positions = Vec::new();
        let mut targets = Vec::new();
        let mut verdicts = Vec::new();
        let mut scored = 0;
        for s in seqs {
            if s.prompt_len == 0 || s.completion_len() == 0 {
                return Err(ModelError::Config(
                    "a sequence needs a prompt and a completion".into(),
                ));
            }
            flat.extend_from_slice(&s.tokens);
            flat.extend(std::iter::repeat_n(0u32, width - s.tokens.len()));
            positions.push((s.prompt_len as u32 - 1..s.tokens.len() as u32 - 1).collect());
            targets.push(s.tokens[s.prompt_len..].to_vec());
            if let Some(v) = s
                .verdict_at
                .filter(|&v| v >= s.prompt_len && v < s.tokens.len())
            {
                verdicts.push(scored + v - s.prompt_len);
            }
            scored += s.completion_len();
        }
        let ids = Tensor::from_vec(flat, (seqs.len(), width), model.device())?;
        let segments = Segments::new(seqs.iter().map(|s| s.completion_len()).collect())?;
        Ok(Self {
            ids,
            positions,
            targets,
            segments,
            tokens: seqs.iter().map(|s| s.tokens.len()).sum(),
            verdicts,
        })
    }

    /// Per scored token: `verdict_weight` on verdict tokens, 1 elsewhere.
    pub fn weights(&self, verdict_weight: f32) -> Result<Tensor, ModelError> {
        let mut w = vec![1f32; self.segments.total()];
        for &v in &self.verdicts {
            w[v] = verdict_weight;
        }
        Ok(Tensor::new(w.as_slice(), self.ids.device())?)
    }

    /// Per-token log-probabilities of the completions, flat in sequence order.
    pub fn logprobs(&self, model: &Llama, ctx: AdapterCtx<'_>) -> Result<Tensor, ModelError> {
        model.token_logprobs(&self.ids, &self.positions, &self.targets, ctx)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::model::tiny;

    /// Positions predict the completion tokens; the verdict weight lands on the verdict token.
    #[test]
    fn batches_score_completions_and_weigh_verdicts() {
        let m = tiny::model(1, &Device::Cpu).unwrap();
        let a = Sequence {
            tokens: vec![1, 2, 3, 4, 5],
            prompt_len: 2,
            verdict_at: Some(3),
        };
        let b = Sequence {
            tokens: vec![6, 7, 8],
            prompt_len: 1,
            verdict_at: None,
        };
        let batch = Batch::new(&m, &[&a, &b]).unwrap();
        assert_eq!(batch.ids.dims(), &[2, 5]);
        assert_eq!(batch.positions, vec![vec![1, 2, 3], vec![0, 1]]);
        assert_eq!(batch.targets, vec![vec![3, 4, 5], vec![7, 8]]);
        assert_eq!(batch.segments.lengths, vec![3, 2]);
        let w = batch.weights(10.0).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(w, vec![1.0, 10.0, 1.0, 1.0, 1.0]);
        let logp = batch
            .logprobs(
                &m,
                AdapterCtx {
                    lora: None,
                    dropout_seed: None,
                },
            )
            .unwrap();
        assert_eq!(logp.dims(), &[5]);
    }
}
