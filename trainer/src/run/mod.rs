//! `cada-trainer run`: one training run from data to a promoted (or rejected) adapter.
//!
//! 1. Data: the case library's precedents plus labelled case-store exports; hashed.
//! 2. Warm start (rejection sampling): chains sampled with the case-augmented context through
//!    llama.cpp, scored, the best kept (the precedent's written chain when no sample earns the
//!    full reward), then fine-tuned on in the serving layout of `trained` mode.
//! 3. GRPO on groups of the model's own chains, sampled through llama.cpp with the adapter as
//!    it trains, and DPO on each group's best and worst chain.
//! 4. Export, evaluation through a real gateway against the promoted model, promotion.

mod baseline;
mod batch;
pub mod calibrate;
mod checkpoint;
pub mod config;
mod gate;
mod metrics;
mod own_reasoning;
mod plot;
pub mod probe;
mod promotion;
mod report;
mod rollout;
mod slices;
mod train;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cada_core::embed::{Embedder, PrecedentIndex};
use cada_core::policy::{Deliberation, DevItem, Policy};
use cada_core::{Engine, EngineConfig, GenerationParams, Prompt, Registry};
use serde::Serialize;
use serde_json::json;

use config::Condition;
pub use config::TrainConfig;
pub use gate::{measure_utility, GateRun, UtilityRun};
use metrics::Metrics;
use rollout::Sample;
use train::{SftSchedule, Trainer};

use crate::adapter::{self, AdapterMeta};
use crate::chain::{self, Sequence};
use crate::data::{self, Example};
use crate::framing;
use crate::model::{Llama, ModelError};
use crate::optim::AdamW;
use crate::reward::{self, Reward};
use baseline::Served;
use cada_core::adapters::{self as promote, AdapterEntry, AdapterRegistry, Figures};
use checkpoint::Checkpoint;

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
#[error("{stage}: {message}")]
pub struct TrainError {
    pub stage: &'static str,
    pub message: String,
}

impl TrainError {
    pub fn new(stage: &'static str, e: impl std::fmt::Display) -> Self {
        Self {
            stage,
            message: e.to_string(),
        }
    }

    pub fn io(stage: &'static str) -> impl Fn(std::io::Error) -> Self {
        move |e| Self::new(stage, e)
    }
}

impl From<ModelError> for TrainError {
    fn from(e: ModelError) -> Self {
        Self::new("model", e)
    }
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        Self::new("model", e)
    }
}

/// Options of one invocation (not part of the recorded configuration).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The model registry file.
    pub registry: PathBuf,
    /// Promote when the gate passes (off: evaluate and report only).
    pub promote: bool,
    /// Skip the evaluation and promotion (for smoke runs).
    pub skip_eval: bool,
    /// Continue the run in this directory from its checkpoint (its `config.toml` is the
    /// configuration to pass).
    pub resume: Option<PathBuf>,
    /// Stop (checkpointed) once this many warm-start epochs are done, e.g. to train in slices
    /// on machines that are lent for a limited time.
    pub pause_after_epochs: Option<usize>,
}

/// What a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub adapter: PathBuf,
    pub data_hash: String,
    pub examples: usize,
    pub train_seconds: f64,
    pub candidate: Option<Figures>,
    pub baseline: Option<Figures>,
    pub baseline_version: Option<String>,
    /// The refuse threshold written into the adapter and its held-out figures.
    pub calibration: Option<calibrate::Calibration>,
    pub promoted: bool,
    pub decision: String,
}

