//! Sessions against the real default model: continuing a turn equals generating it in one go,
//! next-token scores agree with greedy decoding, a session holds its slot until dropped, and over
//! an adapter a session runs on the adapter or on the base model alone (`Weights`).

use std::path::PathBuf;

use cada_core::{
    ChatMessage, ChatRole, Engine, EngineConfig, EngineError, Event, GenerationParams, Registry,
    Session, Weights,
};

fn engine(slots: usize, ctx: u32) -> Engine {
    let registry =
        Registry::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/registry.toml"))
            .expect("registry");
    let mut c = EngineConfig::new(registry.resolve_chat(None).expect("default model").path);
    c.n_slots = slots;
    c.ctx_per_slot = ctx;
    Engine::load(c).expect("engine loads")
}

fn greedy(max_tokens: u32) -> GenerationParams {
    GenerationParams {
        temperature: 0.0,
        max_tokens: Some(max_tokens),
        ..GenerationParams::default()
    }
}

fn text_of(session: &mut Session) -> String {
    let mut text = String::new();
    loop {
        match session.next_blocking().expect("event") {
            Event::Text(t) => text.push_str(&t),
            Event::Done { .. } => return text,
            Event::Error(e) => panic!("{e}"),
            Event::Scores { .. } => panic!("scores during a generation"),
        }
    }
}

fn question(engine: &Engine, q: &str) -> cada_core::Prompt {
    engine
        .chat_prompt(&[ChatMessage::new(ChatRole::User, q)])
        .expect("prompt")
}

#[test]
fn continuing_a_session_equals_one_generation() {
    let engine = engine(1, 512);
    let prompt = question(&engine, "Tell me about the ocean.");
    let mut whole = engine.session().expect("session");
    whole
        .generate(prompt.clone(), greedy(24), true)
        .expect("op");
    let expected = text_of(&mut whole);

    let mut parts = engine.session().expect("session");
    parts.generate(prompt, greedy(12), false).expect("op");
    let first = text_of(&mut parts);
    // Nothing appended: the last sampled token is fed first, and decoding carries on.
    parts
        .generate(engine.tokens(""), greedy(12), true)
        .expect("op");
    let second = text_of(&mut parts);
    assert_eq!(format!("{first}{second}"), expected);
}

#[test]
fn scores_agree_with_greedy_decoding_and_forced_text_steers() {
    let engine = engine(1, 512);
    let prompt = question(&engine, "What is the capital of France?");
    let mut greedy_session = engine.session().expect("session");
    greedy_session
        .generate(prompt.clone(), greedy(1), true)
        .expect("op");
    let first_word = text_of(&mut greedy_session);

    let candidates = [
        engine.tokens(&first_word),
        engine.tokens(" zebra"),
        engine.tokens(" 1984"),
    ];
    let mut s = engine.session().expect("session");
    let probs = s
        .score_blocking(prompt, &candidates, false)
        .expect("scores");
    assert_eq!(probs.len(), 3);
    assert!(probs.iter().all(|p| (0.0..=1.0).contains(p)));
    assert!(
        probs[0] > probs[1] && probs[0] > probs[2],
        "{first_word:?}: {probs:?}"
    );
    // Forced text continues the same sequence: after "The capital of France is", Paris wins.
    let probs = s
        .score_blocking(
            engine.tokens("The capital of France is"),
            &[engine.tokens(" Paris"), engine.tokens(" London")],
            false,
        )
        .expect("scores");
    assert!(probs[0] > 0.3 && probs[0] > 5.0 * probs[1], "{probs:?}");
    s.generate(engine.tokens(" Paris."), greedy(8), true)
        .expect("op");
    let _ = text_of(&mut s);
    assert!(matches!(
        s.generate(engine.tokens("more"), greedy(1), true),
        Err(EngineError::ShutDown)
    ));
}

