//! Prometheus metrics served on `GET /metrics`, so operators can watch traffic, latency, tokens,
//! engine load and safety decisions. Labels come from fixed sets only (route names, status
//! codes, error codes, enum values): never a raw path, user text, a key or model output.
//!
//! A request is measured by [`RequestMetrics`], created in `server::handle` and current (a
//! task-local, see [`current`]) while its handler runs: the handlers that reach the models mark
//! when they hand the request over ([`model_started`]), and the renderer notes every event the
//! models send back. The request is counted when its response body ends (or is dropped), so a
//! streamed response's duration covers the stream.
//!
//! The metrics themselves and their help texts are defined in `families`, the fixed label sets
//! in `labels`, a request's measurement in `request` and its end in `in_flight`.

mod families;
mod in_flight;
mod labels;
mod request;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use cada_core::policy::Label;
use cada_core::store::FeedbackLabel;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::StatusCode;
use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
    TextEncoder,
};

pub use in_flight::InFlight;
pub use labels::{Endpoint, CLIENT_CLOSED};
pub use request::{current, model_started, note, scope, served_from_cache, RequestMetrics};

use crate::safety::{Decision, Safety};
use crate::server::{text_response, Response};
use crate::state::{AppState, Served};
use labels::BORDERLINE_REASONS;

/// Content type of the exposition (Prometheus text format 0.0.4).
pub const CONTENT_TYPE_TEXT: &str = prometheus::TEXT_FORMAT;

