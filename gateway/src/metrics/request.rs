//! The measurement of one request: [`RequestMetrics`], current (task-local) while its handler
//! runs, marks when the request reaches the models and notes every event they send back.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cada_core::Usage;

use super::{Endpoint, InFlight, Metrics};
use crate::events::Out;

impl Metrics {
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
            cached: AtomicBool::new(false),
            error_type: OnceLock::new(),
        });
        let guard = InFlight {
            request: Arc::clone(&request),
            status: None,
        };
        (guard, request)
    }
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

/// Marks the current request as answered from the response cache: its events are replayed, so
/// they count as decisions served but not as model tokens, first tokens or decoding speed.
pub fn served_from_cache() {
    let _ = CURRENT.try_with(|r| r.cached.store(true, Ordering::Release));
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
    pub(super) metrics: Arc<Metrics>,
    pub(super) endpoint: Endpoint,
    pub(super) started: Instant,
    /// When the request was handed to the models (stamp; 0: not yet).
    model_started: AtomicU64,
    /// When the engine's final event arrived (stamp; 0: not yet).
    model_finished: AtomicU64,
    /// When the first generated text arrived (stamp; 0: not yet).
    first_token: AtomicU64,
    /// Answered from the response cache (no model work to count).
    cached: AtomicBool,
    pub(super) error_type: OnceLock<&'static str>,
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
                if first && self.endpoint.generates() && !self.cached.load(Ordering::Acquire) {
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
        if self.cached.load(Ordering::Acquire) {
            return;
        }
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

    /// Gateway and model time so far, for the `server-timing` header.
    pub fn timing(&self) -> (Duration, Duration) {
        let model = self.model_time();
        (self.started.elapsed().saturating_sub(model), model)
    }

    /// Model time so far: from handing the request over to the engine's final event (or now,
    /// if it never came); zero for a request that used no model.
    pub(super) fn model_time(&self) -> Duration {
        let Some(start) = unstamp(self.model_started.load(Ordering::Acquire)) else {
            return Duration::ZERO;
        };
        let end = unstamp(self.model_finished.load(Ordering::Acquire))
            .unwrap_or_else(|| self.started.elapsed());
        end.saturating_sub(start)
    }
}

#[cfg(test)]
mod tests {
    use hyper::StatusCode;

    use super::*;
    use crate::error::ApiError;
    use crate::metrics::tests::metrics;
    use crate::server::text_response;

    #[tokio::test]
    async fn a_cached_reply_counts_no_model_tokens() {
        let m = metrics();
        let (guard, r) = m.begin("/v1/chat/completions");
        scope(Arc::clone(&r), async { served_from_cache() }).await;
        r.saw(Some(&Out::Content("hello".into())));
        r.saw(Some(&Out::Done {
            finish: cada_core::FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 2,
            },
            reasoning_tokens: 0,
        }));
        drop(guard.respond(text_response(StatusCode::OK, String::new())));
        assert_eq!(m.tokens.with_label_values(&["prompt"]).get(), 0);
        assert_eq!(m.ttft.get_sample_count(), 0);
        assert_eq!(m.decode_rate.get_sample_count(), 0);
        assert_eq!(
            m.requests
                .with_label_values(&["chat_completions", "200"])
                .get(),
            1
        );
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
}
