//! A promoted adapter reaches a running gateway without a restart: the gateway follows the
//! adapter registry, switches between requests (no request fails or mixes two adapters while
//! it does), lists what it serves, and an admin rollback switches back. Real model, real
//! adapters written by the trainer's exporter.

use std::path::Path;
use std::time::{Duration, Instant};

use cada_core::adapters::AdapterRegistry;
use cada_gateway::config::AdapterChoice;
use cada_trainer::adapter::{self, AdapterMeta};
use cada_trainer::model::tiny::seeded_normal;
use cada_trainer::model::{Llama, LoraConfig};
use candle_core::Device;
use serde_json::{json, Value};

mod common;
use common::*;

/// An adapter with random B, large enough to change greedy answers.
fn write_adapter(model: &Llama, seed: u64, path: &Path) {
    let lora = model.new_lora(LoraConfig::default(), 1).expect("lora");
    for (i, p) in lora.pairs.values().enumerate() {
        let b = seeded_normal(p.b.dims(), 0.1, seed * 1000 + i as u64, &Device::Cpu).expect("b");
        p.b.set(&b).expect("set");
    }
    adapter::write(&lora, &model.config, &AdapterMeta::default(), path).expect("export");
}

/// (x-cada-adapter, what the adapter decided) of a greedy chat completion in `trained` mode: the
/// answer (written on the base weights) and the verdict probabilities (read on the adapter).
async fn ask(client: &reqwest::Client, base: &str) -> (String, String) {
    let (adapter, answer, _) = ask_cached(client, base).await;
    (adapter, answer)
}

/// (x-cada-adapter, answer and verdict probabilities, x-cache) of a greedy chat completion.
async fn ask_cached(client: &reqwest::Client, base: &str) -> (String, String, String) {
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "Name three colours."}],
            "max_tokens": 12,
            "temperature": 0,
            "safety_mode": "trained",
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let header = |name: &str| r.headers()[name].to_str().expect("header").to_owned();
    let (adapter, cache) = (header("x-cada-adapter"), header("x-cache"));
    let body: Value = r.json().await.expect("json");
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    let probs: Vec<String> = body["cada"]["verdict_probabilities"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {:.3}", v.as_f64().unwrap_or(-1.0)))
                .collect()
        })
        .unwrap_or_default();
    (adapter, format!("{content} | {}", probs.join(", ")), cache)
}

/// `cada_cache_entries` from `/metrics`.
async fn cache_entries(client: &reqwest::Client, base: &str) -> u64 {
    metrics(client, base)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("cada_cache_entries "))
        .and_then(|v| v.trim().parse().ok())
        .expect("cada_cache_entries")
}

/// `GET /admin/adapter` with the admin key.
async fn admin_adapter(client: &reqwest::Client, base: &str) -> Value {
    client
        .get(format!("{base}/admin/adapter"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("show")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_adapter_is_served_without_a_restart_and_rolls_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, model) = registry_and_model(dir.path());
    let (a1, a2) = (dir.path().join("a1.gguf"), dir.path().join("a2.gguf"));
    write_adapter(&model, 1, &a1);
    write_adapter(&model, 2, &a2);
    drop(model);
    let adapters = AdapterRegistry::beside(&registry);
    adapters.promote(&a1, entry("v1")).expect("promote v1");

    let server = start(config(registry.clone(), dir.path().join("data")));
    let client = reqwest::Client::new();
    wait_for(&client, &server.base, "v1").await;
    let (h1, answer_v1) = ask(&client, &server.base).await;
    assert_eq!(h1, "v1");
    let models: Value = client
        .get(format!("{}/v1/models", server.base))
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert_eq!(models["data"][0]["adapter"], "v1");

    // Promote v2 while requests keep coming: every one succeeds and names one adapter.
    adapters.promote(&a2, entry("v2")).expect("promote v2");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.iter().any(|(h, _): &(String, String)| h == "v2") {
        assert!(Instant::now() < deadline, "v2 never served");
        let batch: Vec<_> = (0..3)
            .map(|_| {
                let (c, b) = (client.clone(), server.base.clone());
                tokio::spawn(async move { ask(&c, &b).await })
            })
            .collect();
        for t in batch {
            seen.push(t.await.expect("task"));
        }
    }
    for (h, _) in &seen {
        assert!(h == "v1" || h == "v2", "unexpected adapter {h}");
    }
    let (_, answer_v2) = ask(&client, &server.base).await;
    assert_ne!(
        answer_v2, answer_v1,
        "the second adapter should change what is decided"
    );

    // Admin rollback: needs the admin key, then serves v1 again at once.
    let denied = client
        .post(format!("{}/admin/adapter/rollback", server.base))
        .json(&json!({}))
        .send()
        .await
        .expect("rollback");
    assert_eq!(denied.status(), 401);
    let r: Value = client
        .post(format!("{}/admin/adapter/rollback", server.base))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({}))
        .send()
        .await
        .expect("rollback")
        .json()
        .await
        .expect("json");
    assert_eq!(r["served"], "v1");
    assert_eq!(r["changed"], true);
    // The swap emptied the response cache: the same greedy request runs on v1 again.
    assert_eq!(cache_entries(&client, &server.base).await, 0);
    let (h, answer, cache) = ask_cached(&client, &server.base).await;
    assert_eq!(
        (h.as_str(), answer.as_str(), cache.as_str()),
        ("v1", answer_v1.as_str(), "miss")
    );
    let (h, answer, cache) = ask_cached(&client, &server.base).await;
    assert_eq!(
        (h.as_str(), answer, cache.as_str()),
        ("v1", answer_v1, "hit")
    );
    let shown = admin_adapter(&client, &server.base).await;
    assert_eq!(shown["promoted"], "v1");
    assert_eq!(shown["versions"].as_array().map(Vec::len), Some(2));
}