#[test]
fn a_session_holds_its_slot_until_dropped() {
    let engine = engine(1, 256);
    let mut holder = engine.session().expect("session");
    holder
        .generate(question(&engine, "Hi"), greedy(2), false)
        .expect("op");
    let _ = text_of(&mut holder);
    assert_eq!(
        engine
            .stats()
            .active
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // A second request waits: the only slot is held by the idle session.
    let mut waiting = engine
        .generate(question(&engine, "Hello"), greedy(2))
        .expect("queued");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        engine
            .stats()
            .queued
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    drop(holder);
    loop {
        if let Event::Done { .. } = waiting.next_blocking().expect("event") {
            break;
        }
    }
}

#[test]
fn an_operation_past_the_context_fails_without_ending_the_session() {
    let engine = engine(1, 64);
    let mut s = engine.session().expect("session");
    s.generate(question(&engine, "Hi"), greedy(4), false)
        .expect("op");
    let _ = text_of(&mut s);
    let long = engine.tokens(&"word ".repeat(80));
    s.generate(long, greedy(4), false).expect("op sent");
    match s.next_blocking().expect("event") {
        Event::Error(EngineError::ContextLengthExceeded { limit, .. }) => assert_eq!(limit, 64),
        other => panic!("expected a context error, got {other:?}"),
    }
    s.generate(engine.tokens(" ok"), greedy(2), true)
        .expect("op");
    let _ = text_of(&mut s);
}

#[test]
fn reset_forgets_the_context_but_keeps_the_slot() {
    let engine = engine(1, 256);
    let prompt = question(&engine, "Name a fruit.");
    let mut fresh = engine.session().expect("session");
    fresh.generate(prompt.clone(), greedy(8), true).expect("op");
    let expected = text_of(&mut fresh);
    let mut s = engine.session().expect("session");
    s.generate(
        question(&engine, "Tell me a long story."),
        greedy(16),
        false,
    )
    .expect("op");
    let _ = text_of(&mut s);
    s.reset().expect("reset");
    s.generate(prompt, greedy(8), true).expect("op");
    assert_eq!(text_of(&mut s), expected);
}

/// An engine with the default model's release adapter (or without one).
fn adapter_engine(adapter: bool) -> Engine {
    let registry =
        Registry::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/registry.toml"))
            .expect("registry");
    let model = registry.resolve_chat(None).expect("default model");
    let mut c = EngineConfig::new(model.path);
    c.n_slots = 2;
    c.ctx_per_slot = 256;
    if adapter {
        let (_, file) = registry
            .release_adapter(&model.id)
            .expect("the default model has a release adapter");
        c.adapter = Some(file.path);
    }
    Engine::load(c).expect("engine loads")
}

fn start_on(engine: &Engine, q: &str, weights: Weights) -> Session {
    let prompt = question(engine, q);
    let mut s = engine.session().expect("session");
    s.reset_to(weights).expect("reset");
    s.generate(prompt, greedy(24), true).expect("op");
    s
}

const QUESTION: &str = "What is the capital of France?";

#[test]
fn base_sessions_answer_as_the_model_without_the_adapter() {
    let expected = {
        let plain = adapter_engine(false);
        text_of(&mut start_on(&plain, QUESTION, Weights::Base))
    };
    assert!(expected.to_lowercase().contains("paris"), "{expected}");
    let served = adapter_engine(true);
    let base = text_of(&mut start_on(&served, QUESTION, Weights::Base));
    let adapted = text_of(&mut start_on(&served, QUESTION, Weights::Adapted));
    assert_eq!(base, expected, "the base weights alone");
    assert_ne!(
        adapted, expected,
        "the adapter changes what the model writes"
    );

    // Both at once: every step decodes each group in its own context, and neither answer changes.
    let mut a = start_on(&served, QUESTION, Weights::Adapted);
    let mut b = start_on(&served, QUESTION, Weights::Base);
    assert_eq!(text_of(&mut b), expected);
    assert_eq!(text_of(&mut a), adapted);
    drop((a, b));

    // One session moving between the weights (the adapter's probe, then the base model's answer,
    // then the adapter again): each reset leaves nothing behind in the context it leaves, so the
    // answers stay those of fresh sessions.
    let mut s = served.session().expect("session");
    for (weights, want) in [
        (Weights::Adapted, &adapted),
        (Weights::Base, &expected),
        (Weights::Adapted, &adapted),
        (Weights::Base, &expected),
    ] {
        s.reset_to(weights).expect("reset");
        s.generate(question(&served, QUESTION), greedy(24), false)
            .expect("op");
        assert_eq!(&text_of(&mut s), want, "{weights:?} after a switch");
    }
    // Freed after the base weights, the slot leaves nothing in the adapter's context either.
    drop(s);
    let mut t = served.session().expect("session");
    t.generate(question(&served, QUESTION), greedy(24), false)
        .expect("op");
    assert_eq!(
        text_of(&mut t),
        adapted,
        "a new session after one that moved"
    );
}
