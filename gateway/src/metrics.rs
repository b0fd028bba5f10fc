//! Prometheus metrics served on `GET /metrics`, so operators can watch traffic, latency, tokens,
//! engine load and safety decisions. Labels come from fixed sets only (route names, status
//! codes, error codes, enum values): never a raw path, user text, a key or model output.
//!
//! A request is measured by [`RequestMetrics`], created in `server::handle` and current (a
//! task-local, see [`current`]) while its handler runs: the handlers that reach the models mark
//! when they hand the request over ([`model_started`]), and the renderer notes every event the
//! models send back. The request is counted when its response body ends (or is dropped), so a
//! streamed response's duration covers the stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cada_core::policy::Label;
use cada_core::store::FeedbackLabel;
use cada_core::Usage;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::StatusCode;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::safety::deliberate::Out;
use crate::safety::{Decision, Mode, Safety};
use crate::server::{text_response, Body, Response};
use crate::state::{AppState, Served};

/// Content type of the exposition (Prometheus text format 0.0.4).
pub const CONTENT_TYPE_TEXT: &str = prometheus::TEXT_FORMAT;

/// The route a request went to: the `endpoint` label (never the raw path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Models,
    Feedback,
    Admin,
    Health,
    Metrics,
    Other,
}

impl Endpoint {
    pub const ALL: [Endpoint; 8] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Models,
        Endpoint::Feedback,
        Endpoint::Admin,
        Endpoint::Health,
        Endpoint::Metrics,
        Endpoint::Other,
    ];

    /// The route of a request path; anything unknown is `other`.
    pub fn of(path: &str) -> Self {
        match path {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/completions" => Endpoint::Completions,
            "/v1/models" => Endpoint::Models,
            p if p.starts_with("/v1/models/") => Endpoint::Models,
            "/v1/feedback" => Endpoint::Feedback,
            p if p == "/admin" || p.starts_with("/admin/") => Endpoint::Admin,
            "/healthz" | "/readyz" => Endpoint::Health,
            "/metrics" => Endpoint::Metrics,
            _ => Endpoint::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Completions => "completions",
            Endpoint::Models => "models",
            Endpoint::Feedback => "feedback",
            Endpoint::Admin => "admin",
            Endpoint::Health => "health",
            Endpoint::Metrics => "metrics",
            Endpoint::Other => "other",
        }
    }

    /// Whether the route generates tokens (and so has a time to first token).
    fn generates(self) -> bool {
        matches!(self, Endpoint::ChatCompletions | Endpoint::Completions)
    }
}

/// `status` of a request whose client went away before the response started (nginx's code).
pub const CLIENT_CLOSED: u16 = 499;

const TOKEN_KINDS: [&str; 3] = ["prompt", "completion", "reasoning"];
const CACHE_RESULTS: [&str; 2] = ["hit", "miss"];
const RATE_LIMITS: [&str; 2] = ["requests", "tokens"];
const MODES: [Mode; 4] = [Mode::Off, Mode::Cases, Mode::Trained, Mode::Adaptive];
/// Verdicts, plus `none` for requests served without one.
const VERDICTS: [&str; 4] = ["allow", "refuse", "safe_complete", "none"];
/// Reasons `Decision::borderline` gives; anything else is counted as `other`.
const BORDERLINE_REASONS: [&str; 5] = [
    "low_confidence",
    "possible_over_refusal",
    "possible_harmful",
    "verdict_answer_mismatch",
    "other",
];
const FEEDBACK_LABELS: [FeedbackLabel; 3] = [
    FeedbackLabel::OverRefusal,
    FeedbackLabel::Harmful,
    FeedbackLabel::Correct,
];

const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const TTFT_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0,
];
const RATE_BUCKETS: [f64; 14] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0,
];
const OVERHEAD_BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
];

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
    /// Response-cache lookups by `result` (`hit`, `miss`): [`Metrics::cache_hit`] and
    /// [`Metrics::cache_miss`].
    cache: IntCounterVec,
    /// Requests refused by a rate limit, by `limit`: [`Metrics::rate_limited`].
    rate_limited: IntCounterVec,
    safety_decisions: IntCounterVec,
    borderline: IntCounterVec,
    feedback: IntCounterVec,
    store_errors: IntCounter,
    model_info: IntGaugeVec,
    adapter_info: IntGaugeVec,
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

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let m = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(m.clone()))?;
    Ok(m)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let m = IntGauge::new(name, help)?;
    registry.register(Box::new(m.clone()))?;
    Ok(m)
}

