//! Slots, queueing and shutdown through HTTP, each on a dedicated single-slot server.

mod common;

use std::time::{Duration, Instant};

use common::{error_fields, post, start, MODEL};
use serde_json::{json, Value};

async fn ready(url: &str) -> Value {
    common::get(url, "/readyz")
        .await
        .json()
        .await
        .expect("json")
}

/// Polls `/readyz` until `done` holds for it, failing with `what` after 20 s.
async fn wait_until(url: &str, what: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = ready(url).await;
        if done(&r) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {r}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads until `n` SSE events arrived: the second one is text, so the engine has the request.
async fn read_events(resp: &mut reqwest::Response, n: usize) {
    let mut seen = String::new();
    while seen.matches("data: ").count() < n {
        let chunk = resp
            .chunk()
            .await
            .expect("chunk")
            .expect("stream ended early");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

fn long_stream() -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": "Tell me a long story."}],
           "max_tokens": 900, "ignore_eos": true, "stream": true, "temperature": 0})
}

#[tokio::test]
async fn client_disconnect_frees_the_slot() {
    let server = start(|c| {
        c.engine.parallel = 1;
        c.engine.max_queue = 4;
    });
    let url = server.url.clone();
    let mut resp = common::open(&url, "/v1/chat/completions", &long_stream()).await;
    read_events(&mut resp, 2).await;
    assert_eq!(ready(&url).await["slots_active"], 1);
    drop(resp);
    wait_until(&url, "the slot stayed busy after the client left", |r| {
        r["slots_active"] == 0
    })
    .await;
    let (s, b) = post(
        &url,
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn full_queue_is_a_fast_503() {
    let server = start(|c| {
        c.engine.parallel = 1;
        c.engine.max_queue = 1;
    });
    let url = server.url.clone();
    let mut running = common::open(&url, "/v1/chat/completions", &long_stream()).await;
    read_events(&mut running, 2).await;
    // Streams answer their headers once the request is queued.
    let waiting = common::open(&url, "/v1/chat/completions", &long_stream()).await;
    assert_eq!(waiting.status(), 200);
    let (s, b) = post(&url, "/v1/chat/completions", &long_stream()).await;
    assert_eq!(s, 503);
    assert_eq!(error_fields(&b).1, "overloaded");
    drop(running);
    drop(waiting);
    // Both the generating and the queued request are released once their clients leave.
    wait_until(&url, "abandoned requests kept their places", |r| {
        r["slots_active"] == 0 && r["queued"] == 0
    })
    .await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let server = start(|c| c.engine.parallel = 2);
    let url = server.url.clone();
    let request = tokio::spawn({
        let url = url.clone();
        async move {
            post(&url, "/v1/chat/completions", &json!({"model": MODEL, "messages": [{"role": "user", "content": "Count to twenty."}],
                "max_tokens": 120, "ignore_eos": true})).await
        }
    });
    // Let the request reach the engine, then shut down while it generates.
    wait_until(&url, "request never started", |r| r["slots_active"] == 1).await;
    let stopper = std::thread::spawn(move || drop(server));
    let (status, body) = request.await.expect("task");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 120);
    stopper.join().expect("server stopped");
    assert!(
        common::client()
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_err(),
        "listener closed after shutdown"
    );
}

#[tokio::test]
async fn serves_a_model_given_by_path_under_its_file_name() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/smollm2-135m-instruct-q4_1.gguf");
    let server = start(|c| {
        c.model = path.display().to_string();
        c.engine.parallel = 1;
    });
    let url = server.url.clone();
    assert_eq!(ready(&url).await["model"], "smollm2-135m-instruct-q4_1");
    let body = json!({"model": "smollm2-135m-instruct-q4_1", "prompt": "Hello", "max_tokens": 2});
    let (s, b) = post(&url, "/v1/completions", &body).await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = post(
        &url,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "Hello"}),
    )
    .await;
    assert_eq!(
        s, 404,
        "the registry id is not served when a path was given"
    );
}

#[test]
fn a_missing_model_stops_the_gateway_with_the_fetch_hint() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let err = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut config = common::base_config();
        config.registry = std::env::temp_dir().join("cada-no-registry.toml");
        cada_gateway::run(listener, config, std::future::pending()).await
    });
    let message = err.expect_err("no registry").to_string();
    assert!(message.contains("cada-no-registry.toml"), "{message}");
}
