//! Throughput benchmark on the default model, one run, same machine, same thread count:
//! 0. llama.cpp alone (no engine): decode tokens/s with 1 and with 8 sequences per step, the
//!    ceiling the engine and gateway can reach on this machine,
//! 1. raw engine decode tokens/s (single sequence, no HTTP),
//! 2. through the gateway, one stream: decode tokens/s and time to first token,
//! 3. through the gateway, 8 concurrent streams: aggregate tokens/s.
//!
//! Run: `cargo bench -p cada-gateway --bench throughput` (writes target/bench/throughput.json).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::num::NonZeroU32;

use cada_core::llama_cpp_2::context::params::LlamaContextParams;
use cada_core::llama_cpp_2::llama_batch::LlamaBatch;
use cada_core::llama_cpp_2::model::params::LlamaModelParams;
use cada_core::llama_cpp_2::model::LlamaModel;
use cada_core::llama_cpp_2::sampling::LlamaSampler;
use cada_core::{
    llama_backend, ChatMessage, ChatRole, Engine, EngineConfig, Event, GenerationParams, Registry,
};
use cada_gateway::Config;
use serde_json::{json, Value};

const TOKENS: u32 = 256;
const RUNS: usize = 3;
const CONCURRENT: usize = 8;
const PROMPT: &str = "Write a detailed essay about the history of sailing ships.";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn threads() -> u32 {
    std::env::var("CADA_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
}

fn engine_config() -> EngineConfig {
    let registry = Registry::load(&root().join("models/registry.toml")).expect("registry");
    let model = registry.resolve_chat(None).expect("default model");
    let mut c = EngineConfig::new(model.path);
    c.n_threads = Some(threads());
    c.n_slots = CONCURRENT;
    c.ctx_per_slot = 1024;
    c
}

fn params() -> GenerationParams {
    GenerationParams {
        temperature: 0.0,
        max_tokens: Some(TOKENS),
        ignore_eos: true,
        ..GenerationParams::default()
    }
}

/// (0) Greedy decode straight on llama.cpp with the engine's context settings: `sequences`
/// sequences advance one token per step; tokens/s over the decode steps only.
fn llama_alone(sequences: usize) -> f64 {
    let config = engine_config();
    let backend = llama_backend().expect("backend");
    let model =
        LlamaModel::load_from_file(backend, &config.model_path, &LlamaModelParams::default())
            .expect("model");
    let threads = threads() as i32;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(config.n_slots as u32 * config.ctx_per_slot))
        .with_n_batch(config.n_batch)
        .with_n_ubatch(config.n_batch)
        .with_n_seq_max(config.n_slots as u32)
        .with_kv_unified(false)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(backend, params).expect("context");
    let prompt = model.vocab().tokenize(PROMPT.as_bytes(), false, false);
    let mut rates = Vec::new();
    for _ in 0..=RUNS {
        ctx.clear_kv_cache();
        let mut batch = LlamaBatch::new(config.n_batch as usize, 1);
        let mut samplers: Vec<LlamaSampler> =
            (0..sequences).map(|_| LlamaSampler::greedy()).collect();
        for seq in 0..sequences {
            for (i, t) in prompt.iter().enumerate() {
                batch
                    .add(*t, i as i32, &[seq as i32], i + 1 == prompt.len())
                    .expect("batch");
            }
        }
        ctx.decode(&mut batch).expect("prefill");
        let mut next: Vec<_> = (0..sequences)
            .map(|seq| samplers[seq].sample(&ctx, ((seq + 1) * prompt.len() - 1) as i32))
            .collect();
        let start = Instant::now();
        for step in 0..TOKENS as usize - 1 {
            batch.clear();
            for (seq, t) in next.iter().enumerate() {
                batch
                    .add(*t, (prompt.len() + step) as i32, &[seq as i32], true)
                    .expect("batch");
            }
            ctx.decode(&mut batch).expect("decode");
            for (seq, t) in next.iter_mut().enumerate() {
                *t = samplers[seq].sample(&ctx, seq as i32);
            }
        }
        rates.push((sequences * (TOKENS as usize - 1)) as f64 / start.elapsed().as_secs_f64());
    }
    rates.remove(0); // warm-up
    median(rates)
}

/// (1) Decode tokens/s of one sequence straight from the engine: tokens after the first,
/// over the time from the first token to the last, as the engine thread measured it.
fn raw_engine() -> f64 {
    let engine = Engine::load(engine_config()).expect("engine");
    let messages = [ChatMessage::new(ChatRole::User, PROMPT)];
    let mut rates = Vec::new();
    for _ in 0..=RUNS {
        let prompt = engine.chat_prompt(&messages).expect("prompt");
        let mut generation = engine.generate(prompt, params()).expect("generate");
        loop {
            match generation.next_blocking().expect("event") {
                Event::Text(_) => {}
                Event::Done { usage, timings, .. } => {
                    rates.push((usage.completion_tokens - 1) as f64 / timings.decode.as_secs_f64());
                    break;
                }
                Event::Error(e) => panic!("{e}"),
                Event::Scores { .. } => panic!("a generation sent scores"),
            }
        }
    }
    rates.remove(0); // warm-up
    median(rates)
}

struct StreamResult {
    ttft: Duration,
    decode_tps: f64,
    tokens: u64,
}