/// Every metric of the gateway, in a registry of its own (not the process-wide default).
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
    errors: IntCounterVec,
    ttft: Histogram,
    tokens: IntCounterVec,
    decode_rate: Histogram,
    queue_depth: IntGauge,
    slots_busy: IntGauge,
    slots: IntGauge,
    /// Whether the served engine serves, read at scrape time.
    engine_up: IntGauge,
    /// Engine failures by `reason`: [`Metrics::engine_failed`].
    engine_failures: IntCounterVec,
    /// Response-cache lookups by `result` (`hit`, `miss`): [`Metrics::cache_hit`] and
    /// [`Metrics::cache_miss`].
    cache: IntCounterVec,
    /// Entries and bytes in the response cache, read at scrape time.
    cache_entries: IntGauge,
    cache_bytes: IntGauge,
    /// Requests refused by a rate limit, by `limit`: [`Metrics::rate_limited`].
    rate_limited: IntCounterVec,
    safety_decisions: IntCounterVec,
    borderline: IntCounterVec,
    feedback: IntCounterVec,
    store_errors: IntCounter,
    /// New cases refused at `pending_max`, from the store's counter at scrape time.
    cases_full: IntCounter,
    model_info: IntGaugeVec,
    adapter_info: IntGaugeVec,
    adapter_refused: IntCounterVec,
    connections_refused: IntCounter,
    adapter_fallback: IntGauge,
    policy_info: IntGaugeVec,
    overhead: Histogram,
    /// One scrape at a time, so the info gauges are never seen half reset.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn cache_hit(&self) {
        self.cache.with_label_values(&["hit"]).inc();
    }

    pub fn cache_miss(&self) {
        self.cache.with_label_values(&["miss"]).inc();
    }

    /// A request refused by a rate limit; `limit` is `requests` or `tokens` (others count as
    /// `requests`, keeping the label set fixed).
    pub fn rate_limited(&self, limit: &str) {
        let limit = match limit {
            "tokens" => "tokens",
            "feedback" => "feedback",
            _ => "requests",
        };
        self.rate_limited.with_label_values(&[limit]).inc();
    }

    /// An engine failure, counted once when the gateway notices it.
    pub fn engine_failed(&self, kind: cada_core::FailureKind) {
        self.engine_failures
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    /// An adapter version refused, by a reason of `labels::ADAPTER_REFUSALS`.
    pub fn adapter_refused(&self, reason: &str) {
        self.adapter_refused.with_label_values(&[reason]).inc();
    }

    /// Whether what is served is a fallback for a refused adapter.
    pub fn set_adapter_fallback(&self, fallback: bool) {
        self.adapter_fallback.set(i64::from(fallback));
    }

    /// A connection closed at accept because `limits.max_connections` were open.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// A stored feedback.
    pub fn feedback(&self, label: FeedbackLabel) {
        self.feedback.with_label_values(&[label.as_str()]).inc();
    }

    /// A response logged as a borderline case, with its reasons.
    pub fn borderline(&self, reasons: &[String]) {
        for reason in reasons {
            let reason = BORDERLINE_REASONS
                .iter()
                .find(|r| **r == reason.as_str())
                .copied()
                .unwrap_or("other");
            self.borderline.with_label_values(&[reason]).inc();
        }
    }

    /// A request's safety decision (requests without a mode are not counted).
    fn decided(&self, decision: &Decision) {
        if let Some(mode) = decision.mode {
            let verdict = decision.verdict.map_or("none", Label::as_str);
            self.safety_decisions
                .with_label_values(&[mode.as_str(), verdict, decision.enforcement()])
                .inc();
        }
    }

    /// Sets the info gauges to what is served; an old adapter's series disappears.
    pub fn set_served(&self, model: &str, adapter: Option<&str>) {
        self.model_info.reset();
        self.model_info.with_label_values(&[model]).set(1);
        self.adapter_info.reset();
        self.adapter_info
            .with_label_values(&[adapter.unwrap_or("none")])
            .set(1);
    }

    /// Reads the scrape-time values: engine load, what is served, store errors.
    fn refresh(&self, served: Option<&Served>, safety: Option<&Safety>) {
        match served {
            Some(s) => {
                let stats = s.engine.stats();
                self.queue_depth
                    .set(gauge_value(stats.queued.load(Ordering::Relaxed)));
                self.slots_busy
                    .set(gauge_value(stats.active.load(Ordering::Relaxed)));
                self.slots.set(gauge_value(s.engine.config().n_slots));
                self.engine_up.set(i64::from(s.engine.failure().is_none()));
                self.set_served(&s.name, s.adapter.as_deref());
            }
            None => {
                self.engine_up.set(0);
                self.queue_depth.set(0);
                self.slots_busy.set(0);
                self.slots.set(0);
            }
        }
        if let Some(safety) = safety {
            self.policy_info.reset();
            self.policy_info
                .with_label_values(&[safety.policy.version.as_str()])
                .set(1);
            let stats = safety.store.stats();
            let failed =
                stats.errors.load(Ordering::Relaxed) + stats.dropped.load(Ordering::Relaxed);
            let seen = self.store_errors.get();
            if failed > seen {
                self.store_errors.inc_by(failed - seen);
            }
            let full = stats.full.load(Ordering::Relaxed);
            let seen = self.cases_full.get();
            if full > seen {
                self.cases_full.inc_by(full - seen);
            }
        }
    }

    /// The exposition in Prometheus' text format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot encode the metrics");
                String::new()
            })
    }

    /// `GET /metrics`: refreshes the scrape-time values and renders everything.
    pub fn scrape(&self, state: &AppState) -> Response {
        let text = {
            let _one = self
                .scrape
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.refresh(state.served().as_deref(), state.safety().map(Arc::as_ref));
            let (entries, bytes) = state.cache.as_ref().map_or((0, 0), |c| c.size());
            self.cache_entries
                .set(i64::try_from(entries).unwrap_or(i64::MAX));
            self.cache_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            self.render()
        };
        let mut resp = text_response(StatusCode::OK, text);
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_TEXT));
        resp
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh set of metrics, for the tests of every part of this module.
    pub(super) fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new().expect("metrics"))
    }

    #[test]
    fn only_the_served_adapter_has_an_info_series() {
        let m = metrics();
        m.set_served("smollm", Some("v1"));
        m.set_served("smollm", Some("v2"));
        let text = m.render();
        assert!(
            text.contains(r#"cada_adapter_info{adapter="v2"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"adapter="v1""#), "{text}");
        assert_eq!(text.matches("cada_model_info{").count(), 1);
    }
}
