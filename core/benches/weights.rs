//! What serving an adapter costs the engine: decode with every session on the base weights, on
//! the adapter, and mixed (the adapter's probes and deliberations beside the base model's
//! answers, as `adaptive` over a release adapter runs them), and the prefill cost per token on
//! each weight group (the probe is one prefill). Alternating rounds in one run, on the default
//! model and its release adapter, so the ratios compare like with like.
//!
//! Run: `cargo bench -p cada-core --bench weights` (about 2 minutes on 2 cores); prints the
//! best of 3 rounds per case and writes target/bench/weights.json.

use std::path::PathBuf;
use std::time::Instant;

use cada_core::{
    ChatMessage, ChatRole, Engine, EngineConfig, Event, GenerationParams, Registry, Session,
    Weights,
};
use serde_json::json;

const ROUNDS: usize = 3;
const TOKENS: u32 = 64;

fn engine() -> Engine {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let registry = Registry::load(&root.join("models/registry.toml")).expect("registry");
    let model = registry.resolve_chat(None).expect("default model");
    let (_, adapter) = registry
        .release_adapter(&model.id)
        .expect("the default model has a release adapter");
    let mut c = EngineConfig::new(model.path);
    c.n_slots = 4;
    c.ctx_per_slot = 512;
    c.adapter = Some(adapter.path);
    Engine::load(c).expect("engine loads")
}

/// Seconds for one session per entry of `weights` to generate `TOKENS` tokens, all at once.
fn decode(engine: &Engine, weights: &[Weights]) -> f64 {
    let params = GenerationParams {
        temperature: 0.0,
        max_tokens: Some(TOKENS),
        ignore_eos: true,
        ..GenerationParams::default()
    };
    let started = Instant::now();
    let mut sessions: Vec<Session> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let prompt = engine
                .chat_prompt(&[ChatMessage::new(
                    ChatRole::User,
                    format!("Tell me about topic number {i}."),
                )])
                .expect("prompt");
            let mut s = engine.session().expect("session");
            s.reset_to(w).expect("reset");
            s.generate(prompt, params.clone(), true).expect("op");
            s
        })
        .collect();
    for s in &mut sessions {
        loop {
            match s.next_blocking().expect("event") {
                Event::Done { .. } => break,
                Event::Error(e) => panic!("{e}"),
                _ => {}
            }
        }
    }
    started.elapsed().as_secs_f64()
}

/// Milliseconds per token of one 64-token prefill (a score operation) on `weights`.
fn prefill(engine: &Engine, weights: Weights) -> f64 {
    let prompt = engine.tokens(&"word ".repeat(64));
    let candidates = vec![engine.tokens(" allow")];
    let mut s = engine.session().expect("session");
    s.reset_to(weights).expect("reset");
    let started = Instant::now();
    s.score_blocking(prompt.clone(), &candidates, true)
        .expect("score");
    started.elapsed().as_secs_f64() * 1000.0 / prompt.len() as f64
}

fn main() {
    use Weights::{Adapted, Base};
    let engine = engine();
    let cases: [(&str, Vec<Weights>); 5] = [
        ("1 base", vec![Base]),
        ("1 adapted", vec![Adapted]),
        ("4 base", vec![Base; 4]),
        ("4 adapted", vec![Adapted; 4]),
        ("2 base + 2 adapted", vec![Base, Adapted, Base, Adapted]),
    ];
    let mut best = vec![f64::MAX; cases.len()];
    let mut pp = [f64::MAX; 2];
    for _ in 0..ROUNDS {
        for (b, (_, weights)) in best.iter_mut().zip(&cases) {
            *b = b.min(decode(&engine, weights));
        }
        for (p, w) in pp.iter_mut().zip([Base, Adapted]) {
            *p = p.min(prefill(&engine, w));
        }
    }
    println!("decode, {TOKENS} tokens per session, best of {ROUNDS}:");
    for ((name, weights), s) in cases.iter().zip(&best) {
        let tps = weights.len() as f64 * f64::from(TOKENS) / s;
        println!(
            "  {name:<20} {s:6.2} s  {tps:6.1} tok/s  {:.2}x 4 base",
            s / best[2]
        );
    }
    println!(
        "prefill of 64 tokens: base {:.2} ms/token, adapted {:.2} ms/token ({:.2}x)",
        pp[0],
        pp[1],
        pp[1] / pp[0]
    );
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).expect("bench dir");
    let report = json!({
        "decode_seconds": cases.iter().zip(&best).map(|((n, _), s)| json!({"case": n, "seconds": s})).collect::<Vec<_>>(),
        "prefill_ms_per_token": {"base": pp[0], "adapted": pp[1]},
        "system": cada_core::engine::cpu::system_info(),
    });
    std::fs::write(out.join("weights.json"), report.to_string()).expect("write report");
}
