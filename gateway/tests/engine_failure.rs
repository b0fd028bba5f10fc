//! A gateway whose engine fails while it serves, on the real model: a llama.cpp abort and a
//! hung decode step, injected after real requests were answered. In-flight requests get a 503
//! (or, inside a stream already under way, an error event) in OpenAI's error shape,
//! `/healthz` and `/readyz` answer 503 with the reason, the metrics and the log say why, and
//! the gateway drains and exits with the engine's error, the case store written. Faults are
//! armed process-wide, so these tests run one at a time.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cada_core::engine::fault::{self, Fault};
use cada_core::store::{CaseStore, StoreConfig};
use cada_gateway::{Config, GatewayError};
use common::{error_fields, MODEL};
use serde_json::{json, Value};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every log line of this test process (the gateways run in it).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .init();
        buffer
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A gateway on 127.0.0.1:0 whose result `run` hands back.
struct Gateway {
    url: String,
    config: Config,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<Result<(), GatewayError>>,
}

fn start(configure: impl FnOnce(&mut Config)) -> Gateway {
    logs();
    let mut config = common::base_config();
    config.engine.parallel = 2;
    configure(&mut config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done) = std::sync::mpsc::channel();
    let run_config = config.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let result = rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            cada_gateway::run(listener, run_config, async {
                let _ = rx.await;
            })
            .await
        });
        let _ = done_tx.send(result);
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready_blocking(&url) {
        assert!(Instant::now() < deadline, "gateway did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    Gateway {
        url,
        config,
        shutdown: Some(tx),
        done,
    }
}

/// A blocking `/readyz` probe (no runtime is needed to wait for the gateway).
fn ready_blocking(url: &str) -> bool {
    use std::io::Read;
    let host = url.trim_start_matches("http://");
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(
        s,
        "GET /readyz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.contains("\"ready\"")
}

fn chat(content: &str, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": true,
        "stream": stream,
    })
}

async fn status_and_body(url: &str, path: &str) -> (u16, Value) {
    let resp = common::get(url, path).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

async fn metrics(url: &str) -> String {
    common::get(url, "/metrics")
        .await
        .text()
        .await
        .expect("text")
}

/// Polls until `done` holds, failing with `what` after 20 s.
async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, done: impl Fn() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_llama_cpp_abort_answers_503_and_the_gateway_drains_and_exits() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut gw = start(|c| c.engine.exit_after_failure_secs = 3600);
    let url = gw.url.clone();

    // The real model serves first.
    let (status, answer) = common::post(&url, "/v1/chat/completions", &chat("Hi!", 6, false)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(!answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
        .is_empty());
    let response_id = answer["id"].as_str().expect("id").to_string();

    // Two requests in flight: a stream under way and a JSON request.
    let mut stream = common::open(
        &url,
        "/v1/chat/completions",
        &chat("Tell a long story.", 400, true),
    )
    .await;
    assert_eq!(stream.status(), 200);
    let mut streamed = String::new();
    while streamed.matches("data: ").count() < 2 {
        let chunk = stream.chunk().await.expect("chunk").expect("stream open");
        streamed.push_str(&String::from_utf8_lossy(&chunk));
    }
    let json_url = url.clone();
    let in_flight = tokio::spawn(async move {
        common::post(
            &json_url,
            "/v1/chat/completions",
            &chat("Count to a thousand.", 400, false),
        )
        .await
    });
    wait_for("both requests in the engine", || async {
        status_and_body(&url, "/readyz").await.1["slots_active"] == 2
    })
    .await;

    fault::arm(Fault::Abort);

    let (status, body) = in_flight.await.expect("request task");
    assert_eq!(status, 503, "{body}");
    let (kind, code, _) = error_fields(&body);
    assert_eq!(
        (kind.as_str(), code.as_str()),
        ("server_error", "engine_failed")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("abort"),
        "{body}"
    );
    while let Some(chunk) = stream.chunk().await.expect("chunk") {
        streamed.push_str(&String::from_utf8_lossy(&chunk));
    }
    let events = common::sse_payloads(&streamed);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let error: Value = serde_json::from_str(&events[events.len() - 2]).expect("error event");
    assert_eq!(error_fields(&error).1, "engine_failed", "{error}");

    // Health, readiness and new requests say why.
    for path in ["/healthz", "/readyz"] {
        let (status, body) = status_and_body(&url, path).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(body["status"], "failed", "{body}");
        assert_eq!(body["reason"], "abort", "{body}");
    }
    let (status, body) = common::post(&url, "/v1/chat/completions", &chat("Hi!", 4, false)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_fields(&body).1, "engine_failed");
    wait_for("the failure counted", || async {
        metrics(&url)
            .await
            .contains(r#"cada_engine_failures_total{reason="abort"} 1"#)
    })
    .await;
    assert!(metrics(&url).await.contains("cada_engine_up 0"));
    let log =
        String::from_utf8_lossy(&logs().lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    let said = log
        .lines()
        .any(|l| l.contains("ERROR") && l.contains("the engine failed") && l.contains("abort"));
    assert!(said, "no log line says why:\n{log}");

    // The store still takes feedback (the engine is not needed for it).
    let fb = common::client()
        .post(format!("{url}/v1/feedback"))
        .json(&json!({"response_id": response_id, "label": "over_refusal"}))
        .send()
        .await
        .expect("feedback");
    assert_eq!(fb.status(), 200);
    let case_id = fb.json::<Value>().await.expect("JSON")["case_id"]
        .as_str()
        .expect("case_id")
        .to_string();

    // Shut down: `run` ends with the engine's error, and what the store acknowledged is there.
    let _ = gw.shutdown.take().expect("shutdown").send(());
    let result = tokio::task::spawn_blocking(move || {
        gw.done
            .recv_timeout(Duration::from_secs(60))
            .map(|r| (r, gw.config))
    })
    .await
    .expect("join");
    let (result, config) = result.expect("the gateway exits");
    let error = result.expect_err("a failed engine ends run with an error");
    assert!(
        error.to_string().contains("engine failed (abort)"),
        "{error}"
    );
    let mut store = CaseStore::open(
        config.store.location().expect("location"),
        StoreConfig::default(),
    )
    .expect("store opens");
    assert!(store.response(&response_id).expect("read").is_some());
    store
        .get_case(&case_id)
        .expect("the feedback's case is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_decode_fails_the_engine_and_the_gateway_exits_on_its_own() {
    let _one = ONE_AT_A_TIME.lock().await;
    let gw = start(|c| {
        c.engine.stall_secs = 1;
        c.engine.exit_after_failure_secs = 1;
    });
    let url = gw.url.clone();
    let (status, body) = common::post(&url, "/v1/chat/completions", &chat("Hi!", 4, false)).await;
    assert_eq!(status, 200, "{body}");

    fault::arm(Fault::Hang);
    let asked = Instant::now();
    let (status, body) = common::post(&url, "/v1/chat/completions", &chat("Hi!", 32, false)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_fields(&body).1, "engine_failed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("stall"),
        "{body}"
    );
    assert!(asked.elapsed() >= Duration::from_secs(1));

    // No shutdown signal: the gateway exits by itself, with the engine's error.
    let result = tokio::task::spawn_blocking(move || gw.done.recv_timeout(Duration::from_secs(60)))
        .await
        .expect("join")
        .expect("the gateway exits on its own");
    let error = result.expect_err("exits with the engine's error");
    assert!(
        error.to_string().contains("engine failed (stall)"),
        "{error}"
    );
    assert!(
        std::net::TcpStream::connect(url.trim_start_matches("http://")).is_err(),
        "the listener is closed"
    );
}
