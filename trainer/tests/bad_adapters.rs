//! A bad adapter never takes the gateway down or replaces a good one: at start-up a refused
//! promoted version (truncated, an impossible string length, a foreign architecture, a digest
//! that is not the recorded one, an unreadable registry) gives way to its parent or the base
//! model; a refused reload or rollback keeps the served adapter, a rollback to a refused version
//! leaves the registry as it was, and a refused version is tried again only once its file
//! changes. Real model; the bad files are made from the committed release adapter.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cada_core::adapters::AdapterRegistry;
use cada_core::Registry;
use serde_json::{json, Value};

mod common;
use common::*;

/// The committed release adapter (trained for the default chat model).
fn good_adapter() -> PathBuf {
    let registry = Registry::load(&root().join("models/registry.toml")).expect("registry");
    let (_, file) = registry
        .release_adapter("smollm2-135m-instruct")
        .expect("release adapter");
    file.path
}

/// A copy of the release adapter in `dir` with `edit` applied.
fn bad_adapter(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(good_adapter()).expect("read");
    edit(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    path
}

/// Where the value of the string key `key` starts (after its type and length).
fn string_value_at(bytes: &[u8], key: &str) -> usize {
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_bytes())
        .expect("key");
    at + key.len() + 4 + 8
}

fn truncate(b: &mut Vec<u8>) {
    b.truncate(b.len() / 2);
}

/// `general.architecture`'s length set to 2^60: a reader that trusts it allocates that much.
fn huge_length(b: &mut [u8]) {
    let at = string_value_at(b, "general.architecture") - 8;
    b[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
}

fn foreign_architecture(b: &mut [u8]) {
    let at = string_value_at(b, "general.architecture");
    b[at..at + 5].copy_from_slice(b"gemma");
}

/// The value of one series line of `/metrics`, e.g. `cada_adapter_fallback`.
async fn series(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    metrics(client, base)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {name}"))
}

fn refused(reason: &str) -> String {
    format!("cada_adapter_refused_total{{reason=\"{reason}\"}}")
}

/// A chat answer (in `off` mode) and the adapter that served it.
async fn chat(client: &reqwest::Client, base: &str) -> String {
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "Name a colour."}],
            "max_tokens": 4,
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    r.headers()["x-cada-adapter"]
        .to_str()
        .expect("header")
        .to_owned()
}

async fn admin_post(client: &reqwest::Client, base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = client
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .expect("admin request");
    (r.status().as_u16(), r.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_falls_back_past_a_refused_version_and_retries_it_only_once_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = temp_registry(dir.path());
    let adapters = AdapterRegistry::beside(&registry);
    adapters
        .promote(&good_adapter(), entry("v1"))
        .expect("promote v1");
    let truncated = bad_adapter(dir.path(), "truncated.gguf", truncate);
    adapters
        .promote(&truncated, entry("v2"))
        .expect("promote v2");

    let server = start(config(registry, dir.path().join("data")));
    let client = reqwest::Client::new();
    wait_for(&client, &server.base, "v1").await;
    assert_eq!(chat(&client, &server.base).await, "v1");
    assert_eq!(
        series(&client, &server.base, "cada_adapter_fallback").await,
        1.0
    );
    assert_eq!(series(&client, &server.base, &refused("header")).await, 1.0);

    // The watcher polls every second: the refused file is not loaded again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(series(&client, &server.base, &refused("header")).await, 1.0);
    let (status, body) =
        admin_post(&client, &server.base, "/admin/adapter/reload", json!({})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "adapter_refused");
    assert_eq!(series(&client, &server.base, &refused("header")).await, 1.0);

    // Once the file changes it is tried once more (here: whole, but not the bytes recorded).
    std::fs::copy(good_adapter(), adapters.dir.join("v2.gguf")).expect("replace v2");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(series(&client, &server.base, &refused("digest")).await, 1.0);
    assert_eq!(chat(&client, &server.base).await, "v1");

    // Rolling back to what is served records it and ends the fallback.
    let (status, body) = admin_post(
        &client,
        &server.base,
        "/admin/adapter/rollback",
        json!({"version": "v1"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["served"], "v1");
    assert_eq!(
        adapters.read().expect("index").promoted.as_deref(),
        Some("v1")
    );
    assert_eq!(
        series(&client, &server.base, "cada_adapter_fallback").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reloads_and_rollbacks_keep_the_served_adapter_and_the_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = temp_registry(dir.path());
    let adapters = AdapterRegistry::beside(&registry);
    adapters
        .promote(&good_adapter(), entry("v1"))
        .expect("promote v1");
    let server = start(config(registry, dir.path().join("data")));
    let client = reqwest::Client::new();
    wait_for(&client, &server.base, "v1").await;
    assert_eq!(
        series(&client, &server.base, "cada_adapter_fallback").await,
        0.0
    );

    // A promoted file whose header claims a 2^60-byte string: refused, v1 keeps serving.
    let huge = bad_adapter(dir.path(), "huge.gguf", |b| huge_length(b));
    adapters.promote(&huge, entry("v2")).expect("promote v2");
    let (status, body) =
        admin_post(&client, &server.base, "/admin/adapter/reload", json!({})).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("bytes left"),
        "{body}"
    );
    assert_eq!(chat(&client, &server.base).await, "v1");

    // Another architecture's adapter: refused by the watcher, v1 keeps serving.
    let foreign = bad_adapter(dir.path(), "foreign.gguf", |b| foreign_architecture(b));
    adapters.promote(&foreign, entry("v3")).expect("promote v3");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        series(&client, &server.base, &refused("architecture")).await,
        1.0
    );
    assert_eq!(chat(&client, &server.base).await, "v1");

    // A rollback to a refused version is refused before the registry changes.
    let (status, body) = admin_post(
        &client,
        &server.base,
        "/admin/adapter/rollback",
        json!({"version": "v2"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        adapters.read().expect("index").promoted.as_deref(),
        Some("v3")
    );
    assert_eq!(chat(&client, &server.base).await, "v1");

    // A rollback to a good version is recorded and served.
    let (status, body) = admin_post(
        &client,
        &server.base,
        "/admin/adapter/rollback",
        json!({"version": "v1"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        adapters.read().expect("index").promoted.as_deref(),
        Some("v1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_adapter_registry_starts_the_base_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = temp_registry(dir.path());
    let adapters = AdapterRegistry::beside(&registry);
    std::fs::create_dir_all(&adapters.dir).expect("mkdir");
    std::fs::write(adapters.index_path(), "{\"promoted\": ").expect("corrupt index");
    let server = start(config(registry, dir.path().join("data")));
    let client = reqwest::Client::new();
    wait_for(&client, &server.base, "none").await;
    assert_eq!(chat(&client, &server.base).await, "none");
    assert_eq!(
        series(&client, &server.base, "cada_adapter_fallback").await,
        1.0
    );
    assert_eq!(
        series(&client, &server.base, &refused("registry")).await,
        1.0
    );
}
