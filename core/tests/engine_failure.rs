//! An engine that fails (its thread panics, llama.cpp aborts, or a step hangs) against the real
//! default model: it serves first, then every open session gets `EngineError::Failed` at once,
//! new ones are refused, and `Engine::failure` says why. Faults are armed process-wide, so these
//! tests run one at a time.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cada_core::engine::fault::{self, Fault};
use cada_core::{
    ChatMessage, ChatRole, Engine, EngineConfig, EngineError, Event, FailureKind, GenerationParams,
    Registry,
};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn engine(stall_after: Duration) -> Engine {
    let registry = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/registry.toml");
    let model = Registry::load(&registry)
        .expect("registry")
        .resolve_chat(None)
        .expect("default model");
    let mut c = EngineConfig::new(model.path);
    c.n_slots = 2;
    c.ctx_per_slot = 512;
    c.stall_after = Some(stall_after);
    Engine::load(c).expect("engine loads")
}

fn ask(engine: &Engine, max_tokens: u32) -> Result<cada_core::Generation, EngineError> {
    let prompt = engine
        .chat_prompt(&[ChatMessage::new(ChatRole::User, "Name three colours.")])
        .expect("prompt");
    let params = GenerationParams {
        temperature: 0.0,
        max_tokens: Some(max_tokens),
        ignore_eos: true,
        ..GenerationParams::default()
    };
    engine.generate(prompt, params)
}

/// Serves one request, then arms `fault` during a second one and returns the error it ends with
/// and how long that took after arming.
fn fail_with(engine: &Engine, fault: Fault) -> (EngineError, Duration) {
    let mut first = ask(engine, 8).expect("accepted");
    let mut text = String::new();
    loop {
        match first.next_blocking().expect("event") {
            Event::Text(t) => text.push_str(&t),
            Event::Done { .. } => break,
            other => panic!("the healthy engine answered {other:?}"),
        }
    }
    assert!(!text.is_empty(), "the engine served before the fault");
    let mut second = ask(engine, 400).expect("accepted");
    assert!(matches!(second.next_blocking(), Some(Event::Text(_))));
    let armed = Instant::now();
    fault::arm(fault);
    loop {
        match second.next_blocking() {
            Some(Event::Text(_)) => {}
            Some(Event::Error(e)) => return (e, armed.elapsed()),
            other => panic!("expected the failure, got {other:?}"),
        }
    }
}

fn assert_failed(engine: &Engine, error: &EngineError, kind: FailureKind) {
    assert_eq!(error.code(), "engine_failed", "{error}");
    assert!(
        matches!(error, EngineError::Failed { reason, .. } if *reason == kind.as_str()),
        "{error}"
    );
    let failure = engine.failure().expect("the engine reports its failure");
    assert_eq!(failure.kind, kind);
    // New work is refused with the same error, at once.
    let refused = ask(engine, 4).expect_err("a failed engine takes no requests");
    assert_eq!(refused.code(), "engine_failed");
}

#[test]
fn a_panic_on_the_engine_thread_fails_every_session() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let engine = engine(Duration::from_secs(120));
    let (error, _) = fail_with(&engine, Fault::Panic);
    assert_failed(&engine, &error, FailureKind::Panic);
    assert!(
        error.to_string().contains("injected engine fault: panic"),
        "{error}"
    );
}

#[test]
fn a_llama_cpp_abort_fails_the_engine_and_the_process_lives_on() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let engine = engine(Duration::from_secs(120));
    let (error, _) = fail_with(&engine, Fault::Abort);
    assert_failed(&engine, &error, FailureKind::Abort);
    assert!(
        error.to_string().contains("injected engine fault: abort"),
        "{error}"
    );
    // Another engine in the same process still serves.
    let other = self::engine(Duration::from_secs(120));
    let mut g = ask(&other, 4).expect("accepted");
    assert!(matches!(g.next_blocking(), Some(Event::Text(_))));
}

#[test]
fn a_hung_step_fails_the_engine_within_its_stall_limit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let limit = Duration::from_secs(2);
    let engine = engine(limit);
    let (error, after) = fail_with(&engine, Fault::Hang);
    assert_failed(&engine, &error, FailureKind::Stall);
    assert!(after >= limit, "failed after {after:?}, before the limit");
    assert!(after < limit * 10, "failed only after {after:?}");
}
