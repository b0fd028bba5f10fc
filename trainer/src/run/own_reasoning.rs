//! Verdict training on the model's own reasoning. The warm start teaches the verdict after the
//! written rationales, which state their conclusion ("..., which is harmful"), so the verdict
//! learns to read the rationale. `trained` mode reads it after the reasoning the model writes
//! itself, and a 135M model's reasoning often misreads the request. Measured on the 318
//! training requests themselves, served through the gateway, an adapter whose teacher-forced
//! verdict loss was 0.1 separated harmful from benign no better than on the dev set (AUC 0.86).
//! Each round here generates the reasoning as served (greedy, the gateway's stops and cap, the
//! adapter as it stands) for every training request, in that round's framings, and trains the
//! labelled verdict after it, scoring the verdict line alone. Of the outside requests, each
//! round takes the next slice (`own_reasoning.labelled_share`, `run/slices.rs`).

use std::time::Instant;

use cada_core::policy::Policy;
use cada_core::{Engine, GenerationParams};
use serde_json::json;

use super::config::{LrSchedule, TrainConfig, WarmStart};
use super::slices::{self, Passes};
use super::train::{self, SftSchedule, Trainer};
use super::{condition_prompt, rollout, Retrieval, TrainError};
use crate::chain;
use crate::data::Example;
use crate::framing;

/// Where a greedy reasoning ends, as in the gateway: the model writing the next line itself.
const REASONING_STOPS: [&str; 2] = ["Verdict:", "Answer:"];

/// One round: reasoning for every library example and this round's slice of the outside ones
/// (through `engine`, which serves the current adapter), then one pass over the verdicts.
/// Returns whether the pass finished (false: the budget ran out).
pub fn round(
    trainer: &mut Trainer<'_>,
    engine: &Engine,
    policy: &Policy,
    retrieval: Option<&Retrieval>,
    examples: &[Example],
    config: &TrainConfig,
    round: usize,
) -> Result<bool, TrainError> {
    let cfg = &config.own_reasoning;
    // Streams apart from the warm start's epochs (which use 0..epochs).
    let mut rng = train::epoch_rng(config.seed, 1_000 + round);
    let all: Vec<&Example> = examples.iter().collect();
    let slice = slices::pass_indices(
        &all,
        cfg.labelled_share,
        config.seed,
        Passes::OwnReasoning,
        round,
    );
    let requests = framing::epoch_requests(
        slice.iter().map(|&i| examples[i].request.as_str()),
        config.warm_start.framing,
        &mut rng,
    );
    let framed: Vec<Example> = slice
        .iter()
        .zip(requests)
        .map(|(&i, request)| Example {
            request,
            ..examples[i].clone()
        })
        .collect();
    let prompts = framed
        .iter()
        .map(|e| condition_prompt(engine, policy, retrieval, e, config))
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let params = GenerationParams {
        temperature: 0.0,
        max_tokens: Some(cfg.max_tokens),
        stop: REASONING_STOPS.iter().map(|s| (*s).to_owned()).collect(),
        ..GenerationParams::default()
    };
    let samples = rollout::sample(engine, &prompts, 1, &params, config.seed, 8)
        .map_err(|e| TrainError::new("own reasoning", e))?;
    let rollout_secs = started.elapsed().as_secs_f64();
    let mut seqs = Vec::with_capacity(framed.len());
    let mut reasoning_tokens = 0;
    let mut reasoned: u32 = 0;
    for ((e, prompt), group) in framed.iter().zip(&prompts).zip(&samples) {
        let Some(s) = group.first() else { continue };
        reasoning_tokens += s.completion_tokens;
        reasoned += 1;
        seqs.push(chain::own_reasoning_sequence(
            engine,
            prompt,
            &s.chain.reasoning,
            e.label,
        ));
        if config.warm_start.probe {
            seqs.push(chain::probe_sequence(engine, prompt, e.label));
        }
    }
    trainer
        .metrics
        .log(
            "own_reasoning",
            trainer.updates,
            json!({
                "round": round,
                "requests": reasoned,
                "reasoning_tokens_mean": reasoning_tokens as f64 / f64::from(reasoned.max(1)),
                "rollout_seconds": rollout_secs,
            }),
        )
        .map_err(TrainError::io("metrics"))?;
    let pass = WarmStart {
        epochs: cfg.rounds,
        lr_schedule: LrSchedule::Constant,
        ..config.warm_start.clone()
    };
    let mut schedule = SftSchedule::new(cfg.lr, seqs.len(), &pass);
    trainer.opt.config.lr = cfg.lr;
    trainer.sft_epoch(
        "own_reasoning",
        &format!("own reasoning round {}/{}", round + 1, cfg.rounds),
        &seqs,
        round,
        &pass,
        &mut schedule,
        &mut rng,
    )
}
