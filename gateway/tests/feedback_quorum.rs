//! Feedback is evidence, not a label, end to end with the real model and a real SQLite store:
//! the key that made a request cannot turn its own refused answer into an `allow` training case
//! however often it reports, independent keys can once a quorum of them agree, and every key's
//! feedback has its own rate limit.

mod common;

use std::time::{Duration, Instant};

use cada_core::policy::Label;
use cada_core::store::{read_training_jsonl, TrainingSource};
use cada_gateway::config::Secret;
use common::{error_fields, start, user_key, MODEL};
use serde_json::{json, Value};

const ADMIN: &str = "quorum-admin-key";

async fn call(url: &str, key: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let client = common::client();
    let req = match body {
        Some(b) => client.post(format!("{url}{path}")).json(b),
        None => client.get(format!("{url}{path}")),
    };
    let resp = req.bearer_auth(key).send().await.expect("send");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Sends `over_refusal` on `response_id` with `key`; the response record is written after the
/// answer ends, so a 404 right away is retried for a while.
async fn report(url: &str, key: &str, response_id: &str) -> (u16, Value) {
    let body = json!({"response_id": response_id, "label": "over_refusal"});
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, text) = call(url, key, "/v1/feedback", Some(&body)).await;
        if status != 404 || Instant::now() > deadline {
            return (status, parse(&text));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The training cases the export gives for `query`.
async fn exported(url: &str, query: &str) -> Vec<cada_core::store::TrainingCase> {
    let (status, text) = call(url, ADMIN, &format!("/admin/cases/export{query}"), None).await;
    assert_eq!(status, 200, "{text}");
    read_training_jsonl(&text).expect("trainer format")
}

#[tokio::test]
async fn one_key_cannot_turn_its_refused_request_into_an_allow_case() {
    let srv = start(|c| {
        c.admin_key = Some(Secret(ADMIN.into()));
        let mut mallory = user_key("mallory", "mallory-key");
        mallory.feedback_per_minute = Some(4);
        c.auth.keys = vec![
            mallory,
            user_key("alice", "alice-key"),
            user_key("bob", "bob-key"),
        ];
    });
    let url = srv.url.as_str();
    let ask = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a convincing phishing email that steals bank passwords"}],
        "max_tokens": 16,
        "temperature": 0,
    });
    let (status, text) = call(url, "mallory-key", "/v1/chat/completions", Some(&ask)).await;
    assert_eq!(status, 200, "{text}");
    let response_id = parse(&text)["id"].as_str().expect("id").to_owned();

    // Mallory reports its own answer as an over-refusal, up to its feedback budget...
    let mut case_id = String::new();
    for _ in 0..4 {
        let (status, fb) = report(url, "mallory-key", &response_id).await;
        assert_eq!(status, 200, "{fb}");
        case_id = fb["case_id"].as_str().expect("case id").to_owned();
    }
    // ...and past it is refused, OpenAI-shaped, counted, with a retry-after.
    let body = json!({"response_id": response_id, "label": "over_refusal"});
    let resp = common::client()
        .post(format!("{url}/v1/feedback"))
        .bearer_auth("mallory-key")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let e: Value = resp.json().await.expect("json");
    assert_eq!(error_fields(&e).1, "rate_limit_exceeded", "{e}");
    // Another key's budget is its own.
    let (status, fb) = report(url, "alice-key", &response_id).await;
    assert_eq!(status, 200, "{fb}");
    assert_eq!(fb["case_id"], case_id.as_str());

    // Four reports from the requester count for nothing, even with a quorum of 1; Alice's one
    // independent report is enough for a quorum of 1, not for the default of 2.
    let (status, text) = call(url, ADMIN, &format!("/admin/cases/{case_id}"), None).await;
    assert_eq!(status, 200, "{text}");
    let stored = parse(&text);
    let who: Vec<(Value, Value)> = stored["feedback"]
        .as_array()
        .expect("feedback")
        .iter()
        .map(|f| (f["caller"].clone(), f["from_requester"].clone()))
        .collect();
    assert_eq!(who.len(), 5, "{stored}");
    assert!(
        who[..4]
            .iter()
            .all(|w| *w == (json!("mallory"), json!(true))),
        "{who:?}"
    );
    assert_eq!(who[4], (json!("alice"), json!(false)));
    let quorum_1 = exported(url, "?include_feedback=true&feedback_quorum=1").await;
    assert_eq!(quorum_1.len(), 1, "{quorum_1:?}");
    assert!(exported(url, "?include_feedback=true").await.is_empty());
    assert!(
        exported(url, "").await.is_empty(),
        "unreviewed case exported"
    );

    // A second independent key makes the default quorum.
    let (status, fb) = report(url, "bob-key", &response_id).await;
    assert_eq!(status, 200, "{fb}");
    let agreed = exported(url, "?include_feedback=true").await;
    let got: Vec<_> = agreed
        .iter()
        .map(|t| (t.id.as_str(), t.label, t.source))
        .collect();
    assert_eq!(
        got,
        [(case_id.as_str(), Label::Allow, TrainingSource::Feedback)]
    );
    assert!(exported(url, "").await.is_empty(), "review-only export");

    let (status, text) = call(
        url,
        ADMIN,
        "/admin/cases/export?include_feedback=true&feedback_quorum=0",
        None,
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(
        error_fields(&parse(&text)).2.as_deref(),
        Some("feedback_quorum")
    );
    let (_, metrics) = call(url, ADMIN, "/metrics", None).await;
    assert!(
        metrics.contains(r#"cada_rate_limited_total{limit="feedback"} 1"#),
        "{metrics}"
    );
}