fn info(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
) -> prometheus::Result<IntGaugeVec> {
    let m = IntGaugeVec::new(Opts::new(name, help), &[label])?;
    registry.register(Box::new(m.clone()))?;
    Ok(m)
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> prometheus::Result<Histogram> {
    let m = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
    registry.register(Box::new(m.clone()))?;
    Ok(m)
}

impl Metrics {
    /// Creates and registers every metric; the label sets known in advance start at 0.
    pub fn new() -> prometheus::Result<Self> {
        let r = Registry::new();
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "cada_request_duration_seconds",
                "Time from receiving a request to the end of its response body (a streamed response counts until its last event), by endpoint.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["endpoint"],
        )?;
        r.register(Box::new(duration.clone()))?;
        let m = Self {
            requests: counter(
                &r,
                "cada_requests_total",
                "HTTP requests answered, by endpoint (route name) and status code (499: the client left before the response started).",
                &["endpoint", "status"],
            )?,
            duration,
            in_flight: gauge(
                &r,
                "cada_requests_in_flight",
                "Requests being handled now, streamed responses included until their last event.",
            )?,
            errors: counter(
                &r,
                "cada_errors_total",
                "Requests that failed, by the stable error code of the error body (also errors sent inside a stream).",
                &["error_type"],
            )?,
            ttft: histogram(
                &r,
                "cada_time_to_first_token_seconds",
                "Chat and text completions: time from receiving the request to the first reasoning or content text the model produced, streamed or not.",
                &TTFT_BUCKETS,
            )?,
            tokens: counter(
                &r,
                "cada_tokens_total",
                "Tokens of finished completions by kind: prompt (processed), reasoning (deliberation before the verdict), completion (every other generated token: verdict and answer). The kinds do not overlap.",
                &["kind"],
            )?,
            decode_rate: histogram(
                &r,
                "cada_decode_tokens_per_second",
                "Decoding speed of each finished completion: (completion tokens - 1) / time from its first generated text to its end, as seen by the gateway.",
                &RATE_BUCKETS,
            )?,
            queue_depth: gauge(
                &r,
                "cada_engine_queue_depth",
                "Requests waiting for a free engine slot, read at scrape time.",
            )?,
            slots_busy: gauge(
                &r,
                "cada_engine_slots_busy",
                "Engine slots holding a request, read at scrape time.",
            )?,
            slots: gauge(
                &r,
                "cada_engine_slots",
                "Engine slots in total (requests decoded together); 0 until the model is loaded.",
            )?,
            cache: counter(
                &r,
                "cada_cache_requests_total",
                "Response-cache lookups by result (hit or miss).",
                &["result"],
            )?,
            rate_limited: counter(
                &r,
                "cada_rate_limited_total",
                "Requests refused with 429 by a per-key rate limit, by the limit hit (requests or tokens).",
                &["limit"],
            )?,
            safety_decisions: counter(
                &r,
                "cada_safety_decisions_total",
                "Safety decisions of chat requests by mode and verdict (none: served without a verdict).",
                &["mode", "verdict"],
            )?,
            borderline: counter(
                &r,
                "cada_borderline_cases_total",
                "Borderline responses logged as cases for review, by reason (a case may have several).",
                &["reason"],
            )?,
            feedback: counter(
                &r,
                "cada_feedback_total",
                "User feedback stored, by label (over_refusal, harmful, correct).",
                &["label"],
            )?,
            store_errors: {
                let c = IntCounter::new(
                    "cada_case_store_errors_total",
                    "Case-store writes made in the background (response records, logged cases) that failed or were dropped because the store queue was full or closed.",
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
            model_info: info(
                &r,
                "cada_model_info",
                "The served model (name clients address it by); always 1.",
                "model",
            )?,
            adapter_info: info(
                &r,
                "cada_adapter_info",
                "The LoRA adapter version the engine applies (none without one); always 1, only the served one.",
                "adapter",
            )?,
            policy_info: info(
                &r,
                "cada_policy_info",
                "The safety policy version loaded; always 1.",
                "version",
            )?,
            overhead: histogram(
                &r,
                "cada_gateway_overhead_seconds",
                "Gateway time of a request: its duration minus model time (from handing it to the models, retrieval embedding and engine queue included, to the engine's final event); the whole duration for requests that use no model.",
                &OVERHEAD_BUCKETS,
            )?,
            scrape: Mutex::new(()),
            registry: r,
        };
        for kind in TOKEN_KINDS {
            m.tokens.with_label_values(&[kind]);
        }
        for result in CACHE_RESULTS {
            m.cache.with_label_values(&[result]);
        }
        for limit in RATE_LIMITS {
            m.rate_limited.with_label_values(&[limit]);
        }
        for mode in MODES {
            for verdict in VERDICTS {
                m.safety_decisions
                    .with_label_values(&[mode.as_str(), verdict]);
            }
        }
        for reason in BORDERLINE_REASONS {
            m.borderline.with_label_values(&[reason]);
        }
        for label in FEEDBACK_LABELS {
            m.feedback.with_label_values(&[label.as_str()]);
        }
        Ok(m)
    }

    /// Starts measuring a request to `path`: the guard counts it when dropped (see
    /// [`InFlight::respond`]); the shared part is made current for the handler ([`scope`]).
    pub fn begin(self: &Arc<Self>, path: &str) -> (InFlight, Arc<RequestMetrics>) {
        self.in_flight.inc();
        let endpoint = Endpoint::of(path);
        let request = Arc::new(RequestMetrics {
            metrics: Arc::clone(self),
            endpoint,
            started: Instant::now(),
            model_started: AtomicU64::new(0),
            model_finished: AtomicU64::new(0),
            first_token: AtomicU64::new(0),
            error_type: OnceLock::new(),
        });
        let guard = InFlight {
            request: Arc::clone(&request),
            status: None,
        };
        (guard, request)
    }

    pub fn cache_hit(&self) {
        self.cache.with_label_values(&["hit"]).inc();
    }

    pub fn cache_miss(&self) {
        self.cache.with_label_values(&["miss"]).inc();
    }

    /// A request refused by a rate limit; `limit` is `requests` or `tokens` (others count as
    /// `requests`, keeping the label set fixed).
    pub fn rate_limited(&self, limit: &str) {
        let limit = if limit == "tokens" {
            "tokens"
        } else {
            "requests"
        };
        self.rate_limited.with_label_values(&[limit]).inc();
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

    /// A chat request's safety decision (requests without a mode are not counted).
    fn decided(&self, decision: &Decision) {
        if let Some(mode) = decision.mode {
            let verdict = decision.verdict.map_or("none", Label::as_str);
            self.safety_decisions
                .with_label_values(&[mode.as_str(), verdict])
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
                self.set_served(&s.name, s.adapter.as_deref());
            }
            None => {
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

/// Nanoseconds since `since`, plus one so that 0 can mean "not yet".
fn stamp(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

fn unstamp(stamp: u64) -> Option<Duration> {
    (stamp > 0).then(|| Duration::from_nanos(stamp - 1))
}

tokio::task_local! {
    static CURRENT: Arc<RequestMetrics>;
}

/// Runs a request's handler with `request` as the current request's metrics.
pub async fn scope<F: Future>(request: Arc<RequestMetrics>, handler: F) -> F::Output {
    CURRENT.scope(request, handler).await
}

/// The metrics of the request being handled; `None` outside `server::handle`.
pub fn current() -> Option<Arc<RequestMetrics>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Marks the current request as handed to the models (see [`RequestMetrics::model_started`]).
pub fn model_started() {
    let _ = CURRENT.try_with(|r| r.model_started());
}

/// Notes an event of a response in `request`'s metrics, when it has them.
pub fn note(request: Option<&RequestMetrics>, out: Option<&Out>) {
    if let Some(r) = request {
        r.saw(out);
    }
}

/// What one request did, shared by `server::handle`, the handlers and the response renderer.
#[derive(Debug)]
pub struct RequestMetrics {
    metrics: Arc<Metrics>,
    endpoint: Endpoint,
    started: Instant,
    /// When the request was handed to the models (stamp; 0: not yet).
    model_started: AtomicU64,
    /// When the engine's final event arrived (stamp; 0: not yet).
    model_finished: AtomicU64,
    /// When the first generated text arrived (stamp; 0: not yet).
    first_token: AtomicU64,
    error_type: OnceLock<&'static str>,
}

impl RequestMetrics {
    /// The request is being handed to the models (retrieval, then the engine). Model time runs
    /// from the first call until the engine's final event.
    pub fn model_started(&self) {
        let _ = self.model_started.compare_exchange(
            0,
            stamp(self.started),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    fn model_finished(&self) {
        let _ = self.model_finished.compare_exchange(
            0,
            stamp(self.started),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// The response was logged as a borderline case, for these reasons.
    pub fn borderline(&self, reasons: &[String]) {
        self.metrics.borderline(reasons);
    }

    /// The request failed with this error code (the first one counts).
    pub fn error(&self, code: &'static str) {
        let _ = self.error_type.set(code);
    }

    /// Notes an event of the response as it leaves the models.
    pub fn saw(&self, out: Option<&Out>) {
        match out {
            Some(Out::Reasoning(_) | Out::Content(_)) => {
                let now = stamp(self.started);
                let first = self
                    .first_token
                    .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if first && self.endpoint.generates() {
                    self.metrics
                        .ttft
                        .observe(unstamp(now).unwrap_or_default().as_secs_f64());
                }
            }
            Some(Out::Decided(d)) => self.metrics.decided(d),
            Some(Out::Done {
                usage,
                reasoning_tokens,
                ..
            }) => {
                self.model_finished();
                self.finished(*usage, *reasoning_tokens);
            }
            Some(Out::Error(e)) => {
                self.model_finished();
                self.error(e.code);
            }
            None => {
                self.model_finished();
                self.error("internal_error");
            }
        }
    }

    /// Counts the tokens and the decoding speed of a finished completion.
    fn finished(&self, usage: Usage, reasoning_tokens: usize) {
        let m = &self.metrics;
        let reasoning = reasoning_tokens.min(usage.completion_tokens);
        m.tokens
            .with_label_values(&["prompt"])
            .inc_by(usage.prompt_tokens as u64);
        m.tokens
            .with_label_values(&["reasoning"])
            .inc_by(reasoning as u64);
        m.tokens
            .with_label_values(&["completion"])
            .inc_by((usage.completion_tokens - reasoning) as u64);
        let first = unstamp(self.first_token.load(Ordering::Acquire));
        let last = unstamp(self.model_finished.load(Ordering::Acquire));
        if let (Some(first), Some(last)) = (first, last) {
            let secs = last.saturating_sub(first).as_secs_f64();
            if usage.completion_tokens >= 2 && secs > 0.0 {
                m.decode_rate
                    .observe((usage.completion_tokens - 1) as f64 / secs);
            }
        }
    }

    /// Model time so far: from handing the request over to the engine's final event (or now,
    /// if it never came); zero for a request that used no model.
    fn model_time(&self) -> Duration {
        let Some(start) = unstamp(self.model_started.load(Ordering::Acquire)) else {
            return Duration::ZERO;
        };
        let end = unstamp(self.model_finished.load(Ordering::Acquire))
            .unwrap_or_else(|| self.started.elapsed());
        end.saturating_sub(start)
    }
}

/// Counts a request once, when dropped: by `server::handle` if the response never started,
/// else by the response body (see [`InFlight::respond`]) once it has been sent or abandoned.
#[derive(Debug)]
pub struct InFlight {
    request: Arc<RequestMetrics>,
    status: Option<u16>,
}

impl InFlight {
    /// The request failed with this error code.
    pub fn error(&self, code: &'static str) {
        self.request.error(code);
    }

    /// Wraps the response body so the request is counted when the body ends.
    pub fn respond(mut self, resp: Response) -> Response {
        let (parts, body) = resp.into_parts();
        self.status = Some(parts.status.as_u16());
        Response::from_parts(parts, Observed { body, guard: self }.boxed())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let r = &self.request;
        let m = &r.metrics;
        let total = r.started.elapsed();
        let endpoint = r.endpoint.as_str();
        let status = self.status.unwrap_or(CLIENT_CLOSED).to_string();
        m.in_flight.dec();
        m.requests
            .with_label_values(&[endpoint, status.as_str()])
            .inc();
        m.duration
            .with_label_values(&[endpoint])
            .observe(total.as_secs_f64());
        if let Some(code) = r.error_type.get() {
            m.errors.with_label_values(&[code]).inc();
        }
        m.overhead
            .observe(total.saturating_sub(r.model_time()).as_secs_f64());
    }
}

/// A response body that counts its request when it is dropped; frames pass through unchanged.
struct Observed {
    body: Body,
    guard: InFlight,
}

impl hyper::body::Body for Observed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;
    use cada_core::FinishReason;
    use hyper::body::Body as _;

    const NAMES: [&str; 20] = [
        "cada_requests_total",
        "cada_request_duration_seconds",
        "cada_requests_in_flight",
        "cada_errors_total",
        "cada_time_to_first_token_seconds",
        "cada_tokens_total",
        "cada_decode_tokens_per_second",
        "cada_engine_queue_depth",
        "cada_engine_slots_busy",
        "cada_engine_slots",
        "cada_cache_requests_total",
        "cada_rate_limited_total",
        "cada_safety_decisions_total",
        "cada_borderline_cases_total",
        "cada_feedback_total",
        "cada_case_store_errors_total",
        "cada_model_info",
        "cada_adapter_info",
        "cada_policy_info",
        "cada_gateway_overhead_seconds",
    ];

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new().expect("metrics"))
    }

    /// A chat request through its whole life: decision, text, end.
    fn serve_chat(m: &Arc<Metrics>) {
        let (guard, r) = m.begin("/v1/chat/completions");
        r.model_started();
        let decision = Decision {
            mode: Some(Mode::Trained),
            verdict: Some(Label::Allow),
            ..Decision::default()
        };
        r.saw(Some(&Out::Reasoning("thinking".into())));
        r.saw(Some(&Out::Decided(Box::new(decision))));
        std::thread::sleep(Duration::from_millis(2));
        r.saw(Some(&Out::Content("hello".into())));
        r.saw(Some(&Out::Done {
            finish: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 7,
            },
            reasoning_tokens: 3,
        }));
        drop(guard.respond(text_response(StatusCode::OK, String::new())));
    }

    #[test]
    fn render_has_every_metric_with_its_help() {
        let m = metrics();
        serve_chat(&m);
        let (guard, _) = m.begin("/v1/models/nope");
        guard.error(ApiError::model_not_found("x").code);
        drop(guard.respond(text_response(StatusCode::NOT_FOUND, String::new())));
        m.set_served("smollm", None);
        m.policy_info.with_label_values(&["v1"]).set(1);
        m.cache_hit();
        m.rate_limited("tokens");
        m.feedback(FeedbackLabel::Harmful);
        m.borderline(&["low_confidence".into()]);
        let text = m.render();
        for name in NAMES {
            let help = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("# HELP {name} ")))
                .unwrap_or_else(|| panic!("no HELP for {name}:\n{text}"));
            assert!(help.len() > 20, "{name}: {help}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
        for line in text.lines().filter(|l| l.starts_with("# HELP")) {
            assert!(line.split_whitespace().count() > 3, "empty help: {line}");
        }
        for want in [
            r#"cada_requests_total{endpoint="chat_completions",status="200"} 1"#,
            r#"cada_requests_total{endpoint="models",status="404"} 1"#,
            r#"cada_errors_total{error_type="model_not_found"} 1"#,
            r#"cada_tokens_total{kind="prompt"} 10"#,
            r#"cada_tokens_total{kind="reasoning"} 3"#,
            r#"cada_tokens_total{kind="completion"} 4"#,
            r#"cada_safety_decisions_total{mode="trained",verdict="allow"} 1"#,
            r#"cada_safety_decisions_total{mode="off",verdict="none"} 0"#,
            r#"cada_cache_requests_total{result="hit"} 1"#,
            r#"cada_cache_requests_total{result="miss"} 0"#,
            r#"cada_rate_limited_total{limit="tokens"} 1"#,
            r#"cada_rate_limited_total{limit="requests"} 0"#,
            r#"cada_feedback_total{label="harmful"} 1"#,
            r#"cada_borderline_cases_total{reason="low_confidence"} 1"#,
            r#"cada_adapter_info{adapter="none"} 1"#,
            "cada_requests_in_flight 0",
            "cada_time_to_first_token_seconds_count 1",
            "cada_decode_tokens_per_second_count 1",
        ] {
            assert!(text.contains(want), "missing {want}:\n{text}");
        }
    }

    #[test]
    fn labels_stay_within_fixed_sets() {
        let names: Vec<&str> = Endpoint::ALL.iter().map(|e| e.as_str()).collect();
        for path in [
            "/v1/chat/completions",
            "/v1/models/secret-model-name",
            "/admin/cases/123",
            "/readyz",
            "/metrics",
            "/v1/chat/completions/extra",
            "/etc/passwd",
            "/",
        ] {
            assert!(names.contains(&Endpoint::of(path).as_str()), "{path}");
        }
        assert_eq!(Endpoint::of("/v1/models/x"), Endpoint::Models);
        assert_eq!(Endpoint::of("/administrator"), Endpoint::Other);
        let m = metrics();
        for path in ["/user-typed-path?q=secret", "/v1/models/secret-model-name"] {
            let (guard, _) = m.begin(path);
            drop(guard.respond(text_response(StatusCode::NOT_FOUND, String::new())));
        }
        m.borderline(&["something the request said".into()]);
        m.rate_limited("anything");
        let text = m.render();
        assert!(!text.contains("secret"), "{text}");
        assert!(!text.contains("something the request said"), "{text}");
        assert!(text.contains(r#"cada_borderline_cases_total{reason="other"} 1"#));
        assert!(text.contains(r#"cada_rate_limited_total{limit="requests"} 1"#));
        assert!(text.contains(r#"cada_requests_total{endpoint="other",status="404"} 1"#));
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

    #[test]
    fn overhead_leaves_out_model_time() {
        let m = metrics();
        let (guard, r) = m.begin("/v1/completions");
        r.model_started();
        std::thread::sleep(Duration::from_millis(40));
        r.saw(Some(&Out::Error(ApiError::internal("boom"))));
        drop(guard.respond(text_response(StatusCode::OK, String::new())));
        assert!(
            m.duration
                .with_label_values(&["completions"])
                .get_sample_sum()
                >= 0.04
        );
        assert!(
            m.overhead.get_sample_sum() < 0.02,
            "{}",
            m.overhead.get_sample_sum()
        );
        assert_eq!(m.errors.with_label_values(&["internal_error"]).get(), 1);
        // Without a model, the whole duration is overhead.
        let (guard, _) = m.begin("/healthz");
        std::thread::sleep(Duration::from_millis(5));
        drop(guard);
        assert!(m.overhead.get_sample_sum() >= 0.005);
        assert_eq!(
            m.requests.with_label_values(&["health", "499"]).get(),
            1,
            "a request dropped before its response counts as 499"
        );
    }

    #[test]
    fn a_request_counts_when_its_body_ends_not_before() {
        let m = metrics();
        let (guard, _) = m.begin("/v1/chat/completions");
        let resp = guard.respond(text_response(StatusCode::OK, "hi".into()));
        assert_eq!(m.in_flight.get(), 1);
        assert_eq!(
            m.requests
                .with_label_values(&["chat_completions", "200"])
                .get(),
            0
        );
        assert_eq!(resp.body().size_hint().exact(), Some(2), "length kept");
        drop(resp);
        assert_eq!(m.in_flight.get(), 0);
        assert_eq!(
            m.requests
                .with_label_values(&["chat_completions", "200"])
                .get(),
            1
        );
    }
}
