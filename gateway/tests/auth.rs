//! API keys, scopes and per-key rate limits on a real gateway (real model): who gets 401 and
//! 403, the OpenAI `x-ratelimit-*` headers on every response, and 429 `rate_limit_exceeded`
//! with `Retry-After` once a key's request or token budget is spent.

mod common;

use cada_gateway::auth::KeyConfig;
use cada_gateway::config::Secret;
use serde_json::{json, Value};

const USER: &str = "user-key-1";
const ADMIN: &str = "admin-key-1";
const LIMITED: &str = "limited-key-1";
const FRUGAL: &str = "frugal-key-1";

fn key(name: &str, secret: &str, rpm: Option<u32>, tpm: Option<u32>) -> KeyConfig {
    KeyConfig {
        requests_per_minute: rpm,
        tokens_per_minute: tpm,
        feedback_per_minute: None,
        ..common::user_key(name, secret)
    }
}

/// One server for the file's tests (each test uses its own keys' budgets).
fn server() -> &'static str {
    static SERVER: std::sync::OnceLock<common::TestServer> = std::sync::OnceLock::new();
    &SERVER
        .get_or_init(|| {
            common::start(|c| {
                c.api_key = Some(Secret(USER.into()));
                c.admin_key = Some(Secret(ADMIN.into()));
                c.auth.keys.push(key("limited", LIMITED, Some(2), None));
                c.auth.keys.push(key("frugal", FRUGAL, None, Some(400)));
            })
        })
        .url
}

async fn call(url: &str, path: &str, key: Option<&str>, body: Option<Value>) -> reqwest::Response {
    let client = common::client();
    let mut req = match &body {
        Some(b) => client.post(format!("{url}{path}")).json(b),
        None => client.get(format!("{url}{path}")),
    };
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.expect("send")
}

fn chat(content: &str) -> Value {
    json!({
        "model": common::MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 4,
        "temperature": 0,
    })
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_scopes_decide_access() {
    let url = server();
    for (k, status, code) in [
        (None, 401, "invalid_api_key"),
        (Some("wrong-key"), 401, "invalid_api_key"),
    ] {
        let r = call(url, "/v1/chat/completions", k, Some(chat("Hi"))).await;
        assert_eq!(r.status().as_u16(), status);
        let body: Value = r.json().await.expect("json");
        let (kind, c, _) = common::error_fields(&body);
        assert_eq!((kind.as_str(), c.as_str()), ("invalid_request_error", code));
        assert!(
            !body.to_string().contains("wrong-key"),
            "keys are never echoed"
        );
    }
    let r = call(url, "/v1/chat/completions", Some(USER), Some(chat("Hi"))).await;
    assert_eq!(r.status(), 200);
    // The admin key calls user endpoints too; user keys cannot call admin ones.
    let r = call(url, "/v1/models", Some(ADMIN), None).await;
    assert_eq!(r.status(), 200);
    let r = call(url, "/admin/cases", Some(USER), None).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.expect("json");
    assert_eq!(common::error_fields(&body).1, "insufficient_permissions");
    let r = call(url, "/admin/cases", Some(ADMIN), None).await;
    assert_eq!(r.status(), 200);
    // Health, readiness stay open.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(call(url, path, None, None).await.status(), 200, "{path}");
    }
    // Unlimited keys carry no rate-limit headers.
    let r = call(url, "/v1/models", Some(USER), None).await;
    assert!(header(&r, "x-ratelimit-limit-requests").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_request_budget_gets_429_with_headers() {
    let url = server();
    for remaining in ["1", "0"] {
        let r = call(url, "/v1/chat/completions", Some(LIMITED), Some(chat("Hi"))).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "x-ratelimit-limit-requests").as_deref(),
            Some("2")
        );
        assert_eq!(
            header(&r, "x-ratelimit-remaining-requests").as_deref(),
            Some(remaining)
        );
        assert!(header(&r, "x-ratelimit-reset-requests").is_some_and(|v| v.ends_with('s')));
    }
    let r = call(url, "/v1/chat/completions", Some(LIMITED), Some(chat("Hi"))).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        header(&r, "x-ratelimit-remaining-requests").as_deref(),
        Some("0")
    );
    let body: Value = r.json().await.expect("json");
    let (kind, code, _) = common::error_fields(&body);
    assert_eq!(
        (kind.as_str(), code.as_str()),
        ("requests", "rate_limit_exceeded")
    );
    // Other keys are not affected.
    let r = call(url, "/v1/chat/completions", Some(USER), Some(chat("Hi"))).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_budgets_charge_prompts_up_front_and_completions_at_the_end() {
    let url = server();
    let mut first = chat("Count from 1 to 100, separated by commas:");
    first["max_tokens"] = json!(40);
    // The budget refills continuously from the first admission on.
    let admitted = std::time::Instant::now();
    let r = call(url, "/v1/chat/completions", Some(FRUGAL), Some(first)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-ratelimit-limit-tokens").as_deref(),
        Some("400")
    );
    let after_prompt: f64 = header(&r, "x-ratelimit-remaining-tokens")
        .and_then(|v| v.parse().ok())
        .expect("remaining tokens");
    let body: Value = r.json().await.expect("json");
    let prompt = body["usage"]["prompt_tokens"].as_f64().expect("usage");
    let completion = body["usage"]["completion_tokens"].as_f64().expect("usage");
    assert_eq!(
        after_prompt,
        400.0 - prompt,
        "the prompt is charged when admitted"
    );
    assert!(
        completion >= 20.0,
        "a long completion to settle ({completion})"
    );
    // The completion was settled when the response ended: the next admission sees it, less
    // what the budget refilled since the first admission (400 a minute).
    let r = call(
        url,
        "/v1/completions",
        Some(FRUGAL),
        Some(json!({
            "model": common::MODEL, "prompt": "a", "max_tokens": 1, "temperature": 0
        })),
    )
    .await;
    assert_eq!(r.status(), 200);
    let refill = admitted.elapsed().as_secs_f64() * 400.0 / 60.0 + 1.0;
    let now: f64 = header(&r, "x-ratelimit-remaining-tokens")
        .and_then(|v| v.parse().ok())
        .expect("remaining tokens");
    assert!(
        now <= after_prompt - completion + refill,
        "{now} > {after_prompt} - {completion} + {refill}"
    );
    // A prompt larger than the whole budget is refused at once, as tokens.
    let long = "word ".repeat(600);
    let r = call(url, "/v1/chat/completions", Some(FRUGAL), Some(chat(&long))).await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.expect("json");
    assert_eq!(common::error_fields(&body).0, "tokens");
}
