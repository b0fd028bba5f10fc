//! An engine that serves an adapter runs each session on the adapter or on the base model alone
//! (`Weights`): base sessions answer exactly as an engine without the adapter does, adapted ones
//! do not, and both kinds decode side by side (the engine alternates its steps between them).

use std::path::PathBuf;

use cada_core::{
    ChatMessage, ChatRole, Engine, EngineConfig, Event, GenerationParams, Registry, Session,
    Weights,
};

fn registry() -> Registry {
    Registry::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/registry.toml"))
        .expect("registry")
}

fn engine(adapter: bool) -> Engine {
    let registry = registry();
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

fn greedy() -> GenerationParams {
    GenerationParams {
        temperature: 0.0,
        max_tokens: Some(24),
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

fn start(engine: &Engine, q: &str, weights: Weights) -> Session {
    let prompt = engine
        .chat_prompt(&[ChatMessage::new(ChatRole::User, q)])
        .expect("prompt");
    let mut s = engine.session().expect("session");
    s.reset_to(weights).expect("reset");
    s.generate(prompt, greedy(), true).expect("op");
    s
}

const QUESTION: &str = "What is the capital of France?";

#[test]
fn base_sessions_answer_as_the_model_without_the_adapter() {
    let expected = {
        let plain = engine(false);
        text_of(&mut start(&plain, QUESTION, Weights::Base))
    };
    assert!(expected.to_lowercase().contains("paris"), "{expected}");
    let served = engine(true);
    let base = text_of(&mut start(&served, QUESTION, Weights::Base));
    let adapted = text_of(&mut start(&served, QUESTION, Weights::Adapted));
    assert_eq!(base, expected, "the base weights alone");
    assert_ne!(
        adapted, expected,
        "the adapter changes what the model writes"
    );

    // Both at once, in one context: every step decodes one group, and neither answer changes.
    let mut a = start(&served, QUESTION, Weights::Adapted);
    let mut b = start(&served, QUESTION, Weights::Base);
    assert_eq!(text_of(&mut b), expected);
    assert_eq!(text_of(&mut a), adapted);
}
