//! The training phases over the candle model: fine-tuning on kept chains (the warm start), GRPO
//! on groups of self-generated chains, and DPO on each group's best and worst chain.

use std::time::Instant;

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::batch::Batch;
use super::config::{Dpo, Grpo, WarmStart};
use super::metrics::Metrics;
use super::TrainError;
use crate::chain::Sequence;
use crate::loss::{self, GrpoConfig};
use crate::model::{AdapterCtx, Llama, Lora};
use crate::optim::AdamW;
use crate::progress::Progress;

/// Shared state of the phases.
#[derive(Debug)]
pub struct Trainer<'a> {
    pub model: &'a Llama,
    pub lora: &'a Lora,
    pub opt: AdamW,
    pub metrics: &'a mut Metrics,
    pub rng: rand::rngs::StdRng,
    /// The run's seed; with the update count it fixes each forward pass's dropout masks.
    pub seed: u64,
    /// When the training budget runs out.
    pub deadline: Instant,
    /// Optimiser updates so far, over all phases.
    pub updates: usize,
}

/// The adapter in training, its dropout masks drawn from `seed`.
fn train_ctx(lora: &Lora, seed: u64) -> AdapterCtx<'_> {
    AdapterCtx {
        lora: Some(lora),
        dropout_seed: Some(seed),
    }
}

const NO_ADAPTER: AdapterCtx<'static> = AdapterCtx {
    lora: None,
    dropout_seed: None,
};

