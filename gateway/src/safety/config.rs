//! The `[safety]` and `[store]` configuration sections.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cada_core::store::{RedactionConfig, StoreConfig, StoreError, StoreLocation};
use serde::Deserialize;

use super::Mode;
use crate::config::Secret;

/// How the gateway deliberates.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SafetyConfig {
    /// Mode of callers whose key policy names none (`[auth.*.safety]`, see `auth/policy.rs`).
    pub mode: Mode,
    /// `false`: shadow mode for every caller. Requests are deliberated, logged and counted, but
    /// answered as `off` answers them (a key's policy can also turn enforcement off for itself).
    pub enforce: bool,
    /// `finish_reason` of a refused chat completion: `stop` (default, what clients that only
    /// read `content` expect) or `content_filter`.
    pub refusal_finish_reason: RefusalFinish,
    /// Mode per served model name, overriding `mode` (e.g. `trained` for a trained adapter).
    pub model_modes: BTreeMap<String, Mode>,
    /// Directory with `codes.md` and `cases.jsonl`.
    pub policy_dir: PathBuf,
    /// Registry id of the embedding model used for precedent retrieval.
    pub embedding_model: String,
    /// Precedents retrieved per request.
    pub top_k: usize,
    /// Most tokens of reasoning before the verdict is forced.
    pub max_reasoning_tokens: u32,
    /// Whether requests may ask for the reasoning with `include_reasoning`.
    pub allow_reasoning: bool,
    /// A verdict whose probability falls in `[low, high)` is borderline.
    pub confidence_band: [f32; 2],
    /// `adaptive`: requests whose estimated risk is below this are served directly.
    pub adaptive_threshold: f32,
    /// `adaptive`: weight of the model's verdict probe in the risk (the rest is precedent labels).
    pub adaptive_probe_weight: f32,
    /// Answer given for a `refuse` verdict.
    pub refusal_message: String,
    /// `trained` mode: refuse iff the log-odds of the refuse verdict reach this, overriding the
    /// threshold the served adapter was calibrated with (unset: the adapter's, else argmax).
    pub trained_refuse_log_odds: Option<f32>,
}

impl SafetyConfig {
    /// The default mode for requests to `model`.
    pub fn mode_for(&self, model: &str) -> Mode {
        self.model_modes.get(model).copied().unwrap_or(self.mode)
    }
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Adaptive,
            enforce: true,
            refusal_finish_reason: RefusalFinish::Stop,
            model_modes: BTreeMap::new(),
            policy_dir: PathBuf::from("configs/policy"),
            embedding_model: "all-minilm-l6-v2".into(),
            top_k: 4,
            max_reasoning_tokens: 96,
            allow_reasoning: true,
            confidence_band: [0.4, 0.7],
            adaptive_threshold: 0.3,
            adaptive_probe_weight: 0.3,
            refusal_message:
                "I can't help with that. If there is a safe goal behind the question, \
                              I'm glad to help with that instead."
                    .into(),
            trained_refuse_log_odds: None,
        }
    }
}

/// What a refused chat completion says in `finish_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalFinish {
    Stop,
    ContentFilter,
}

/// Where cases, response records and caches live.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Data directory: the SQLite case store (unless `url` names another) and the
    /// precedent-embedding cache go here.
    pub data_dir: PathBuf,
    /// Case store location: a `postgres://` URL for a store that gateway replicas and the
    /// trainer share, or an SQLite path; unset: `<data_dir>/cases.sqlite`. A secret (it may
    /// carry a password): logged with the password hidden.
    pub url: Option<Secret>,
    /// Near-duplicate threshold and retention of response records (`[store.cases]`).
    pub cases: StoreConfig,
    /// What is redacted from stored requests and answers.
    pub redact: RedactionConfig,
    /// Longest a request waits on the store (feedback, admin reads and labels), queueing
    /// included; past it 503 `store_timeout`, so a database gone silent never hangs callers.
    pub call_timeout_secs: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            url: None,
            cases: StoreConfig::default(),
            redact: RedactionConfig::default(),
            call_timeout_secs: cada_core::store::DEFAULT_CALL_TIMEOUT.as_secs(),
        }
    }
}

impl StoreSection {
    /// The case store: `url` when set, else the SQLite file in the data directory.
    pub fn location(&self) -> Result<StoreLocation, StoreError> {
        match &self.url {
            Some(url) if !url.0.trim().is_empty() => StoreLocation::parse(&url.0),
            _ => Ok(StoreLocation::Sqlite(self.data_dir.join("cases.sqlite"))),
        }
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache")
    }
}
