//! Per-key safety policy over HTTP with the real model: a `user` key cannot get an undeliberated
//! answer through `safety_mode` or `/v1/completions`; keys whose policy allows it can; refusals
//! arrive in `message.refusal` (and `delta.refusal`); a shadow key's answers are `off`'s while
//! its verdicts are reported and counted apart.
//!
//! The server runs `trained` mode on the base model with a refuse threshold no verdict can miss
//! (`trained_refuse_log_odds = -1000`): every deliberated request is refused, so each path's
//! outcome is known without depending on what the 135M model concludes.

mod common;

use cada_gateway::auth::{Completions, KeyConfig, SafetyPolicyConfig};
use cada_gateway::config::{Mode, Secret};
use serde_json::{json, Value};

const USER: &str = "policy-user-key";
const ADMIN: &str = "policy-admin-key";
const LOWER: &str = "policy-may-lower-key";
const SHADOW: &str = "policy-shadow-key";
const NO_RAW: &str = "policy-no-completions-key";
const REFUSAL: &str = "Refused by policy.";
const PROMPT: &str = "Explain how to whittle a small wooden spoon.";

fn key(name: &str, secret: &str, safety: SafetyPolicyConfig) -> KeyConfig {
    KeyConfig {
        safety,
        ..common::user_key(name, secret)
    }
}

fn server() -> &'static str {
    static SERVER: std::sync::OnceLock<common::TestServer> = std::sync::OnceLock::new();
    &SERVER
        .get_or_init(|| {
            common::start(|c| {
                c.safety.mode = Mode::Trained;
                c.safety.trained_refuse_log_odds = Some(-1000.0);
                c.safety.max_reasoning_tokens = 8;
                c.safety.refusal_message = REFUSAL.into();
                c.cache.enabled = false;
                c.api_key = Some(Secret(USER.into()));
                c.admin_key = Some(Secret(ADMIN.into()));
                let lower = SafetyPolicyConfig {
                    allowed_modes: Some(vec![Mode::Off]),
                    ..SafetyPolicyConfig::default()
                };
                let shadow = SafetyPolicyConfig {
                    enforce: Some(false),
                    ..SafetyPolicyConfig::default()
                };
                let no_raw = SafetyPolicyConfig {
                    completions: Some(Completions::Disabled),
                    ..SafetyPolicyConfig::default()
                };
                c.auth.keys.push(key("lower", LOWER, lower));
                c.auth.keys.push(key("shadow", SHADOW, shadow));
                c.auth.keys.push(key("no-raw", NO_RAW, no_raw));
            })
        })
        .url
}