impl Trainer<'_> {
    /// The dropout seed of pass `pass` of `phase` at the current update: fixed by where the run
    /// stands, so a run with one seed repeats, resumed or not.
    fn dropout_seed(&self, phase: &str, pass: usize) -> u64 {
        crate::model::seeded::stream(self.seed, &format!("{phase} {} {pass}", self.updates))
    }

    pub fn out_of_time(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// One supervised epoch over `seqs` (micro-batches of similar length, shuffled by `rng`),
    /// the learning rate following `cfg.lr_schedule` from `schedule.peak`. `schedule.done`
    /// counts the phase's updates across epochs (and resumes). `phase` names the metrics lines
    /// and dropout streams, `label` the progress bar. Returns whether the epoch finished (false:
    /// the budget ran out).
    #[allow(clippy::too_many_arguments)]
    pub fn sft_epoch(
        &mut self,
        phase: &'static str,
        label: &str,
        seqs: &[Sequence],
        epoch: usize,
        cfg: &WarmStart,
        schedule: &mut SftSchedule,
        rng: &mut rand::rngs::StdRng,
    ) -> Result<bool, TrainError> {
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.shuffle(rng);
        // Similar lengths together (less padding), batches in random order.
        let mut batches: Vec<Vec<usize>> = {
            let mut sorted = order;
            sorted.sort_by_key(|&i| seqs[i].tokens.len());
            sorted
                .chunks(cfg.micro_batch)
                .map(<[usize]>::to_vec)
                .collect()
        };
        batches.shuffle(rng);
        let n_batches = batches.len();
        let mut progress = Progress::new(label, n_batches);
        let finished = self.sft_batches(phase, seqs, &batches, epoch, cfg, schedule, &mut progress);
        self.opt.config.lr = schedule.peak;
        progress.finish("");
        finished
    }

    #[allow(clippy::too_many_arguments)]
    fn sft_batches(
        &mut self,
        phase: &'static str,
        seqs: &[Sequence],
        batches: &[Vec<usize>],
        epoch: usize,
        cfg: &WarmStart,
        schedule: &mut SftSchedule,
        progress: &mut Progress,
    ) -> Result<bool, TrainError> {
        for (b, idx) in batches.iter().enumerate() {
            if self.out_of_time() {
                return Ok(false);
            }
            let started = Instant::now();
            let picked: Vec<&Sequence> = idx.iter().map(|&i| &seqs[i]).collect();
            let batch = Batch::new(self.model, &picked)?;
            let seed = self.dropout_seed(phase, b);
            let logp = batch.logprobs(self.model, train_ctx(self.lora, seed))?;
            let l = loss::weighted_sft(&logp, &batch.weights(cfg.verdict_weight)?)?;
            self.opt.accumulate(&l.backward()?)?;
            let value = l.to_scalar::<f32>()?;
            let verdict_nll = if batch.verdicts.is_empty() {
                None
            } else {
                let idx: Vec<u32> = batch.verdicts.iter().map(|&v| v as u32).collect();
                let idx = Tensor::new(idx.as_slice(), logp.device())?;
                Some(-logp.index_select(&idx, 0)?.mean_all()?.to_scalar::<f32>()?)
            };
            if (b + 1) % cfg.accumulation != 0 && b + 1 != batches.len() {
                continue;
            }
            self.opt.config.lr =
                schedule.peak * cfg.lr_schedule.factor(schedule.done, schedule.total);
            let Some(info) = self.opt.update()? else {
                continue;
            };
            self.updates += 1;
            schedule.done += 1;
            progress.set(b + 1, &format!("loss {value:.3}"));
            self.metrics
                .log(
                    phase,
                    self.updates,
                    json!({
                        "epoch": epoch,
                        "loss": value,
                        "lr": self.opt.config.lr,
                        "verdict_nll": verdict_nll,
                        "grad_norm": info.grad_norm,
                        "tokens": batch.tokens,
                        "tokens_per_s": batch.tokens as f64 / started.elapsed().as_secs_f64(),
                    }),
                )
                .map_err(TrainError::io("metrics"))?;
        }
        Ok(true)
    }

    /// One GRPO update on groups of chains (each group: one prompt's sequences and rewards).
    /// Groups whose rewards are all equal carry no signal and are skipped. Returns the loss
    /// figures, or `None` when no group had a signal.
    pub fn grpo_step(
        &mut self,
        groups: &[(Vec<Sequence>, Vec<f32>)],
        cfg: &Grpo,
    ) -> Result<Option<serde_json::Value>, TrainError> {
        let config = GrpoConfig {
            beta: cfg.beta,
            epsilon: cfg.epsilon,
            aggregation: cfg.aggregation,
        };
        let mut losses = Vec::new();
        let mut kls = Vec::new();
        let mut clips = Vec::new();
        let mut tokens = 0;
        for (seqs, rewards) in groups {
            let adv = loss::group_advantages(rewards);
            if adv.iter().all(|a| a.abs() < 1e-6) {
                continue;
            }
            let picked: Vec<&Sequence> = seqs.iter().collect();
            let batch = Batch::new(self.model, &picked)?;
            let reference = batch.logprobs(self.model, NO_ADAPTER)?.detach();
            let seed = self.dropout_seed("grpo", tokens);
            let new = batch.logprobs(self.model, train_ctx(self.lora, seed))?;
            // One update per batch of rollouts: the sampling policy is the current one.
            let old = new.detach();
            let out = loss::grpo(&new, &old, &reference, &adv, &batch.segments, &config)?;
            self.opt.accumulate(&out.loss.backward()?)?;
            losses.push(out.loss.to_scalar::<f32>()?);
            kls.push(out.kl);
            clips.push(out.clip_fraction);
            tokens += batch.tokens;
        }
        if losses.is_empty() {
            return Ok(None);
        }
        let info = self.opt.update()?;
        self.updates += 1;
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
        Ok(Some(json!({
            "loss": mean(&losses),
            "kl": mean(&kls),
            "clip_fraction": mean(&clips),
            "grad_norm": info.map(|i| i.grad_norm),
            "groups_with_signal": losses.len(),
            "tokens": tokens,
        })))
    }

    /// DPO passes over (chosen, rejected) pairs. Returns the updates made.
    pub fn dpo(&mut self, pairs: &[(Sequence, Sequence)], cfg: &Dpo) -> Result<usize, TrainError> {
        let mut made = 0;
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        for _ in 0..cfg.epochs {
            order.shuffle(&mut self.rng);
            for &i in &order {
                if self.out_of_time() {
                    return Ok(made);
                }
                let (chosen, rejected) = &pairs[i];
                let batch = Batch::new(self.model, &[chosen, rejected])?;
                let sums = |ctx| -> Result<Tensor, TrainError> {
                    Ok(batch.segments.sums(&batch.logprobs(self.model, ctx)?)?)
                };
                let reference = sums(NO_ADAPTER)?.detach();
                let seed = self.dropout_seed("dpo", i);
                let policy = sums(train_ctx(self.lora, seed))?;
                let l = loss::dpo(
                    &policy.get(0)?,
                    &policy.get(1)?,
                    &reference.get(0)?,
                    &reference.get(1)?,
                    cfg.beta,
                )?;
                self.opt.accumulate(&l.backward()?)?;
                let info = self.opt.update()?;
                self.updates += 1;
                made += 1;
                let margin = ((policy.get(0)? - reference.get(0)?)?
                    - (policy.get(1)? - reference.get(1)?)?)?
                .to_scalar::<f32>()?;
                self.metrics
                    .log(
                        "dpo",
                        self.updates,
                        json!({
                            "loss": l.to_scalar::<f32>()?,
                            "margin": margin,
                            "grad_norm": info.map(|i| i.grad_norm),
                        }),
                    )
                    .map_err(TrainError::io("metrics"))?;
            }
        }
        Ok(made)
    }

    /// Picks `n` distinct indices below `len`.
    pub fn pick(&mut self, len: usize, n: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..len).collect();
        all.shuffle(&mut self.rng);
        all.truncate(n.min(len));
        all
    }

    /// A fresh seed for sampling.
    pub fn seed(&mut self) -> u64 {
        self.rng.random()
    }
}

/// A deterministic random generator for a run.
pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// The generator of one warm-start epoch (its framings and order): derived from the seed and
/// the epoch alone, so a resumed run draws what the uninterrupted one would have.
pub fn epoch_rng(seed: u64, epoch: usize) -> rand::rngs::StdRng {
    rng(seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Where the warm start's learning-rate schedule stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SftSchedule {
    /// `optim.lr`: the rate the schedule scales.
    pub peak: f64,
    /// Warm-start updates over all epochs.
    pub total: usize,
    /// Warm-start updates made so far.
    pub done: usize,
}

impl SftSchedule {
    /// Updates of `epochs` passes over `n` sequences.
    pub fn new(peak: f64, n: usize, cfg: &WarmStart) -> Self {
        Self {
            peak,
            total: cfg.epochs * n.div_ceil(cfg.micro_batch).div_ceil(cfg.accumulation),
            done: 0,
        }
    }
}
