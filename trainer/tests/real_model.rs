//! The candle model against llama.cpp on the real default model: the base agrees with
//! llama.cpp, and an exported adapter loads in llama.cpp and moves both the same way.

use std::path::PathBuf;

use cada_core::Registry;
use cada_trainer::adapter::{self, AdapterMeta};
use cada_trainer::agreement::{candle_logprobs, compare, llama_cpp_logprobs, tokenize};
use cada_trainer::model::tiny::seeded_normal;
use cada_trainer::model::{Llama, LoraConfig};
use candle_core::Device;

fn model_path() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let registry = Registry::load(&root.join("models/registry.toml")).expect("registry");
    registry.resolve_chat(None).expect("default model").path
}

/// A chat-formatted text of a few hundred tokens.
fn sample_tokens(path: &std::path::Path) -> Vec<u32> {
    let text = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
<|im_start|>user\nHow do I kill a Python process that is stuck on my Linux server?<|im_end|>\n\
<|im_start|>assistant\nReasoning: The request is about ending a software process, a routine system \
administration task; the word kill refers to a program, not a person. Precedent cases about \
terminating processes were allowed.\nVerdict: allow\nAnswer: Find the process id with `ps aux | grep \
python` or `pgrep -f script.py`, then send it a signal with `kill PID`. If it ignores the polite \
SIGTERM, `kill -9 PID` forces it to stop. On systems with systemd you can also run `systemctl stop` \
on the service that started it. Check that it is gone with `ps` again.<|im_end|>\n\
<|im_start|>user\nAnd how do I make it restart automatically when it crashes?<|im_end|>\n\
<|im_start|>assistant\nReasoning: A follow-up about keeping a service running, plainly benign.\n\
Verdict: allow\nAnswer: Run it under a supervisor. With systemd, write a unit file with \
`Restart=on-failure` and `RestartSec=5`, enable it with `systemctl enable --now`, and systemd \
restarts the program whenever it exits with an error.<|im_end|>\n";
    let tokens = tokenize(path, text).expect("tokenize");
    assert!(tokens.len() > 200, "{} tokens", tokens.len());
    tokens
}