async fn stream(client: &reqwest::Client, url: &str, i: usize) -> StreamResult {
    let body = json!({
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": format!("{PROMPT} ({i})")}],
        "max_tokens": TOKENS, "temperature": 0, "ignore_eos": true,
        "stream": true, "stream_options": {"include_usage": true},
    });
    let start = Instant::now();
    let mut resp = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let (mut first, mut last) = (None, start);
    let mut buf = String::new();
    let mut tokens = 0;
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let data = event.trim_start_matches("data: ").trim();
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data).expect("chunk json");
            if v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
            {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                tokens = n;
            }
        }
    }
    let first = first.expect("some text");
    StreamResult {
        ttft: first - start,
        decode_tps: (tokens - 1) as f64 / (last - first).as_secs_f64(),
        tokens,
    }
}

fn main() {
    // Cargo passes --bench; nothing else to parse.
    // Each llama.cpp-alone run gets its own thread that then exits: with OpenMP, a thread that
    // ran llama.cpp keeps a worker team alive, and a second live team slows every later
    // measurement (see core/src/engine/mod.rs, `Engine::load`).
    let alone = |n| {
        std::thread::spawn(move || llama_alone(n))
            .join()
            .expect("llama.cpp run")
    };
    let alone_1 = alone(1);
    eprintln!("(0) llama.cpp alone, 1 sequence: {alone_1:.1} tok/s");
    let alone_8 = alone(CONCURRENT);
    eprintln!("(0) llama.cpp alone, {CONCURRENT} sequences: {alone_8:.1} tok/s");
    let raw = raw_engine();
    eprintln!("(1) raw engine: {raw:.1} tok/s");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let mut config = Config {
        registry: root().join("models/registry.toml"),
        adapter: cada_gateway::config::AdapterChoice::None,
        ..Config::default()
    };
    // Plain serving: the benchmark measures the serving path, not deliberation.
    config.safety.mode = cada_gateway::config::Mode::Off;
    // Every run repeats the same greedy request: the response cache would answer it.
    config.cache.enabled = false;
    config.safety.policy_dir = root().join("configs/policy");
    config.store.data_dir = root().join("target/bench/data");
    config.engine.threads = threads();
    config.engine.parallel = CONCURRENT;
    config.engine.ctx_per_slot = 1024;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (single, concurrent) = rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(cada_gateway::run(listener, config, async {
            let _ = rx.await;
        }));
        let client = reqwest::Client::new();
        loop {
            assert!(!server.is_finished(), "the gateway stopped during start-up");
            if let Ok(r) = client.get(format!("{url}/readyz")).send().await {
                if r.status() == 200 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("gateway ready");
        let mut singles = Vec::new();
        for i in 0..=RUNS {
            let s = stream(&client, &url, i).await;
            eprintln!("(2) single stream {i}: {:.1} tok/s", s.decode_tps);
            singles.push(s);
        }
        singles.remove(0); // warm-up
        let mut aggregates = Vec::new();
        for _ in 0..RUNS {
            let start = Instant::now();
            let tasks: Vec<_> = (0..CONCURRENT)
                .map(|i| {
                    let (client, url) = (client.clone(), url.clone());
                    tokio::spawn(async move { stream(&client, &url, i).await })
                })
                .collect();
            let mut total = 0;
            for t in tasks {
                total += t.await.expect("task").tokens;
            }
            let tps = total as f64 / start.elapsed().as_secs_f64();
            eprintln!("(3) {CONCURRENT} streams: {tps:.1} tok/s");
            aggregates.push(tps);
        }
        let _ = tx.send(());
        server.await.expect("server task").expect("server");
        let single = (
            median(singles.iter().map(|s| s.decode_tps).collect()),
            median(
                singles
                    .iter()
                    .map(|s| s.ttft.as_secs_f64() * 1000.0)
                    .collect(),
            ),
        );
        (single, median(aggregates))
    });

    let (single_tps, ttft_ms) = single;
    let report = json!({
        "model": "smollm2-135m-instruct (Q4_1)",
        "threads": threads(),
        "tokens_per_request": TOKENS,
        "runs": RUNS,
        "llama_cpp_alone_1_sequence_tps": alone_1,
        "llama_cpp_alone_8_sequences_tps": alone_8,
        "raw_engine_decode_tps": raw,
        "gateway_single_stream_decode_tps": single_tps,
        "gateway_single_stream_ttft_ms": ttft_ms,
        "gateway_8_streams_aggregate_tps": concurrent,
        "single_vs_raw": single_tps / raw,
        "concurrent_vs_single": concurrent / single_tps,
    });
    println!("| measure | value |");
    println!("|---|---|");
    println!("| (0) llama.cpp alone, 1 sequence: decode | {alone_1:.1} tok/s |");
    println!(
        "| (0) llama.cpp alone, {CONCURRENT} sequences: decode | {alone_8:.1} tok/s ({:.2}x 1 sequence) |",
        alone_8 / alone_1
    );
    println!("| (1) raw engine decode, 1 sequence | {raw:.1} tok/s |");
    println!(
        "| (2) gateway, 1 stream: decode | {single_tps:.1} tok/s ({:.1}% of (1)) |",
        100.0 * single_tps / raw
    );
    println!("| (2) gateway, 1 stream: time to first token | {ttft_ms:.1} ms |");
    println!(
        "| (3) gateway, {CONCURRENT} streams: aggregate | {concurrent:.1} tok/s ({:.2}x (2)) |",
        concurrent / single_tps
    );
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out).expect("bench dir");
    std::fs::write(
        out.join("throughput.json"),
        serde_json::to_string_pretty(&report).expect("json"),
    )
    .expect("write report");
    println!("threads={}, {TOKENS} tokens per request, median of {RUNS} runs; report in target/bench/throughput.json", threads());
}