/// Runs the whole pipeline.
pub fn run(config: &TrainConfig, opts: &RunOptions) -> Result<RunOutcome, TrainError> {
    config
        .validate()
        .map_err(|e| TrainError::new("config", e))?;
    let registry = Registry::load(&opts.registry).map_err(|e| TrainError::new("registry", e))?;
    let base = resolve_model(&registry, &config.model)?;
    let policy = Policy::load(&config.policy_dir).map_err(|e| TrainError::new("policy", e))?;
    let mut sources = vec![data::from_library(&policy.cases)];
    for extra in &config.extra_data {
        sources.push(data::from_export(extra).map_err(|e| TrainError::new("data", e))?);
    }
    for file in &config.labelled {
        sources.push(data::from_labelled(file).map_err(|e| TrainError::new("data", e))?);
    }
    let examples = data::merge(sources).map_err(|e| TrainError::new("data", e))?;
    refuse_leaks(config, &examples)?;
    let data_hash = data::hash(&examples);
    let (examples, held_out) = calibrate::split_sources(
        examples,
        config.calibrate.holdout,
        config.calibrate.labelled_holdout,
        config.seed,
    );
    let (run_id, run_dir, resumed) = open_run_dir(config, opts, &data_hash)?;
    let mut metrics =
        Metrics::create(&run_dir.join("metrics.jsonl")).map_err(TrainError::io("metrics"))?;
    let validation = match &config.calibrate.data {
        Some(path) if !path.as_os_str().is_empty() => {
            cada_core::policy::load_dev(path).map_err(|e| TrainError::new("calibration", e))?
        }
        _ => Vec::new(),
    };
    let calibration_items = calibrate::items(validation, &held_out);
    let calibration_file = run_dir.join("calibration.jsonl");
    cada_core::policy::write_jsonl(&calibration_file, &calibration_items)
        .map_err(TrainError::io("calibration"))?;
    eprintln!(
        "{run_id}: {} examples to train on ({} held out), {} prompts to calibrate on (data {}), base {}",
        examples.len(),
        held_out.len(),
        calibration_items.len(),
        &data_hash[..12],
        base.display()
    );

    let started = Instant::now();
    let prior_seconds = resumed.as_ref().map_or(0.0, |c| c.train_seconds);
    let deadline =
        started + Duration::from_secs_f64((config.budget_minutes * 60.0 - prior_seconds).max(0.0));
    let device = candle_core::Device::Cpu;
    let model = Llama::load(&base, &device)?;
    let lora = model.new_lora(config.lora.clone(), config.seed)?;
    eprintln!(
        "model loaded: {} layers, LoRA rank {} on {} projections ({} parameters)",
        model.config.n_layers,
        config.lora.rank,
        lora.pairs.len(),
        lora.n_params()
    );
    let mut trainer = Trainer {
        model: &model,
        lora: &lora,
        opt: AdamW::new(lora.vars(), config.optim.clone())?,
        metrics: &mut metrics,
        rng: train::rng(config.seed),
        seed: config.seed,
        deadline,
        updates: 0,
    };
    let mut state = resumed.unwrap_or_else(|| Checkpoint {
        epochs_done: 0,
        own_rounds_done: 0,
        trained: false,
        updates: 0,
        warm_updates: 0,
        opt_step: 0,
        train_seconds: 0.0,
        data_hash: data_hash.clone(),
        tensors: String::new(),
    });
    if !state.tensors.is_empty() {
        state.restore(&run_dir, &lora, &mut trainer.opt)?;
        trainer.updates = state.updates;
        eprintln!(
            "resuming after {} warm-start epochs{} ({} updates, {:.0} s trained)",
            state.epochs_done,
            if state.trained { ", GRPO and DPO" } else { "" },
            state.updates,
            state.train_seconds
        );
    }
    let mut engine = rollout_engine(&base, None, config)?;
    let retrieval = if config.warm_start.samples > 0 || config.condition == Condition::Cases {
        Some(Retrieval::load(&registry, &policy)?)
    } else {
        None
    };

    // Warm start, a checkpoint after each epoch.
    let kept = if state.trained {
        Vec::new()
    } else {
        warm_start_chains(
            &engine,
            retrieval.as_ref(),
            &policy,
            &examples,
            config,
            &mut trainer,
        )?
    };
    // Each kept chain trains one sequence, and its probe where `warm_start.probe` is set.
    let per_chain = 1 + usize::from(config.warm_start.probe);
    let kept_examples: Vec<&Example> = kept.iter().map(|(e, _)| *e).collect();
    let outside = kept_examples
        .iter()
        .filter(|e| e.origin == data::Origin::Outside)
        .count();
    // Every epoch's slice has the same length.
    let per_epoch = slices::pass_indices(
        &kept_examples,
        config.warm_start.labelled_share,
        config.seed,
        slices::Passes::WarmStart,
        0,
    )
    .len();
    let mut schedule = SftSchedule::new(config.optim.lr, per_epoch * per_chain, &config.warm_start);
    schedule.done = state.warm_updates;
    let mut budget_left = true;
    for epoch in state.epochs_done..config.warm_start.epochs {
        if state.trained {
            break;
        }
        if opts.pause_after_epochs.is_some_and(|n| epoch >= n) {
            let outcome = RunOutcome::paused(run_id, run_dir, data_hash, &examples, &state);
            eprintln!("{}", outcome.decision);
            return Ok(outcome);
        }
        let mut rng = train::epoch_rng(config.seed, epoch);
        let slice = slices::pass_indices(
            &kept_examples,
            config.warm_start.labelled_share,
            config.seed,
            slices::Passes::WarmStart,
            epoch,
        );
        let requests = framing::epoch_requests(
            slice.iter().map(|&i| kept[i].0.request.as_str()),
            config.warm_start.framing,
            &mut rng,
        );
        let mut seqs = Vec::with_capacity(slice.len() * per_chain);
        for (&i, request) in slice.iter().zip(requests) {
            let (e, chain) = &kept[i];
            let framed = Example {
                request,
                ..(*e).clone()
            };
            seqs.extend(layout(
                &engine,
                &policy,
                retrieval.as_ref(),
                &framed,
                chain,
                config,
            )?);
        }
        budget_left = trainer.sft_epoch(
            "warm_start",
            &format!(
                "warm start epoch {}/{}",
                epoch + 1,
                config.warm_start.epochs
            ),
            &seqs,
            epoch,
            &config.warm_start,
            &mut schedule,
            &mut rng,
        )?;
        if !budget_left {
            break;
        }
        state.epochs_done = epoch + 1;
        state.warm_updates = schedule.done;
        state.note_progress(&trainer, prior_seconds + started.elapsed().as_secs_f64());
        state.save(&run_dir, &lora, &trainer.opt)?;
    }
    eprintln!(
        "warm start: {} epochs of {} examples ({} of them outside data, {} per epoch), {} updates, {:.0} s",
        state.epochs_done,
        kept.len(),
        outside,
        per_epoch,
        schedule.done,
        started.elapsed().as_secs_f64()
    );

    // Verdict rounds on the model's own reasoning, once the warm start is complete.
    let warm_done = state.epochs_done >= config.warm_start.epochs;
    for round in state.own_rounds_done..config.own_reasoning.rounds {
        if state.trained || !budget_left || !warm_done || trainer.out_of_time() {
            break;
        }
        engine = reload_engine(engine, &lora, &model, &base, &run_dir, config)?;
        budget_left = own_reasoning::round(
            &mut trainer,
            &engine,
            &policy,
            retrieval.as_ref(),
            &examples,
            config,
            round,
        )?;
        if !budget_left {
            break;
        }
        state.own_rounds_done = round + 1;
        state.note_progress(&trainer, prior_seconds + started.elapsed().as_secs_f64());
        state.save(&run_dir, &lora, &trainer.opt)?;
    }
    if state.own_rounds_done > 0 {
        eprintln!(
            "own reasoning: {} rounds, {:.0} s",
            state.own_rounds_done,
            started.elapsed().as_secs_f64()
        );
    }

    // GRPO, collecting DPO pairs.
    let mut pairs = Vec::new();
    let mut exported = Exported::default();
    if config.grpo.steps > 0 && budget_left && !state.trained && !trainer.out_of_time() {
        trainer.rng = train::rng(config.seed);
        trainer.opt.config.lr = config.grpo.lr;
        let mut progress = crate::progress::Progress::new("grpo", config.grpo.steps);
        for step in 0..config.grpo.steps {
            if trainer.out_of_time() {
                break;
            }
            if step % config.grpo.reload_every.max(1) == 0 {
                engine = reload_engine(engine, &lora, &model, &base, &run_dir, config)?;
            }
            let picked = trainer.pick(examples.len(), config.grpo.prompts_per_step);
            let prompts = picked
                .iter()
                .map(|&i| {
                    condition_prompt(&engine, &policy, retrieval.as_ref(), &examples[i], config)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let params = GenerationParams {
                temperature: config.grpo.temperature,
                max_tokens: Some(config.grpo.max_tokens),
                ..GenerationParams::default()
            };
            let seed = trainer.seed();
            let samples = rollout::sample(&engine, &prompts, config.grpo.group, &params, seed, 8)
                .map_err(|e| TrainError::new("rollouts", e))?;
            let mut groups = Vec::new();
            let mut all_rewards: Vec<Reward> = Vec::new();
            for (&i, (group, prompt)) in picked.iter().zip(samples.iter().zip(&prompts)) {
                let e = &examples[i];
                let prompt_text = engine.render_tokens(prompt);
                let scored: Vec<(Sequence, Reward)> = group
                    .iter()
                    .map(|s| {
                        let r =
                            reward::score(&s.chain, e.label, s.completion_tokens, &config.reward);
                        exported.rollouts.push(json!({
                            "prompt": prompt_text,
                            "completion": s.text,
                            "reward": r.total,
                            "rewards": r,
                            "label": e.label,
                            "example": e.id,
                            "step": step,
                        }));
                        (sampled_sequence(&engine, prompt, s), r)
                    })
                    .collect();
                all_rewards.extend(scored.iter().map(|(_, r)| *r));
                if let (Some(best), Some(worst)) = (
                    scored.iter().max_by(|a, b| a.1.total.total_cmp(&b.1.total)),
                    scored.iter().min_by(|a, b| a.1.total.total_cmp(&b.1.total)),
                ) {
                    if best.1.total - worst.1.total >= 0.5 {
                        let text = |s: &Sequence| engine.detokenize(&s.tokens[s.prompt_len..]);
                        exported.pairs.push(json!({
                            "prompt": prompt_text,
                            "chosen": text(&best.0),
                            "rejected": text(&worst.0),
                            "chosen_reward": best.1.total,
                            "rejected_reward": worst.1.total,
                        }));
                        pairs.push((best.0.clone(), worst.0.clone()));
                    }
                }
                let rewards = scored.iter().map(|(_, r)| r.total).collect();
                groups.push((scored.into_iter().map(|(s, _)| s).collect(), rewards));
            }
            let figures = trainer.grpo_step(&groups, &config.grpo)?;
            let mean = |f: fn(&Reward) -> f32| {
                all_rewards.iter().map(f).sum::<f32>() / all_rewards.len().max(1) as f32
            };
            trainer
                .metrics
                .log(
                    "grpo",
                    trainer.updates,
                    json!({
                        "grpo_step": step,
                        "reward": mean(|r| r.total),
                        "reward_verdict": mean(|r| r.verdict),
                        "reward_consistency": mean(|r| r.consistency),
                        "reward_format": mean(|r| r.format),
                        "overlength": mean(|r| r.overlength),
                        "update": figures,
                    }),
                )
                .map_err(TrainError::io("metrics"))?;
            progress.set(
                step + 1,
                &format!(
                    "reward {:.3} (verdict {:.2})",
                    mean(|r| r.total),
                    mean(|r| r.verdict)
                ),
            );
        }
        progress.finish("");
    }
    drop(engine);
    if config.dpo.epochs > 0 && !pairs.is_empty() && !trainer.out_of_time() {
        trainer.opt.config.lr = config.dpo.lr;
        let made = trainer.dpo(&pairs, &config.dpo)?;
        eprintln!("dpo: {} pairs, {made} updates", pairs.len());
    }
    let train_seconds = prior_seconds + started.elapsed().as_secs_f64();
    if !state.trained {
        exported.write(&run_dir)?;
        state.trained = true;
        state.note_progress(&trainer, train_seconds);
        state.save(&run_dir, &lora, &trainer.opt)?;
    }

    // Export.
    let index = AdapterRegistry::beside(&opts.registry);
    let parent = index
        .read()
        .map_err(|e| TrainError::new("adapter registry", e))?
        .promoted;
    let mut meta = AdapterMeta {
        version: run_id.clone(),
        parent: parent.clone(),
        data_hash: data_hash.clone(),
        policy_version: policy.version.clone(),
        refuse_log_odds: None,
        probe: None,
    };
    let adapter_path = run_dir.join("adapter.gguf");
    adapter::write(&lora, &model.config, &meta, &adapter_path)?;
    drop(trainer);
    eprintln!(
        "adapter written: {} after {train_seconds:.0} s",
        adapter_path.display()
    );
    let calibration = if calibration_items.is_empty() || opts.skip_eval {
        None
    } else {
        eprintln!(
            "calibrating the refuse threshold on {} prompts",
            calibration_items.len()
        );
        let (report, picked) = calibrate::measure(
            &GateRun {
                registry: opts.registry.clone(),
                model: config.model.clone(),
                adapter: Some(adapter_path.clone()),
                policy_dir: config.policy_dir.clone(),
                dev: calibration_file,
                data_dir: run_dir.join("eval-calibration"),
                threads: config.threads,
                concurrency: config.promote.eval_concurrency,
                max_tokens: 1,
                limit: None,
            },
            config.calibrate.min_benign_compliance,
        )
        .map_err(|e| TrainError::new("calibration", e))?;
        save_report(&run_dir, "calibration", &report)?;
        if let Some(c) = &picked {
            meta.refuse_log_odds = Some(c.refuse_log_odds);
            adapter::write(&lora, &model.config, &meta, &adapter_path)?;
            metrics
                .log("calibration", 0, json!(c))
                .map_err(TrainError::io("metrics"))?;
            eprintln!(
                "refuse threshold {:.2} (log-odds): held-out harmful refusal {:.1}% and benign \
                 compliance {:.1}% (most probable verdict: {:.1}% and {:.1}%)",
                c.refuse_log_odds,
                c.harmful_refusal_rate * 100.0,
                c.benign_compliance_rate * 100.0,
                c.argmax_harmful_refusal_rate * 100.0,
                c.argmax_benign_compliance_rate * 100.0
            );
        }
        picked
    };
    if config.warm_start.probe && !calibration_items.is_empty() {
        let picked = probe_band(&base, &adapter_path, &calibration_items, config)?;
        if let Some(c) = &picked {
            meta.probe = Some(c.band);
            adapter::write(&lora, &model.config, &meta, &adapter_path)?;
            metrics
                .log("probe_calibration", 0, json!(c))
                .map_err(TrainError::io("metrics"))?;
            eprintln!(
                "probe band [{:.2}, {:.2}) (log-odds): of {} benign calibration prompts {} \
                 served directly and {} refused; of {} harmful {} served; {} deliberated",
                c.band.serve_below,
                c.band.refuse_from,
                c.benign,
                c.benign_served,
                c.benign_refused,
                c.harmful,
                c.harmful_served,
                c.deliberated
            );
        }
    }
    drop(model);

    let mut outcome = RunOutcome {
        run_id: run_id.clone(),
        run_dir: run_dir.clone(),
        adapter: adapter_path.clone(),
        data_hash: data_hash.clone(),
        examples: examples.len(),
        train_seconds,
        candidate: None,
        baseline: None,
        baseline_version: parent.clone(),
        calibration,
        promoted: false,
        decision: "not evaluated".into(),
    };
    if !opts.skip_eval {
        gate_and_promote(
            config,
            opts,
            &registry,
            &index,
            &base,
            &policy,
            &mut outcome,
        )?;
    }
    report::write(&run_dir, config, &outcome, &metrics.lines)?;
    Ok(outcome)
}

impl RunOutcome {
    fn paused(
        run_id: String,
        run_dir: PathBuf,
        data_hash: String,
        examples: &[Example],
        state: &Checkpoint,
    ) -> Self {
        Self {
            adapter: run_dir.join("adapter.gguf"),
            decision: format!(
                "paused after {} warm-start epochs; continue with `cada-trainer run --resume {}`",
                state.epochs_done,
                run_dir.display()
            ),
            run_id,
            run_dir,
            data_hash,
            examples: examples.len(),
            train_seconds: state.train_seconds,
            candidate: None,
            baseline: None,
            baseline_version: None,
            calibration: None,
            promoted: false,
        }
    }
}

/// A new run directory with the configuration recorded, or (`opts.resume`) the directory of
/// the run to continue and its checkpoint, which must have been made from the same data.
fn open_run_dir(
    config: &TrainConfig,
    opts: &RunOptions,
    data_hash: &str,
) -> Result<(String, PathBuf, Option<Checkpoint>), TrainError> {
    if let Some(dir) = &opts.resume {
        let state = Checkpoint::load(dir)?.ok_or_else(|| {
            TrainError::new(
                "resume",
                format!("{} has no checkpoint.json to resume from", dir.display()),
            )
        })?;
        if state.data_hash != data_hash {
            return Err(TrainError::new(
                "resume",
                format!(
                    "the training data changed since the checkpoint (data {} then, {} now)",
                    &state.data_hash[..12.min(state.data_hash.len())],
                    &data_hash[..12]
                ),
            ));
        }
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        return Ok((id, dir.clone(), Some(state)));
    }
    let run_id = format!("run-{}", promote::now());
    let run_dir = config.runs_dir.join(&run_id);
    std::fs::create_dir_all(&run_dir).map_err(TrainError::io("run directory"))?;
    std::fs::write(
        run_dir.join("config.toml"),
        toml::to_string_pretty(config).map_err(|e| TrainError::new("config", e))?,
    )
    .map_err(TrainError::io("run directory"))?;
    Ok((run_id, run_dir, None))
}

/// The registry id or path of the base model, resolved to its GGUF.
fn resolve_model(registry: &Registry, model: &str) -> Result<PathBuf, TrainError> {
    if !model.is_empty() && Path::new(model).is_file() {
        return Ok(PathBuf::from(model));
    }
    registry
        .resolve_chat((!model.is_empty()).then_some(model))
        .map(|m| m.path)
        .map_err(|e| TrainError::new("registry", e))
}

fn rollout_engine(
    base: &Path,
    adapter: Option<&Path>,
    config: &TrainConfig,
) -> Result<Engine, TrainError> {
    let mut c = EngineConfig::new(base);
    c.n_slots = 8;
    c.ctx_per_slot = 2048;
    c.max_queue = 1024;
    c.n_threads = (config.threads > 0).then_some(config.threads);
    c.adapter = adapter.map(Path::to_path_buf);
    Engine::load(c).map_err(|e| TrainError::new("rollout engine", e))
}

/// The rollout engine again, serving the adapter as it stands (written to the run's
/// `rollout-adapter.gguf`); the old engine is freed first.
fn reload_engine(
    old: Engine,
    lora: &crate::model::Lora,
    model: &Llama,
    base: &Path,
    run_dir: &Path,
    config: &TrainConfig,
) -> Result<Engine, TrainError> {
    drop(old);
    let path = run_dir.join("rollout-adapter.gguf");
    adapter::write(lora, &model.config, &AdapterMeta::default(), &path)?;
    rollout_engine(base, Some(&path), config)
}

/// Scores the calibration prompts with the exported adapter's probe and picks its band.
fn probe_band(
    base: &Path,
    adapter_path: &Path,
    items: &[DevItem],
    config: &TrainConfig,
) -> Result<Option<probe::ProbeCalibration>, TrainError> {
    eprintln!("calibrating the probe band on {} prompts", items.len());
    let engine = rollout_engine(base, Some(adapter_path), config)?;
    let scores = probe::scores(&engine, items).map_err(|e| TrainError::new("probe", e))?;
    Ok(probe::pick(
        &scores,
        config.calibrate.probe_max_harmful_served,
        config.calibrate.probe_max_benign_refused,
    ))
}

/// Retrieval for case-augmented prompts.
struct Retrieval {
    embedder: Embedder,
    index: PrecedentIndex,
}

impl Retrieval {
    fn load(registry: &Registry, policy: &Policy) -> Result<Self, TrainError> {
        let dir = registry
            .resolve_embedding(None, false)
            .map_err(|e| TrainError::new("retrieval", e))?;
        let embedder = Embedder::load(&dir).map_err(|e| TrainError::new("retrieval", e))?;
        let index = PrecedentIndex::load_or_build(policy, &embedder, None)
            .map_err(|e| TrainError::new("retrieval", e))?;
        Ok(Self { embedder, index })
    }

    /// The `cases` prompt of an example (its own case never among the precedents).
    fn prompt(
        &self,
        engine: &Engine,
        policy: &Policy,
        e: &Example,
        k: usize,
    ) -> Result<Prompt, TrainError> {
        rollout::cases_prompt(
            engine,
            policy,
            &self.index,
            &self.embedder,
            &e.request,
            &e.id,
            k,
        )
        .map_err(|err| TrainError::new("prompt", err))
    }
}

/// The prompt a training sequence is conditioned on: the bare request, or (condition `cases`)
/// the case-augmented context.
fn condition_prompt(
    engine: &Engine,
    policy: &Policy,
    retrieval: Option<&Retrieval>,
    e: &Example,
    config: &TrainConfig,
) -> Result<Prompt, TrainError> {
    match (config.condition, retrieval) {
        (Condition::Cases, Some(r)) => r.prompt(engine, policy, e, config.warm_start.precedents),
        _ => {
            chain::trained_prompt(engine, &e.request).map_err(|err| TrainError::new("prompt", err))
        }
    }
}

/// A sampled chain as a training sequence: the canonical layout when it parsed, else its raw
/// text (so malformed chains are still pushed down by their low reward).
fn sampled_sequence(engine: &Engine, prompt: &Prompt, s: &Sample) -> Sequence {
    chain::sequence(engine, prompt, &s.chain).unwrap_or_else(|| {
        let tokens: Vec<u32> = prompt.token_ids().into_iter().map(|t| t as u32).collect();
        let prompt_len = tokens.len();
        let mut tokens = tokens;
        tokens.extend(engine.token_ids(&s.text));
        tokens.push(engine.end_of_turn());
        Sequence {
            tokens,
            prompt_len,
            verdict_at: None,
        }
    })
}

/// A kept chain in the layout of the configured condition, and its probe (the verdict with no
/// reasoning) when `warm_start.probe` is set.
fn layout(
    engine: &Engine,
    policy: &Policy,
    retrieval: Option<&Retrieval>,
    e: &Example,
    chain: &Deliberation,
    config: &TrainConfig,
) -> Result<Vec<Sequence>, TrainError> {
    let prompt = condition_prompt(engine, policy, retrieval, e, config)?;
    let mut seqs = Vec::with_capacity(2);
    let answer_trained = chain
        .verdict
        .is_some_and(|v| config.warm_start.answer_labels.contains(&v));
    if chain.answer.trim().is_empty() || !answer_trained {
        // A verdict anchor (see `warm_start_chains`), or a label whose answer is left to the
        // base model: reasoning and verdict only.
        seqs.extend(
            chain
                .verdict
                .map(|v| chain::verdict_sequence(engine, &prompt, &chain.reasoning, v)),
        );
    } else {
        seqs.extend(chain::sequence(engine, &prompt, chain));
    }
    if let (true, Some(v)) = (config.warm_start.probe, chain.verdict) {
        // The probe always reads the bare request, whatever the training condition.
        let bare = chain::trained_prompt(engine, &e.request)
            .map_err(|err| TrainError::new("prompt", err))?;
        seqs.push(chain::probe_sequence(engine, &bare, v));
    }
    Ok(seqs)
}

/// Rejection sampling: for each example, `samples` chains with the case-augmented context; the
/// best one that earns every reward component is kept, else the written reference chain, else
/// (a reviewed store case: a label, maybe a note, no exemplar answer) a verdict anchor that
/// trains the reasoning note and the verdict only.
fn warm_start_chains<'e>(
    engine: &Engine,
    retrieval: Option<&Retrieval>,
    policy: &Policy,
    examples: &'e [Example],
    config: &TrainConfig,
    trainer: &mut Trainer<'_>,
) -> Result<Vec<(&'e Example, Deliberation)>, TrainError> {
    let w = &config.warm_start;
    let reference = |e: &Example| {
        e.rationale
            .as_ref()
            .zip(e.answer.as_ref())
            .map(|(r, a)| Deliberation {
                reasoning: chain::first_sentences(r, w.reasoning_sentences).to_owned(),
                verdict: Some(e.label),
                answer: chain::first_sentences(a, w.answer_sentences).to_owned(),
            })
    };
    let mut sampled: Vec<Vec<Sample>> = vec![Vec::new(); examples.len()];
    if let (true, Some(retrieval)) = (w.samples > 0, retrieval) {
        let prompts = examples
            .iter()
            .map(|e| retrieval.prompt(engine, policy, e, w.precedents))
            .collect::<Result<Vec<_>, _>>()?;
        let params = GenerationParams {
            temperature: w.temperature,
            max_tokens: Some(w.max_tokens),
            ..GenerationParams::default()
        };
        let t0 = Instant::now();
        let seed = trainer.seed();
        sampled = rollout::sample(engine, &prompts, w.samples, &params, seed, 8)
            .map_err(|e| TrainError::new("rollouts", e))?;
        let tokens: usize = sampled.iter().flatten().map(|s| s.completion_tokens).sum();
        eprintln!(
            "warm-start rollouts: {} chains, {tokens} tokens in {:.0} s ({:.1} tok/s)",
            examples.len() * w.samples,
            t0.elapsed().as_secs_f64(),
            tokens as f64 / t0.elapsed().as_secs_f64()
        );
    }
    // The reviewer's note as reasoning when it reads as one; the answer stays empty.
    let anchor = |e: &Example| Deliberation {
        reasoning: e
            .rationale
            .as_deref()
            .map(|r| chain::first_sentences(r, w.reasoning_sentences).to_owned())
            .unwrap_or_default(),
        verdict: Some(e.label),
        answer: String::new(),
    };
    let mut kept = Vec::new();
    let (mut own, mut written, mut anchors) = (0, 0, 0);
    for (e, samples) in examples.iter().zip(&sampled) {
        let best = samples
            .iter()
            .map(|s| {
                (
                    s,
                    reward::score(&s.chain, e.label, s.completion_tokens, &config.reward),
                )
            })
            .filter(|(_, r)| r.verdict == 1.0 && r.consistency == 1.0 && r.format == 1.0)
            .max_by(|a, b| a.1.total.total_cmp(&b.1.total));
        match (best, reference(e)) {
            (Some((s, _)), _) => {
                own += 1;
                kept.push((e, s.chain.clone()));
            }
            (None, Some(r)) => {
                written += 1;
                kept.push((e, r));
            }
            (None, None) => {
                anchors += 1;
                kept.push((e, anchor(e)));
            }
        }
    }
    trainer
        .metrics
        .log(
            "warm_start_selection",
            0,
            json!({"own_chains": own, "written_chains": written, "verdict_anchors": anchors}),
        )
        .map_err(TrainError::io("metrics"))?;
    eprintln!(
        "warm start keeps {own} own chains, {written} written ones and {anchors} verdict anchors \
         (reviewed cases without an exemplar answer)"
    );
    Ok(kept)
}

/// A run's rollouts and preference pairs as text JSONL, in the prompt/completion/reward and
/// prompt/chosen/rejected layouts distributed RL trainers read.
#[derive(Debug, Default)]
struct Exported {
    rollouts: Vec<serde_json::Value>,
    pairs: Vec<serde_json::Value>,
}

impl Exported {
    fn write(&self, run_dir: &Path) -> Result<(), TrainError> {
        for (name, lines) in [
            ("rollouts.jsonl", &self.rollouts),
            ("pairs.jsonl", &self.pairs),
        ] {
            let mut out = String::new();
            for l in lines {
                out.push_str(&l.to_string());
                out.push('\n');
            }
            std::fs::write(run_dir.join(name), out).map_err(TrainError::io("export"))?;
        }
        Ok(())
    }
}

/// Stops a run that would train on an evaluation prompt (dev, utility, calibration or outside
/// held-out set): its figures there would not be figures on unseen requests.
fn refuse_leaks(config: &TrainConfig, examples: &[data::Example]) -> Result<(), TrainError> {
    let sets = [
        Some(&config.dev),
        config.promote.utility.as_ref(),
        config.promote.outside.as_ref(),
        config.calibrate.data.as_ref(),
    ];
    for path in sets.into_iter().flatten() {
        if path.as_os_str().is_empty() || !path.exists() {
            continue;
        }
        let items = cada_core::policy::load_dev(path).map_err(|e| TrainError::new("data", e))?;
        let leaked = data::leaked(examples, &items);
        if !leaked.is_empty() {
            return Err(TrainError::new(
                "data",
                format!(
                    "{} training requests are also prompts of {} (first: {}); remove them from \
                     the training data",
                    leaked.len(),
                    path.display(),
                    leaked[..leaked.len().min(5)].join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Evaluates the candidate against what is served (`baseline.rs`) and promotes on success.
fn gate_and_promote(
    config: &TrainConfig,
    opts: &RunOptions,
    registry: &Registry,
    index: &AdapterRegistry,
    base: &Path,
    policy: &Policy,
    outcome: &mut RunOutcome,
) -> Result<(), TrainError> {
    let dev_sha = gate::dev_sha256(&config.dev).map_err(|e| TrainError::new("eval", e))?;
    let gate_run = |adapter: Option<PathBuf>, name: &str| GateRun {
        registry: opts.registry.clone(),
        model: config.model.clone(),
        adapter,
        policy_dir: config.policy_dir.clone(),
        dev: match name {
            "utility" => config.promote.utility.clone().unwrap_or_default(),
            "outside" => config.promote.outside.clone().unwrap_or_default(),
            _ => config.dev.clone(),
        },
        data_dir: outcome.run_dir.join(format!("eval-{name}")),
        threads: config.threads,
        concurrency: config.promote.eval_concurrency,
        max_tokens: config.promote.eval_max_tokens,
        limit: (config.promote.eval_limit > 0).then_some(config.promote.eval_limit),
    };
    let figures_of = |report: &crate::eval::Report| Figures {
        harmful_refusal_rate: report.figures.harmful_refusal_rate.unwrap_or(0.0),
        benign_compliance_rate: report.figures.benign_compliance_rate.unwrap_or(0.0),
        dev_sha256: dev_sha.clone(),
        policy_version: report.policy_version.clone().unwrap_or_default(),
        utility: None,
        utility_base: None,
        mismatch: report.figures.mismatch.rate,
        auc: report.figures.separation.auc,
        outside: None,
    };
    let comparable = |f: &Figures| {
        f.dev_sha256 == dev_sha
            && f.policy_version == policy.version
            && config.promote.eval_limit == 0
    };
    // The baseline: what the gateway serves without the candidate, by its recorded figures
    // when they are comparable.
    let served = Served::find(index, registry, &config.model)
        .map_err(|e| TrainError::new("adapter registry", e))?;
    outcome.baseline_version = served.name();
    let recorded = served
        .recorded(
            &index
                .read()
                .map_err(|e| TrainError::new("adapter registry", e))?,
        )
        .filter(comparable);
    let baseline = match recorded {
        Some(f) => f,
        None => {
            eprintln!(
                "evaluating the served baseline ({}) on the dev set",
                served.name().as_deref().unwrap_or("the base model")
            );
            let report = gate::evaluate(&gate_run(served.file(), "baseline"))
                .map_err(|e| TrainError::new("eval", e))?;
            save_report(&outcome.run_dir, "baseline", &report)?;
            let f = figures_of(&report);
            if config.promote.eval_limit == 0 {
                served
                    .record(index, f.clone())
                    .map_err(|e| TrainError::new("adapter registry", e))?;
            }
            f
        }
    };
    eprintln!("evaluating the candidate on the dev set");
    let report = gate::evaluate(&gate_run(Some(outcome.adapter.clone()), "candidate"))
        .map_err(|e| TrainError::new("eval", e))?;
    save_report(&outcome.run_dir, "candidate", &report)?;
    let mut candidate = figures_of(&report);
    if config.promote.utility.is_some() {
        eprintln!("evaluating the candidate and the base model on the utility set");
        let u = gate::measure_utility(&gate_run(Some(outcome.adapter.clone()), "utility"))
            .map_err(|e| TrainError::new("eval", e))?;
        save_report(&outcome.run_dir, "utility", &u.candidate)?;
        save_report(&outcome.run_dir, "utility-base", &u.base)?;
        let base = u.base.figures.utility;
        eprintln!(
            "utility: {}/{} of the questions the base model answers here still answered \
             correctly (base model: {}/{} of the set)",
            u.kept.correct, u.kept.n, base.correct, base.n
        );
        candidate.utility = u.kept.rate;
        candidate.utility_base = base.rate;
    }
    if let Some(data) = config
        .promote
        .outside
        .as_ref()
        .filter(|p| !p.as_os_str().is_empty())
    {
        eprintln!("evaluating the candidate on the held-out outside requests");
        let report = gate::evaluate(&gate_run(Some(outcome.adapter.clone()), "outside"))
            .map_err(|e| TrainError::new("eval", e))?;
        save_report(&outcome.run_dir, "outside", &report)?;
        candidate.outside =
            Some(gate::outside_figures(&report, data).map_err(|e| TrainError::new("eval", e))?);
    }
    let decision = promotion::decide(&baseline, &candidate, &config.promote);
    outcome.decision = decision.reason;
    if decision.passes && opts.promote && config.promote.eval_limit == 0 {
        let entry = AdapterEntry {
            version: outcome.run_id.clone(),
            parent: None,
            file: String::new(),
            sha256: cada_core::registry::sha256_file(&outcome.adapter)
                .map_err(|e| TrainError::new("promote", e))?,
            base_model: if config.model.is_empty() {
                base.display().to_string()
            } else {
                config.model.clone()
            },
            data_hash: outcome.data_hash.clone(),
            config: serde_json::to_value(config).map_err(|e| TrainError::new("promote", e))?,
            figures: candidate.clone(),
            created: promote::now(),
        };
        index
            .promote(&outcome.adapter, entry)
            .map_err(|e| TrainError::new("promote", e))?;
        outcome.promoted = true;
    }
    outcome.candidate = Some(candidate);
    outcome.baseline = Some(baseline);
    Ok(())
}

fn save_report(run_dir: &Path, name: &str, report: &crate::eval::Report) -> Result<(), TrainError> {
    let json = serde_json::to_string_pretty(report).map_err(|e| TrainError::new("report", e))?;
    std::fs::write(run_dir.join(format!("eval-{name}.json")), json)
        .map_err(TrainError::io("report"))
}