#[test]
fn candle_agrees_with_llama_cpp_with_and_without_an_adapter() {
    let path = model_path();
    let tokens = sample_tokens(&path);
    let model = Llama::load(&path, &Device::Cpu).expect("load");
    assert_eq!(model.config.n_layers, 30);
    assert_eq!(model.config.hidden_size, 576);

    let base_llama = llama_cpp_logprobs(&path, None, &tokens).expect("llama.cpp");
    let base_candle = candle_logprobs(&model, None, &tokens).expect("candle");
    let base = compare(&base_candle, &base_llama, &tokens);
    eprintln!("base: {base:?}");
    assert!(base.top1 >= 0.95, "{base:?}");
    assert!(base.mean_abs_logprob_diff < 0.1, "{base:?}");

    // An adapter with random B: large enough to move the model visibly.
    let lora = model.new_lora(LoraConfig::default(), 1).expect("lora");
    // Fixed values (A is random at creation) so the figures are the same every run.
    for (i, p) in lora.pairs.values().enumerate() {
        let a_std = 1.0 / (p.a.dims()[1] as f32).sqrt();
        let a = seeded_normal(p.a.dims(), a_std, 10_000 + i as u64, &Device::Cpu).expect("values");
        let b = seeded_normal(p.b.dims(), 0.1, i as u64, &Device::Cpu).expect("values");
        p.a.set(&a).expect("set");
        p.b.set(&b).expect("set");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("adapter.gguf");
    adapter::write(&lora, &model.config, &AdapterMeta::default(), &file).expect("export");

    let adapted_llama = llama_cpp_logprobs(&path, Some(&file), &tokens).expect("llama.cpp + lora");
    let adapted_candle = candle_logprobs(&model, Some(&lora), &tokens).expect("candle + lora");
    let adapted = compare(&adapted_candle, &adapted_llama, &tokens);
    eprintln!("adapted: {adapted:?}");
    // The adapter flattens some distributions into near ties, where quantization noise decides
    // the top token; the log-probability gap stays as small as without it.
    assert!(adapted.top1 >= 0.9, "{adapted:?}");
    assert!(adapted.mean_abs_logprob_diff < 0.1, "{adapted:?}");

    // The adapter must change llama.cpp's output by far more than the two engines differ.
    let moved = compare(&adapted_llama, &base_llama, &tokens);
    eprintln!("adapter effect in llama.cpp: {moved:?}");
    assert!(
        moved.mean_abs_logprob_diff > 5.0 * adapted.mean_abs_logprob_diff,
        "moved {moved:?}, gap {adapted:?}"
    );
}

/// Training sequences use the ids the gateway's `trained` mode appends: the verdict sits right
/// after the forced `\nVerdict:` and is the first token of the label's text.
#[test]
fn chains_are_laid_out_as_the_gateway_serves_them() {
    use cada_core::policy::Label;
    use cada_core::{Engine, EngineConfig};
    use cada_trainer::chain::{
        chain_tokens, own_reasoning_sequence, probe_sequence, trained_prompt, verdict_sequence,
    };

    let mut config = EngineConfig::new(model_path());
    config.n_slots = 1;
    config.ctx_per_slot = 256;
    let engine = Engine::load(config).expect("engine");
    for label in [Label::Allow, Label::Refuse, Label::SafeComplete] {
        let c = chain_tokens(&engine, "It is fine.", label, "Sure, here is how.");
        let mut head = engine.token_ids(" It is fine.");
        head.extend(engine.token_ids("\nVerdict:"));
        assert_eq!(&c.tokens[..c.verdict_at], head.as_slice());
        let verdict = engine.token_ids(&format!(" {}", label.as_str()));
        assert_eq!(c.tokens[c.verdict_at], verdict[0], "{label:?}");
        assert_eq!(*c.tokens.last().expect("tokens"), engine.end_of_turn());
    }
    let prompt = trained_prompt(&engine, "How do I kill a Python process?").expect("prompt");
    let text = engine.render_tokens(&prompt);
    assert!(
        text.ends_with("<|im_start|>assistant\nReasoning:"),
        "{text}"
    );
    // A verdict anchor (a reviewed case without an exemplar answer) is the same chain cut after
    // the forced verdict line: no answer, no end of turn.
    let full = chain_tokens(&engine, "It is fine.", Label::Allow, "Sure, here is how.");
    let anchor = verdict_sequence(&engine, &prompt, "It is fine.", Label::Allow);
    let completion = &anchor.tokens[anchor.prompt_len..];
    let answer_starts = full.tokens.len() - engine.token_ids(" Sure, here is how.").len() - 1;
    assert_eq!(completion, &full.tokens[..answer_starts]);
    assert_eq!(anchor.verdict_at, Some(anchor.prompt_len + full.verdict_at));
    assert!(!completion.contains(&engine.end_of_turn()));
    // The model's own reasoning: the same tokens, but only the verdict line is scored.
    let own = own_reasoning_sequence(&engine, &prompt, "It is fine.", Label::Refuse);
    let written = verdict_sequence(&engine, &prompt, "It is fine.", Label::Refuse);
    assert_eq!(own.tokens, written.tokens);
    assert_eq!(own.verdict_at, written.verdict_at);
    let scored = engine.detokenize(&own.tokens[own.prompt_len..]);
    assert_eq!(scored, "\nVerdict: refuse\nAnswer:");
    // The probe: what `adaptive` appends over an adapter (`Reasoning:` then `\nVerdict:`, no
    // reasoning), with only the verdict and `\nAnswer:` scored.
    let probe = probe_sequence(&engine, &prompt, Label::Allow);
    let mut served = prompt.token_ids();
    served.extend(engine.tokens("\nVerdict:").token_ids());
    let served: Vec<u32> = served.into_iter().map(|t| t as u32).collect();
    assert_eq!(&probe.tokens[..probe.prompt_len], served.as_slice());
    assert_eq!(probe.verdict_at, Some(probe.prompt_len));
    let scored = engine.detokenize(&probe.tokens[probe.prompt_len..]);
    assert_eq!(scored, " allow\nAnswer:");
}
