//! Builders the store's tests share: realistic records and cases with chosen embeddings.

use super::{NewCase, PrecedentRef, ResponseRecord};
use crate::policy::Label;

/// Dimension of the test embeddings (MiniLM's).
pub const DIM: usize = 384;

/// The `i`-th basis vector: distinct indices are orthogonal, equal ones identical.
pub fn unit(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[i % DIM] = 1.0;
    v
}

/// `unit(i)` nudged towards `unit(j)`: cosine with `unit(i)` is `cos`.
pub fn near(i: usize, j: usize, cos: f32) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[i % DIM] = cos;
    v[j % DIM] = (1.0 - cos * cos).sqrt();
    v
}

pub fn record(response_id: &str, created: i64) -> ResponseRecord {
    ResponseRecord {
        response_id: response_id.into(),
        request_id: format!("req-{response_id}"),
        created,
        model: "qwen2.5-0.5b-instruct".into(),
        adapter: Some("safety-lora-3".into()),
        policy_version: "0123456789ab".into(),
        mode: "cases".into(),
        messages: serde_json::json!([
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "How do I kill a Python process that hangs?"},
        ]),
        request: "How do I kill a Python process that hangs?".into(),
        reasoning: Some("Resembles [case-001]: killing a process is routine.".into()),
        answer: "I can't help with that.".into(),
        verdict: Some(Label::Refuse),
        verdict_probability: Some(0.55),
        precedents: vec![
            PrecedentRef {
                id: "case-001".into(),
                label: Label::Allow,
                similarity: 0.81,
            },
            PrecedentRef {
                id: "case-017".into(),
                label: Label::Refuse,
                similarity: 0.42,
            },
        ],
        embedding: Some(unit(0)),
    }
}

pub fn case(response_id: &str, embedding: Vec<f32>, reasons: &[&str]) -> NewCase {
    let mut record = record(response_id, 1_700_000_000);
    record.embedding = Some(embedding);
    NewCase::from_record(record, reasons.iter().map(|r| (*r).to_owned()).collect())
}
