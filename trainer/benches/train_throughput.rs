//! Trainer throughput on the default model, one process, same machine:
//! 1. candle forward (no gradient) tokens/s on a batch of training-sized sequences,
//! 2. candle forward + backward tokens/s with a LoRA adapter on every projection (an SFT step),
//! 3. rollout tokens/s through the llama.cpp engine with 8 chains sampled at once.
//!
//! Run: `cargo bench -p cada-trainer --bench train_throughput`.

use std::path::PathBuf;
use std::time::Instant;

use cada_core::{ChatMessage, ChatRole, Engine, EngineConfig, Event, GenerationParams, Registry};
use cada_trainer::loss;
use cada_trainer::model::{AdapterCtx, Llama, LoraConfig};
use candle_core::{Device, Tensor};

const BATCH: usize = 4;
const LEN: usize = 160;
const RUNS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let registry = Registry::load(&root.join("models/registry.toml")).expect("registry");
    let path = registry.resolve_chat(None).expect("model").path;
    let model = Llama::load(&path, &Device::Cpu).expect("load");
    let lora = model
        .new_lora(
            LoraConfig {
                rank: 16,
                alpha: 32.0,
                ..LoraConfig::default()
            },
            1,
        )
        .expect("lora");
    let ids: Vec<u32> = (0..BATCH * LEN)
        .map(|i| (i * 7919 % 40000) as u32 + 100)
        .collect();
    let ids = Tensor::from_vec(ids, (BATCH, LEN), &Device::Cpu).expect("ids");
    // Score the last 100 positions of each row, as an SFT step scores the completion.
    let positions: Vec<Vec<u32>> = (0..BATCH)
        .map(|_| (LEN as u32 - 101..LEN as u32 - 1).collect())
        .collect();
    let targets: Vec<Vec<u32>> = (0..BATCH)
        .map(|_| (0..100).map(|i| 200 + i).collect())
        .collect();
    let tokens = (BATCH * LEN) as f64;
    let ctx = AdapterCtx {
        lora: Some(&lora),
        dropout_seed: Some(1),
    };

    let mut fwd = Vec::new();
    let mut step = Vec::new();
    for _ in 0..=RUNS {
        let t = Instant::now();
        let logp = model
            .token_logprobs(
                &ids,
                &positions,
                &targets,
                AdapterCtx {
                    lora: Some(&lora),
                    dropout_seed: None,
                },
            )
            .expect("forward");
        let _ = logp.detach();
        fwd.push(tokens / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let logp = model
            .token_logprobs(&ids, &positions, &targets, ctx)
            .expect("forward");
        let grads = loss::sft(&logp)
            .expect("loss")
            .backward()
            .expect("backward");
        drop(grads);
        step.push(tokens / t.elapsed().as_secs_f64());
    }
    fwd.remove(0);
    step.remove(0);
    let (fwd, step) = (median(fwd), median(step));
    eprintln!("candle: forward {fwd:.1} tok/s, forward+backward {step:.1} tok/s");
    drop(model);

    let mut c = EngineConfig::new(&path);
    c.n_slots = 8;
    c.ctx_per_slot = 512;
    let engine = Engine::load(c).expect("engine");
    let mut rates = Vec::new();
    for run in 0..=RUNS {
        let t = Instant::now();
        let gens: Vec<_> = (0..8)
            .map(|i| {
                let prompt = engine
                    .chat_prompt(&[ChatMessage::new(
                        ChatRole::User,
                        "Is it safe to mix bleach and vinegar for cleaning?",
                    )])
                    .expect("prompt");
                let params = GenerationParams {
                    temperature: 1.0,
                    seed: Some((run * 8 + i) as u32),
                    max_tokens: Some(128),
                    ignore_eos: true,
                    ..GenerationParams::default()
                };
                engine.generate(prompt, params).expect("generate")
            })
            .collect();
        let mut n = 0;
        for mut g in gens {
            loop {
                match g.next_blocking().expect("event") {
                    Event::Done { usage, .. } => {
                        n += usage.completion_tokens;
                        break;
                    }
                    Event::Error(e) => panic!("{e}"),
                    _ => {}
                }
            }
        }
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    rates.remove(0);
    let rollout = median(rates);
    println!("| measure | value |");
    println!("|---|---|");
    println!("| candle forward, {BATCH} x {LEN} tokens | {fwd:.1} tok/s |");
    println!("| candle forward + backward (LoRA r16, all projections) | {step:.1} tok/s ({:.2}x the forward's time per token) |", fwd / step);
    println!("| llama.cpp rollouts, 8 chains at once | {rollout:.1} tok/s ({:.1}x candle forward + backward) |", rollout / step);
    println!(
        "threads: candle default, llama.cpp every core; median of {RUNS} runs after a warm-up"
    );
}
