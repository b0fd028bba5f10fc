//! What the tests that serve adapters through a real gateway share: a registry of their own
//! (model files linked from the repository's, so the adapter registry beside it is the
//! test's), a gateway on a loopback port in its own runtime, and waiting for an adapter.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cada_core::adapters::{AdapterEntry, Figures};
use cada_core::Registry;
use cada_gateway::config::{AdapterChoice, Mode};
use cada_trainer::model::Llama;
use candle_core::Device;
use serde_json::{json, Value};

pub const ADMIN_KEY: &str = "test-admin-key";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A registry in `dir` whose model files are symlinks to the repository's, so the adapter
/// registry beside it is the test's own.
pub fn temp_registry(dir: &Path) -> PathBuf {
    let source = root().join("models/registry.toml");
    let repo = Registry::load(&source).expect("registry");
    for m in &repo.models {
        for f in &m.files {
            let link = dir.join(&f.path);
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            let target = repo
                .file_path(f)
                .canonicalize()
                .expect("model file present");
            std::os::unix::fs::symlink(target, link).expect("symlink");
        }
    }
    // Without the shipped release adapters: a test serves the adapters it writes.
    let text = std::fs::read_to_string(&source).expect("read registry");
    let models = text.split("[[adapter]]").next().unwrap_or_default();
    let path = dir.join("registry.toml");
    std::fs::write(&path, models).expect("write registry");
    path
}

/// A test registry in `dir` and the candle model of its default chat model.
pub fn registry_and_model(dir: &Path) -> (PathBuf, Llama) {
    let registry = temp_registry(dir);
    let model_path = Registry::load(&registry)
        .expect("registry")
        .resolve_chat(None)
        .expect("model")
        .path;
    let model = Llama::load(&model_path, &Device::Cpu).expect("candle model");
    (registry, model)
}

pub struct Server {
    pub base: String,
    /// Stops the gateway when the server is dropped.
    _gateway: cada_gateway::background::Background,
}

pub fn config(registry: PathBuf, data: PathBuf) -> cada_gateway::Config {
    let mut config = cada_gateway::Config {
        registry,
        verify_sha256: false,
        adapter: AdapterChoice::Promoted,
        adapter_poll_secs: 1,
        admin_key: Some(cada_gateway::config::Secret(ADMIN_KEY.into())),
        ..cada_gateway::Config::default()
    };
    config.safety.mode = Mode::Off;
    // An admin key exists, so callers without a key get the user scope's safety policy; these
    // tests pick their mode per request.
    config.auth.user.safety.allowed_modes =
        Some(vec![Mode::Off, Mode::Cases, Mode::Trained, Mode::Adaptive]);
    // They also poll it as fast as it answers (cache hits, waiting for a swap): the shared
    // anonymous budget is not what they test.
    config.auth.anonymous.requests_per_minute = 0;
    config.safety.policy_dir = root().join("configs/policy");
    config.store.data_dir = data;
    config.engine.parallel = 4;
    config.engine.ctx_per_slot = 512;
    config
}

pub fn start(config: cada_gateway::Config) -> Server {
    let gateway = cada_gateway::background::Background::spawn(config).expect("bind");
    Server {
        base: gateway.url(),
        _gateway: gateway,
    }
}

pub async fn wait_for(client: &reqwest::Client, base: &str, adapter: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if let Ok(v) = r.json::<Value>().await {
                if v["status"] == "ready" && v["adapter"].as_str().unwrap_or("none") == adapter {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "never served adapter {adapter}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A registry entry for a test adapter.
pub fn entry(version: &str) -> AdapterEntry {
    AdapterEntry {
        version: version.into(),
        parent: None,
        file: String::new(),
        sha256: String::new(),
        base_model: "smollm2-135m-instruct".into(),
        data_hash: "test".into(),
        config: json!({}),
        figures: Figures {
            harmful_refusal_rate: 0.0,
            benign_compliance_rate: 0.0,
            dev_sha256: String::new(),
            policy_version: String::new(),
            utility: None,
            utility_base: None,
            mismatch: None,
            auc: None,
            outside: None,
        },
        created: 0,
    }
}

/// The `/metrics` page.
pub async fn metrics(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}