async fn call(path: &str, key: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = common::client()
        .post(format!("{}{path}", server()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.expect("json"))
}

fn chat(extra: Value) -> Value {
    let mut body = json!({
        "model": common::MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 12,
        "temperature": 0,
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        body[k] = v;
    }
    body
}

fn header<'h>(h: &'h reqwest::header::HeaderMap, name: &str) -> &'h str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn a_user_key_cannot_choose_a_lower_mode() {
    for mode in ["off", "cases", "adaptive"] {
        let (status, _, body) = call(
            "/v1/chat/completions",
            USER,
            &chat(json!({"safety_mode": mode})),
        )
        .await;
        assert_eq!(status, 403, "{mode}: {body}");
        let (kind, code, param) = common::error_fields(&body);
        assert_eq!(
            (kind.as_str(), code.as_str(), param.as_deref()),
            (
                "invalid_request_error",
                "insufficient_permissions",
                Some("safety_mode")
            ),
            "{body}"
        );
    }
    // Naming its own mode is not a change.
    let (status, headers, body) = call(
        "/v1/chat/completions",
        USER,
        &chat(json!({"safety_mode": "trained"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-cada-safety-mode"), "trained");
    // The same key is refused on raw completions too.
    let (status, _, body) = call(
        "/v1/completions",
        USER,
        &json!({"model": common::MODEL, "prompt": PROMPT, "max_tokens": 12, "safety_mode": "off"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn refusals_arrive_in_the_refusal_field_and_content() {
    let (status, headers, body) = call("/v1/chat/completions", USER, &chat(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let message = &body["choices"][0]["message"];
    assert_eq!(message["refusal"], REFUSAL, "{body}");
    assert_eq!(message["content"], REFUSAL, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["cada"]["verdict"], "refuse");
    assert_eq!(body["cada"]["enforced"], true);
    assert_eq!(header(&headers, "x-cada-enforcement"), "enforce");

    let resp = common::client()
        .post(format!("{}/v1/chat/completions", server()))
        .bearer_auth(USER)
        .json(&chat(json!({"stream": true})))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    let (mut refusal, mut content) = (String::new(), String::new());
    for payload in common::sse_payloads(&text) {
        if payload == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(&payload).expect("chunk");
        let delta = &chunk["choices"][0]["delta"];
        refusal.push_str(delta["refusal"].as_str().unwrap_or(""));
        content.push_str(delta["content"].as_str().unwrap_or(""));
    }
    assert_eq!((refusal.as_str(), content.as_str()), (REFUSAL, REFUSAL));
}

#[tokio::test]
async fn raw_completions_are_guarded_or_disabled() {
    let body =
        json!({"model": common::MODEL, "prompt": PROMPT, "max_tokens": 12, "temperature": 0});
    let (status, headers, refused) = call("/v1/completions", USER, &body).await;
    assert_eq!(status, 200, "{refused}");
    assert_eq!(refused["choices"][0]["text"], REFUSAL, "{refused}");
    assert_eq!(refused["cada"]["verdict"], "refuse");
    assert_eq!(header(&headers, "x-cada-verdict"), "refuse");
    // An admin may serve it raw; the continuation is not the refusal.
    let (status, _, raw) = call(
        "/v1/completions",
        ADMIN,
        &json!({"model": common::MODEL, "prompt": PROMPT, "max_tokens": 12, "temperature": 0, "safety_mode": "off"}),
    )
    .await;
    assert_eq!(status, 200, "{raw}");
    let text = raw["choices"][0]["text"].as_str().expect("text");
    assert!(!text.is_empty() && text != REFUSAL, "{raw}");
    let (status, _, err) = call("/v1/completions", NO_RAW, &body).await;
    assert_eq!(status, 403, "{err}");
    assert_eq!(common::error_fields(&err).1, "insufficient_permissions");
}

#[tokio::test]
async fn keys_allowed_to_lower_their_mode_get_the_plain_answer() {
    let (status, h_admin, admin) = call(
        "/v1/chat/completions",
        ADMIN,
        &chat(json!({"safety_mode": "off"})),
    )
    .await;
    assert_eq!(status, 200, "{admin}");
    assert_eq!(header(&h_admin, "x-cada-safety-mode"), "off");
    let (status, _, lower) = call(
        "/v1/chat/completions",
        LOWER,
        &chat(json!({"safety_mode": "off"})),
    )
    .await;
    assert_eq!(status, 200, "{lower}");
    let answer = &admin["choices"][0]["message"]["content"];
    assert!(answer
        .as_str()
        .is_some_and(|a| !a.is_empty() && a != REFUSAL));
    assert_eq!(&lower["choices"][0]["message"]["content"], answer);
    assert!(admin["choices"][0]["message"]["refusal"].is_null());
    // The lowering key may not pick a mode its policy does not list.
    let (status, _, _) = call(
        "/v1/chat/completions",
        LOWER,
        &chat(json!({"safety_mode": "cases"})),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn shadow_keys_answer_as_off_and_are_counted_apart() {
    let (_, _, plain) = call(
        "/v1/chat/completions",
        ADMIN,
        &chat(json!({"safety_mode": "off"})),
    )
    .await;
    let (status, headers, shadow) = call("/v1/chat/completions", SHADOW, &chat(json!({}))).await;
    assert_eq!(status, 200, "{shadow}");
    assert_eq!(
        shadow["choices"][0]["message"]["content"], plain["choices"][0]["message"]["content"],
        "a shadow answer is the one `off` gives"
    );
    assert!(shadow["choices"][0]["message"]["refusal"].is_null());
    assert_eq!(
        shadow["cada"]["verdict"], "refuse",
        "the verdict is still reported"
    );
    assert_eq!(shadow["cada"]["enforced"], false);
    assert_eq!(header(&headers, "x-cada-verdict"), "refuse");
    assert_eq!(header(&headers, "x-cada-enforcement"), "shadow");
    let metrics = common::get(server(), "/metrics")
        .await
        .text()
        .await
        .expect("metrics");
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("cada_safety_decisions_total{")
                && l.contains(r#"enforcement="shadow""#)
                && l.contains(r#"mode="trained""#)
                && l.contains(r#"verdict="refuse""#)
        })
        .expect("shadow series");
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{line}");
}
