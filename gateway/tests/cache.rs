//! The response cache on a real gateway (real model): deterministic requests (greedy, or a
//! fixed seed) are answered from memory the second time, as JSON or as a stream, with the same
//! text and a new response id that feedback can name; sampled requests bypass it; each API key
//! has its own namespace; hits count as cache hits, not model tokens. Global admission control
//! answers a fast 503 `overloaded` past `limits.max_in_flight`.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cada_gateway::config::Mode;
use common::{sse_payloads, MODEL};
use serde_json::{json, Value};

const KEY_A: &str = "cache-key-a";
const KEY_B: &str = "cache-key-b";

/// `cases` mode with short reasoning (so hits replay a deliberation), two user keys.
fn server() -> &'static str {
    static SERVER: OnceLock<common::TestServer> = OnceLock::new();
    &SERVER
        .get_or_init(|| {
            common::start(|c| {
                c.safety.mode = Mode::Cases;
                c.safety.max_reasoning_tokens = 24;
                c.auth.keys.push(common::user_key("a", KEY_A));
                c.auth.keys.push(common::user_key("b", KEY_B));
            })
        })
        .url
}

fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 16,
        "temperature": 0,
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

async fn send(url: &str, key: &str, body: &Value) -> reqwest::Response {
    common::client()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("send")
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// (x-cache, body) of a non-streaming request.
async fn ask(url: &str, key: &str, body: &Value) -> (String, Value) {
    let r = send(url, key, body).await;
    let (status, cache) = (r.status(), header(&r, "x-cache"));
    let body: Value = r.json().await.expect("json");
    assert_eq!(status, 200, "{body}");
    (cache, body)
}

fn content(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
}

/// Sum of a metric's series whose labels contain `label`.
async fn metric(url: &str, name: &str, label: &str) -> f64 {
    let text = common::get(url, "/metrics")
        .await
        .text()
        .await
        .expect("metrics");
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_greedy_request_is_answered_from_the_cache_as_json_and_as_a_stream() {
    let url = server();
    let body = chat(
        "Name a fruit that is yellow.",
        json!({"include_reasoning": true}),
    );
    let prompt_before = metric(url, "cada_tokens_total", "prompt").await;
    let (first_cache, first) = ask(url, KEY_A, &body).await;
    assert_eq!(first_cache, "miss");
    let prompt_live = metric(url, "cada_tokens_total", "prompt").await - prompt_before;
    assert!(prompt_live > 0.0, "the miss ran the model");
    let hits_before = metric(url, "cada_cache_requests_total", "hit").await;

    let (cache, second) = ask(url, KEY_A, &body).await;
    assert_eq!(cache, "hit");
    assert_eq!(content(&second), content(&first));
    assert_ne!(second["id"], first["id"], "a hit is a new response");
    assert_eq!(second["usage"], first["usage"]);
    assert_eq!(
        second["choices"][0]["message"]["reasoning_content"],
        first["choices"][0]["message"]["reasoning_content"]
    );
    for field in ["verdict", "probability", "precedents"] {
        assert_eq!(second["cada"][field], first["cada"][field], "{field}");
    }
    assert_eq!(
        metric(url, "cada_cache_requests_total", "hit").await - hits_before,
        1.0
    );
    assert_eq!(
        metric(url, "cada_tokens_total", "prompt").await - prompt_before,
        prompt_live,
        "a hit is not model work"
    );

    // The same request streamed: served from the same entry, in the live stream's pieces.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let r = send(url, KEY_A, &streamed).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "hit");
    assert_eq!(header(&r, "content-type"), "text/event-stream");
    let payloads = sse_payloads(&r.text().await.expect("stream"));
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).expect("chunk"))
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, content(&first));
    let pieces = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["content"].is_string())
        .count();
    assert!(pieces > 1, "replayed in pieces, not one blob");
    let usage = &chunks.last().expect("usage chunk")["usage"];
    assert_eq!(
        usage["completion_tokens"],
        first["usage"]["completion_tokens"]
    );

    // A hit is recorded like any response: feedback can name it.
    let fb = common::client()
        .post(format!("{url}/v1/feedback"))
        .bearer_auth(KEY_A)
        .json(&json!({"response_id": second["id"], "label": "over_refusal"}))
        .send()
        .await
        .expect("feedback");
    assert_eq!(fb.status(), 200, "{:?}", fb.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_requests_bypass_the_cache_and_seeded_ones_use_it() {
    let url = server();
    let sampled = chat("Say something about rain.", json!({"temperature": 0.9}));
    for _ in 0..2 {
        assert_eq!(ask(url, KEY_A, &sampled).await.0, "bypass");
    }
    let seeded = chat(
        "Say something about snow.",
        json!({"temperature": 0.9, "seed": 11}),
    );
    let (c1, b1) = ask(url, KEY_A, &seeded).await;
    let (c2, b2) = ask(url, KEY_A, &seeded).await;
    assert_eq!((c1.as_str(), c2.as_str()), ("miss", "hit"));
    assert_eq!(content(&b1), content(&b2));
    let other_seed = chat(
        "Say something about snow.",
        json!({"temperature": 0.9, "seed": 12}),
    );
    assert_eq!(ask(url, KEY_A, &other_seed).await.0, "miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_has_its_own_namespace() {
    let url = server();
    let body = chat("What is the capital of Italy?", json!({}));
    assert_eq!(ask(url, KEY_A, &body).await.0, "miss");
    assert_eq!(ask(url, KEY_A, &body).await.0, "hit");
    assert_eq!(
        ask(url, KEY_B, &body).await.0,
        "miss",
        "key b never sees key a's entry"
    );
    assert_eq!(ask(url, KEY_B, &body).await.0, "hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_in_flight_requests_get_a_fast_503_overloaded() {
    let server = common::start(|c| c.limits.max_in_flight = 1);
    let url = server.url.clone();
    // A long stream holds the only place while it is read slowly.
    let long = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a long story about a ship."}],
        "max_tokens": 400,
        "temperature": 0,
        "stream": true,
        "ignore_eos": true,
    });
    let mut held = common::open(&url, "/v1/chat/completions", &long).await;
    assert_eq!(held.status(), 200);
    let _first = held.chunk().await.expect("first chunk");
    let started = Instant::now();
    let short =
        json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    let r = common::open(&url, "/v1/chat/completions", &short).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once"
    );
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "retry-after"), "1");
    let body: Value = r.json().await.expect("json");
    assert_eq!(common::error_fields(&body).1, "overloaded");
    // Open endpoints are not counted.
    assert_eq!(common::get(&url, "/healthz").await.status(), 200);
    // Ending the stream frees the place.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = common::open(&url, "/v1/chat/completions", &short).await;
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the place was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
