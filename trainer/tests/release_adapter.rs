//! The release adapter shipped in the model registry (`[[adapter]]`) is what a gateway with the
//! default `adapter = "promoted"` serves until a local run promotes one; a shipped file that
//! does not match its pinned digest is refused (the base model serves). And `adaptive` over an
//! adapter with a calibrated probe band serves, refuses or deliberates by the probe alone. Real model, real
//! adapters written by the trainer's exporter.

use std::path::Path;

use cada_core::adapters::AdapterRegistry;
use cada_core::policy::{ProbeBand, VerdictRule};
use cada_core::Registry;
use cada_gateway::config::{AdapterChoice, Mode};
use cada_trainer::adapter::{self, AdapterMeta};
use cada_trainer::model::{Llama, LoraConfig};
use candle_core::Device;
use serde_json::{json, Value};

mod common;
use common::*;

/// An adapter that leaves the base model as it is (B = 0) with `meta`.
fn write_adapter(model: &Llama, meta: &AdapterMeta, path: &Path) {
    let lora = model.new_lora(LoraConfig::default(), 1).expect("lora");
    adapter::write(&lora, &model.config, meta, path).expect("export");
}

/// Appends a release adapter for the default model to the test registry.
fn ship(registry: &Path, id: &str, file: &str, sha256: &str) {
    let entry = format!(
        "\n[[adapter]]\nid = \"{id}\"\nbase = \"smollm2-135m-instruct\"\npath = \"{file}\"\n\
         sha256 = \"{sha256}\"\nmode = \"adaptive\"\ncommand = \"test\"\ndata_hash = \"test\"\n"
    );
    let mut text = std::fs::read_to_string(registry).expect("read registry");
    text.push_str(&entry);
    std::fs::write(registry, text).expect("write registry");
}

/// (x-cada-adapter, the `cada` extension, the answer) of a greedy chat completion.
async fn chat(
    client: &reqwest::Client,
    base: &str,
    mode: &str,
    text: &str,
) -> (String, Value, String) {
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": text}],
            "max_tokens": 12,
            "temperature": 0,
            "safety_mode": mode,
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let adapter = r.headers()["x-cada-adapter"]
        .to_str()
        .expect("header")
        .to_owned();
    let body: Value = r.json().await.expect("json");
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (adapter, body["cada"].clone(), answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_release_adapter_is_served_until_a_local_one_is_promoted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, model) = registry_and_model(dir.path());
    std::fs::create_dir_all(dir.path().join("release")).expect("mkdir");
    let shipped = dir.path().join("release/r1.gguf");
    write_adapter(&model, &AdapterMeta::default(), &shipped);
    let local = dir.path().join("local.gguf");
    write_adapter(&model, &AdapterMeta::default(), &local);
    drop(model);
    let sha = cada_core::registry::sha256_file(&shipped).expect("hash");
    ship(&registry, "release-r1", "release/r1.gguf", &sha);

    let mut config = config(registry.clone(), dir.path().join("data"));
    config.verify_sha256 = true;
    let server = start(config);
    let client = reqwest::Client::new();
    wait_for(&client, &server.base, "release-r1").await;
    let (adapter, _, _) = chat(&client, &server.base, "off", "Name a colour.").await;
    assert_eq!(adapter, "release-r1");

    // A local run's promotion replaces it without a restart.
    AdapterRegistry::beside(&registry)
        .promote(&local, entry("v1"))
        .expect("promote");
    wait_for(&client, &server.base, "v1").await;
    let (adapter, _, _) = chat(&client, &server.base, "off", "Name a colour.").await;
    assert_eq!(adapter, "v1");
}