/// The refuse threshold an adapter was calibrated with travels in its GGUF and decides
/// `trained` mode's verdicts; other modes keep the most probable verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_threshold_decides_trained_verdicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, model) = registry_and_model(dir.path());
    let path = dir.path().join("eager.gguf");
    let lora = model.new_lora(LoraConfig::default(), 1).expect("lora");
    // Every verdict probability has log-odds above -29: this adapter refuses everything.
    let meta = AdapterMeta {
        refuse_log_odds: Some(-29.0),
        ..AdapterMeta::default()
    };
    adapter::write(&lora, &model.config, &meta, &path).expect("export");
    drop(model);
    let mut config = config(registry, dir.path().join("data"));
    config.adapter = AdapterChoice::File(path);
    let server = start(config);
    let client = reqwest::Client::new();
    wait_for(&client, &server.base, "eager").await;
    let verdict = |mode: &'static str| {
        let (client, base) = (client.clone(), server.base.clone());
        async move {
            let body: Value = client
                .post(format!("{base}/v1/chat/completions"))
                .json(&json!({
                    "model": "smollm2-135m-instruct",
                    "messages": [{"role": "user", "content": "Name three colours."}],
                    "max_tokens": 8,
                    "temperature": 0,
                    "safety_mode": mode,
                }))
                .send()
                .await
                .expect("request")
                .json()
                .await
                .expect("json");
            body["cada"].clone()
        }
    };
    let trained = verdict("trained").await;
    assert_eq!(trained["verdict"], "refuse", "{trained}");
    assert_eq!(trained["refuse_log_odds"], -29.0);
    let p = trained["verdict_probabilities"]["refuse"]
        .as_f64()
        .expect("probabilities");
    assert!(
        p < 0.5,
        "a benign request should not be refused by argmax (p {p})"
    );
    let cases = verdict("cases").await;
    assert!(cases["refuse_log_odds"].is_null(), "{cases}");
    let shown = admin_adapter(&client, &server.base).await;
    assert_eq!(shown["refuse_log_odds"], -29.0);
}

/// `cada_adapter_info` of `/metrics`: the adapter version whose series is 1.
async fn served_in_metrics(client: &reqwest::Client, base: &str) -> String {
    metrics(client, base)
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("cada_adapter_info{adapter=\""))
        .filter_map(|l| l.split_once("\"} "))
        .find(|(_, value)| value.trim() == "1")
        .map(|(adapter, _)| adapter.to_owned())
        .expect("a served adapter in cada_adapter_info")
}

/// A fleet: two replicas share the adapter registry and a PostgreSQL case store. A promotion
/// reaches both (each watches the registry) and shows in each one's metrics; a rollback asked of
/// one replica reaches the other too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_and_a_rollback_reach_every_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, model) = registry_and_model(dir.path());
    let (a1, a2) = (dir.path().join("a1.gguf"), dir.path().join("a2.gguf"));
    write_adapter(&model, 1, &a1);
    write_adapter(&model, 2, &a2);
    drop(model);
    let adapters = AdapterRegistry::beside(&registry);
    adapters.promote(&a1, entry("v1")).expect("promote v1");
    // The test database's client blocks: made and dropped off the runtime.
    let db = std::thread::spawn(cada_core::store::testing::PgDatabase::new)
        .join()
        .expect("database");
    let replicas: Vec<Server> = (0..2)
        .map(|i| {
            let mut config = config(registry.clone(), dir.path().join(format!("data-{i}")));
            config.store.url = Some(cada_gateway::config::Secret(db.url.clone()));
            start(config)
        })
        .collect();
    let client = reqwest::Client::new();
    for r in &replicas {
        wait_for(&client, &r.base, "v1").await;
        assert_eq!(served_in_metrics(&client, &r.base).await, "v1");
    }

    adapters.promote(&a2, entry("v2")).expect("promote v2");
    for r in &replicas {
        wait_for(&client, &r.base, "v2").await;
        assert_eq!(served_in_metrics(&client, &r.base).await, "v2");
        assert_eq!(ask(&client, &r.base).await.0, "v2");
    }

    // Rolled back through replica 0; replica 1 follows the registry.
    let r: Value = client
        .post(format!("{}/admin/adapter/rollback", replicas[0].base))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({}))
        .send()
        .await
        .expect("rollback")
        .json()
        .await
        .expect("json");
    assert_eq!(r["served"], "v1", "{r}");
    wait_for(&client, &replicas[1].base, "v1").await;
    for r in &replicas {
        assert_eq!(served_in_metrics(&client, &r.base).await, "v1");
        assert_eq!(ask(&client, &r.base).await.0, "v1");
    }
    drop(replicas);
    std::thread::spawn(move || drop(db)).join().expect("drop");
}
