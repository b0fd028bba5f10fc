//! Starts a real gateway (real model) on 127.0.0.1:0 in its own thread and runtime, so it
//! outlives each test's runtime; one shared default server, or a dedicated one per config.

#![allow(dead_code)]

pub mod rng;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cada_gateway::Config;
use serde_json::Value;

pub const MODEL: &str = "smollm2-135m-instruct";

#[derive(Debug)]
pub struct TestServer {
    pub url: String,
    /// Stops the gateway when the server is dropped.
    _gateway: cada_gateway::background::Background,
}

/// A `user` key with its scope's limits and safety policy, stored as the key's sha256.
#[allow(dead_code)]
pub fn user_key(name: &str, secret: &str) -> cada_gateway::auth::KeyConfig {
    use sha2::Digest;
    cada_gateway::auth::KeyConfig {
        name: name.into(),
        sha256: hex::encode(sha2::Sha256::digest(secret.as_bytes())),
        scope: cada_gateway::auth::Scope::User,
        requests_per_minute: None,
        tokens_per_minute: None,
        feedback_per_minute: None,
        safety: Default::default(),
    }
}

/// A fresh data directory (case store, caches) for one server.
pub fn data_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("cada-gw-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Plain serving (`off`) unless a test picks a safety mode; the real policy and a fresh store.
pub fn base_config() -> Config {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut c = Config {
        registry: root.join("models/registry.toml"),
        verify_sha256: false,
        // Tests serve the base model, whatever a developer promoted locally.
        adapter: cada_gateway::config::AdapterChoice::None,
        ..Config::default()
    };
    c.safety.mode = cada_gateway::config::Mode::Off;
    c.safety.policy_dir = root.join("configs/policy");
    c.store.data_dir = data_dir();
    c.engine.parallel = 4;
    c.engine.ctx_per_slot = 1024;
    c.limits.max_body_bytes = 64 * 1024;
    c.limits.shutdown_grace_secs = 5;
    c
}

/// A dedicated server with a modified configuration, ready to serve.
pub fn start(configure: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = base_config();
    configure(&mut config);
    let gateway = cada_gateway::background::Background::spawn(config).expect("bind");
    let url = gateway.url();
    wait_ready(&url);
    TestServer {
        url,
        _gateway: gateway,
    }
}

/// The shared server most tests use.
pub fn shared() -> &'static str {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    &SERVER.get_or_init(|| start(|_| {})).url
}

fn wait_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(body) = http_get_blocking(&format!("{url}/readyz")) {
            if body.contains("\"ready\"") {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "gateway at {url} did not become ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Minimal blocking GET over std (the test runtime may not exist yet).
fn http_get_blocking(url: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// Sends a JSON POST and returns the response unread (streams, headers).
pub async fn open(url: &str, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{url}{path}"))
        .json(body)
        .send()
        .await
        .expect("send")
}

/// Sends a GET and returns the response.
pub async fn get(url: &str, path: &str) -> reqwest::Response {
    client()
        .get(format!("{url}{path}"))
        .send()
        .await
        .expect("send")
}

/// Sends a JSON POST and returns the status and JSON body.
pub async fn post(url: &str, path: &str, body: &Value) -> (u16, Value) {
    let resp = open(url, path, body).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

/// Asserts OpenAI's error shape and returns (type, code, param).
pub fn error_fields(body: &Value) -> (String, String, Option<String>) {
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{body}"
    );
    (
        e["type"].as_str().expect("type").to_string(),
        e["code"].as_str().expect("code").to_string(),
        e["param"].as_str().map(str::to_string),
    )
}

/// Splits an SSE body into its `data:` payloads.
pub fn sse_payloads(text: &str) -> Vec<String> {
    assert!(text.ends_with("\n\n"), "stream must end with a blank line");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {e:?}"))
                .to_string()
        })
        .collect()
}