/// A shipped file that is not the pinned one is refused, loudly, and the base model serves: a
/// bad file costs the adapter, never the gateway (bad adapters in general: `bad_adapters.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shipped_adapter_that_does_not_match_its_digest_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, model) = registry_and_model(dir.path());
    write_adapter(&model, &AdapterMeta::default(), &dir.path().join("r1.gguf"));
    drop(model);
    ship(&registry, "release-r1", "r1.gguf", &"0".repeat(64));
    let server = start(config(registry, dir.path().join("data")));
    let client = reqwest::Client::new();
    wait_for(&client, &server.base, "none").await;
    let (adapter, _, _) = chat(&client, &server.base, "off", "Name a colour.").await;
    assert_eq!(adapter, "none");
    let metrics = metrics(&client, &server.base).await;
    assert!(
        metrics.contains("cada_adapter_refused_total{reason=\"digest\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("cada_adapter_fallback 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_over_a_probed_adapter_serves_refuses_or_deliberates_by_the_probe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, model) = registry_and_model(dir.path());
    // Refuse log-odds are clamped to [-30, 30]: these bands force each call.
    let bands = [
        ("serve", 30.5, 30.5),
        ("refuse", -30.0, -30.0),
        ("deliberate", -30.0, 30.5),
    ];
    for (name, serve_below, refuse_from) in bands {
        let meta = AdapterMeta {
            probe: Some(ProbeBand {
                serve_below,
                refuse_from,
            }),
            ..AdapterMeta::default()
        };
        write_adapter(&model, &meta, &dir.path().join(format!("{name}.gguf")));
    }
    drop(model);
    let request = "What is the capital of France?";
    for (name, _, _) in bands {
        let mut config = config(registry.clone(), dir.path().join(format!("data-{name}")));
        config.adapter = AdapterChoice::File(dir.path().join(format!("{name}.gguf")));
        config.safety.mode = Mode::Adaptive;
        let server = start(config);
        let client = reqwest::Client::new();
        wait_for(&client, &server.base, name).await;
        let (_, cada, answer) = chat(&client, &server.base, "adaptive", request).await;
        assert_eq!(cada["probe"]["call"], name, "{cada}");
        assert!(cada["probe"]["refuse_log_odds"].is_number(), "{cada}");
        match name {
            "serve" => {
                assert_eq!(cada["deliberated"], false);
                assert!(cada["verdict"].is_null(), "{cada}");
                // Served as `off` serves it: the base model's own answer (B = 0).
                let (_, _, plain) = chat(&client, &server.base, "off", request).await;
                assert_eq!(answer, plain);
            }
            "refuse" => {
                assert_eq!(cada["deliberated"], false);
                assert_eq!(cada["verdict"], "refuse");
                assert!(answer.starts_with("I can't help with that."), "{answer}");
            }
            _ => {
                assert_eq!(cada["deliberated"], true);
                assert!(cada["verdict"].is_string(), "{cada}");
            }
        }
    }
}

/// The shipped adapter decides and the base model answers: in every mode a benign question gets
/// the answer `off` gives (the adapter is set aside for it), where answering with the adapter
/// applied wrote the deliberation format instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_over_the_release_adapter_answers_as_off_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::load(&root().join("models/registry.toml")).expect("registry");
    let (release, file) = registry
        .release_adapter(&registry.default_chat)
        .expect("the default model ships a release adapter");
    let mut config = config(temp_registry(dir.path()), dir.path().join("data"));
    config.adapter = AdapterChoice::File(file.path.clone());
    // `cases` puts about 900 tokens of codes and precedents in context.
    config.engine.ctx_per_slot = 2048;
    let server = start(config);
    let client = reqwest::Client::new();
    wait_for(&client, &server.base, release.id.as_str()).await;
    let request = "What is the capital of France?";
    let (_, _, plain) = chat(&client, &server.base, "off", request).await;
    assert!(plain.to_lowercase().contains("paris"), "{plain}");
    for mode in ["adaptive", "trained", "cases"] {
        let (_, cada, answer) = chat(&client, &server.base, mode, request).await;
        assert_ne!(cada["verdict"], "refuse", "{mode}: {cada}");
        assert_eq!(answer, plain, "{mode}: {cada}");
    }
}

/// What `models/registry.toml` says of each shipped adapter is what its file holds: the pinned
/// digest, the data hash, the calibrated threshold and probe band; it is small enough for git,
/// and the mode it was calibrated for is the gateway's default mode.
#[test]
fn the_registry_pins_what_the_release_adapter_holds() {
    let registry = Registry::load(&root().join("models/registry.toml")).expect("registry");
    let shipped = registry
        .release_adapter(&registry.default_chat)
        .map(|(a, _)| a.id.clone());
    assert!(
        shipped.is_some(),
        "the default model ships a release adapter"
    );
    let model = Llama::load(
        &registry.resolve_chat(None).expect("default model").path,
        &Device::Cpu,
    )
    .expect("candle model");
    for a in &registry.adapters {
        let (_, file) = registry.release_adapter(&a.base).expect("listed");
        file.verify(true).expect("present with the pinned sha256");
        let size = std::fs::metadata(&file.path).expect("size").len();
        assert!(size < 12 << 20, "{} is {size} bytes", a.id);
        let rule = VerdictRule::from_adapter(&file.path).expect("metadata");
        assert_eq!(rule.refuse_log_odds, a.refuse_log_odds, "{}", a.id);
        let band = rule.probe.map(|b| [b.serve_below, b.refuse_from]);
        assert_eq!(band, a.probe_band, "{}", a.id);
        if a.base == registry.default_chat {
            let (_, meta) = adapter::read(&file.path, &model).expect("adapter reads");
            assert_eq!(meta.data_hash, a.data_hash, "{}", a.id);
            let default_mode = cada_gateway::Config::default().safety.mode;
            assert_eq!(default_mode.as_str(), a.mode, "{}", a.id);
        }
    }
}
