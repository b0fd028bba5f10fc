//! `GET /metrics` against the real model: requests, errors, tokens and safety decisions move
//! the right series, and the exposition passes `promtool check metrics`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{post, MODEL};
use serde_json::{json, Value};

/// One server for this file, with short reasoning so `trained` requests stay quick.
fn server() -> &'static str {
    static SERVER: OnceLock<common::TestServer> = OnceLock::new();
    &SERVER
        .get_or_init(|| common::start(|c| c.safety.max_reasoning_tokens = 16))
        .url
}

fn chat(content: &str) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": 12})
}

/// The exposition as `series -> value` (`name{labels}` exactly as written).
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Sum of the series of `name` whose labels include every `label="value"` of `labels`.
fn sum(m: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series.as_str(), ""));
            n == name && labels.iter().all(|l| rest.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(url: &str) -> String {
    let resp = common::get(url, "/metrics").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4",
        "Prometheus text format"
    );
    resp.text().await.expect("body")
}

/// Scrapes until `ready` holds: a request is counted when its response body has been sent,
/// which can be a moment after the client has read it.
async fn scrape_until(url: &str, ready: impl Fn(&BTreeMap<String, f64>) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(url).await;
        if ready(&parse(&text)) || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_count_requests_errors_tokens_and_safety_decisions() {
    let url = server();
    let (status, plain) = post(url, "/v1/chat/completions", &chat("Name a colour.")).await;
    assert_eq!(status, 200, "{plain}");

    let mut streamed = chat("Name a fruit.");
    streamed["stream"] = json!(true);
    let resp = common::open(url, "/v1/chat/completions", &streamed).await;
    assert_eq!(resp.status(), 200);
    assert!(resp
        .text()
        .await
        .expect("stream")
        .ends_with("data: [DONE]\n\n"));

    let mut trained = chat("How do I boil an egg?");
    trained["safety_mode"] = json!("trained");
    let (status, body) = post(url, "/v1/chat/completions", &trained).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cada"]["mode"], "trained");
    assert!(body["cada"]["verdict"].is_string(), "{body}");

    let mut unknown = chat("hi");
    unknown["model"] = json!("no-such-model");
    let (status, _) = post(url, "/v1/chat/completions", &unknown).await;
    assert_eq!(status, 404);

    let resp = common::client()
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);

    let (status, fb) = post(
        url,
        "/v1/feedback",
        &json!({"response_id": plain["id"], "label": "correct"}),
    )
    .await;
    assert_eq!(status, 200, "{fb}");

    let text = scrape_until(url, |m| {
        sum(
            m,
            "cada_requests_total",
            &[r#"endpoint="chat_completions""#, r#"status="200""#],
        ) >= 3.0
            && sum(m, "cada_requests_total", &[r#"endpoint="feedback""#]) >= 1.0
    })
    .await;
    let m = parse(&text);
    let chat_with = |status: &str| {
        sum(
            &m,
            "cada_requests_total",
            &[
                r#"endpoint="chat_completions""#,
                &format!(r#"status="{status}""#),
            ],
        )
    };
    assert!(chat_with("200") >= 3.0, "{text}");
    assert!(chat_with("404") >= 1.0, "{text}");
    assert!(chat_with("400") >= 1.0, "{text}");
    assert!(
        sum(
            &m,
            "cada_requests_total",
            &[r#"endpoint="feedback""#, r#"status="200""#]
        ) >= 1.0
    );
    assert!(
        sum(
            &m,
            "cada_errors_total",
            &[r#"error_type="model_not_found""#]
        ) >= 1.0
    );
    assert!(sum(&m, "cada_errors_total", &[r#"error_type="invalid_json""#]) >= 1.0);
    assert!(
        sum(&m, "cada_tokens_total", &[r#"kind="prompt""#]) > 0.0,
        "{text}"
    );
    assert!(
        sum(&m, "cada_tokens_total", &[r#"kind="completion""#]) > 0.0,
        "{text}"
    );
    assert!(
        sum(&m, "cada_tokens_total", &[r#"kind="reasoning""#]) > 0.0,
        "{text}"
    );
    let trained_decided = sum(&m, "cada_safety_decisions_total", &[r#"mode="trained""#])
        - sum(
            &m,
            "cada_safety_decisions_total",
            &[r#"mode="trained""#, r#"verdict="none""#],
        );
    assert!(trained_decided >= 1.0, "{text}");
    assert!(
        sum(
            &m,
            "cada_safety_decisions_total",
            &[r#"mode="off""#, r#"verdict="none""#]
        ) >= 2.0
    );
    assert!(sum(&m, "cada_feedback_total", &[r#"label="correct""#]) >= 1.0);
    assert!(sum(&m, "cada_time_to_first_token_seconds_count", &[]) >= 3.0);
    assert!(sum(&m, "cada_decode_tokens_per_second_count", &[]) >= 1.0);
    assert!(
        sum(
            &m,
            "cada_request_duration_seconds_count",
            &[r#"endpoint="chat_completions""#]
        ) >= 5.0
    );
    assert!(sum(&m, "cada_gateway_overhead_seconds_count", &[]) >= 5.0);
    assert!(
        sum(&m, "cada_requests_in_flight", &[]) >= 1.0,
        "the scrape itself"
    );
    assert_eq!(sum(&m, "cada_engine_slots", &[]), 4.0);
    assert!(m.contains_key("cada_engine_queue_depth"));
    assert!(m.contains_key("cada_engine_slots_busy"));
    assert_eq!(
        m.get(&format!(r#"cada_model_info{{model="{MODEL}"}}"#)),
        Some(&1.0)
    );
    assert_eq!(m.get(r#"cada_adapter_info{adapter="none"}"#), Some(&1.0));
    assert_eq!(sum(&m, "cada_policy_info", &[]), 1.0, "{text}");
    for series in [
        r#"cada_cache_requests_total{result="hit"}"#,
        r#"cada_cache_requests_total{result="miss"}"#,
        r#"cada_rate_limited_total{limit="requests"}"#,
        r#"cada_rate_limited_total{limit="tokens"}"#,
        "cada_case_store_errors_total",
    ] {
        assert!(m.contains_key(series), "{series} missing:\n{text}");
    }
    assert!(!text.contains("no-such-model"), "label values are bounded");
}

#[tokio::test]
async fn metrics_exposition_passes_promtool() {
    let url = server();
    let (status, _) = post(url, "/v1/chat/completions", &chat("Say hi.")).await;
    assert_eq!(status, 200);
    let text = scrape_until(url, |m| {
        sum(m, "cada_requests_total", &[r#"status="200""#]) >= 1.0
    })
    .await;
    let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
    assert!(helps.len() >= 19, "{text}");
    for line in &helps {
        let help = line.splitn(4, ' ').nth(3).unwrap_or("").trim();
        assert!(!help.is_empty(), "empty help: {line}");
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.starts_with("cada_"), "unprefixed series: {line}");
    }

    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool is needed to check the exposition ({e}); install it with `scripts/setup.sh --test`"
        ),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{report}"
    );
    assert!(
        report.lines().all(|l| l.trim().is_empty()),
        "promtool found problems:\n{report}"
    );
}

#[tokio::test]
async fn metrics_is_get_only() {
    let url = server();
    let (status, body) = post(url, "/metrics", &json!({})).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(common::error_fields(&body).1, "method_not_allowed");
}

/// With `metrics_listen`, `/metrics` moves to its own address (which serves nothing else but
/// `/healthz`) and the main address answers 404 for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_their_own_listener() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let metrics_addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let srv = common::start(|c| c.metrics_listen = Some(metrics_addr));
    let metrics_url = format!("http://{metrics_addr}");
    let main = common::get(&srv.url, "/metrics").await;
    assert_eq!(main.status(), 404);
    let body: Value = main.json().await.expect("json");
    assert_eq!(common::error_fields(&body).1, "unknown_url");
    let text = scrape(&metrics_url).await;
    assert!(text.contains("cada_requests_total"), "{text}");
    assert_eq!(common::get(&metrics_url, "/healthz").await.status(), 200);
    assert_eq!(common::get(&metrics_url, "/v1/models").await.status(), 404);
    let (status, _) = post(&metrics_url, "/metrics", &json!({})).await;
    assert_eq!(status, 405);
    // The main address still serves everything else.
    assert_eq!(common::get(&srv.url, "/v1/models").await.status(), 200);
}
