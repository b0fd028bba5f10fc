//! What tests of the store, and of the binaries around it, share: realistic records and cases
//! with chosen embeddings, and throwaway PostgreSQL databases. Built for this crate's tests and,
//! with the `test-util` feature, for other crates' tests.

use postgres::{Client, NoTls};

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
        caller: Some("requester".into()),
    }
}

/// A case seen now (older ones would fall to `pending_max_age_secs`).
pub fn case(response_id: &str, embedding: Vec<f32>, reasons: &[&str]) -> NewCase {
    let mut record = record(response_id, super::codec::now());
    record.embedding = Some(embedding);
    NewCase::from_record(record, reasons.iter().map(|r| (*r).to_owned()).collect())
}

/// The server the tests use; its absence is a failure, not a skip.
pub fn admin_url() -> String {
    std::env::var("CADA_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "CADA_TEST_POSTGRES_URL is not set: run `export CADA_TEST_POSTGRES_URL=$(scripts/test-postgres.sh)` \
             (or scripts/test.sh, which does)"
        )
    })
}

/// A fresh database on the test server, dropped (with its connections) when this goes.
#[derive(Debug)]
pub struct PgDatabase {
    name: String,
    pub url: String,
}

impl Default for PgDatabase {
    fn default() -> Self {
        Self::new()
    }
}

impl PgDatabase {
    pub fn new() -> Self {
        let admin = admin_url();
        let name = format!("cada_t_{}", uuid::Uuid::new_v4().simple());
        let mut client = Client::connect(&admin, NoTls)
            .expect("cannot reach the test PostgreSQL server (CADA_TEST_POSTGRES_URL)");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("the test role may not create databases");
        let (base, query) = admin
            .split_once('?')
            .map_or((admin.as_str(), ""), |(b, q)| (b, q));
        let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
        let url = if query.is_empty() {
            format!("{base}/{name}")
        } else {
            format!("{base}/{name}?{query}")
        };
        Self { name, url }
    }

    /// A client of the database outside the store, for inspecting and interfering.
    pub fn client(&self) -> Client {
        Client::connect(&self.url, NoTls).expect("cannot reach the test database")
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(mut client) = Client::connect(&admin_url(), NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
