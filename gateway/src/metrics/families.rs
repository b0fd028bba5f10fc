//! The metric families of the gateway: names, help texts, label names and histogram buckets,
//! registered by [`Metrics::new`] with every known label set starting at 0.

use std::sync::Mutex;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use super::labels::{
    ADAPTER_REFUSALS, BORDERLINE_REASONS, CACHE_RESULTS, FEEDBACK_LABELS, MODES, RATE_LIMITS,
    TOKEN_KINDS, VERDICTS,
};
use super::Metrics;

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

/// A counter without labels.
fn total(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let m = IntCounter::new(name, help)?;
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
            engine_up: gauge(
                &r,
                "cada_engine_up",
                "1 while the engine serves; 0 while the model loads and once the engine has failed, read at scrape time.",
            )?,
            engine_failures: counter(
                &r,
                "cada_engine_failures_total",
                "Engine failures by reason: panic (the engine thread panicked), abort (llama.cpp aborted), stall (one engine step ran past engine.stall_secs). The gateway exits engine.exit_after_failure_secs later.",
                &["reason"],
            )?,
            cache: counter(
                &r,
                "cada_cache_requests_total",
                "Response-cache lookups of deterministic requests by result (hit or miss); requests that cannot be cached are not looked up.",
                &["result"],
            )?,
            cache_entries: gauge(
                &r,
                "cada_cache_entries",
                "Responses held by the response cache, read at scrape time.",
            )?,
            cache_bytes: gauge(
                &r,
                "cada_cache_bytes",
                "Approximate bytes held by the response cache (each entry weighs at least max_bytes / max_entries), read at scrape time.",
            )?,
            rate_limited: counter(
                &r,
                "cada_rate_limited_total",
                "Requests refused with 429 by a per-key rate limit, by the limit hit (requests, tokens, or feedback: the key's feedback budget).",
                &["limit"],
            )?,
            safety_decisions: counter(
                &r,
                "cada_safety_decisions_total",
                "Safety decisions by mode, verdict (none: served without a verdict) and enforcement (enforce, or shadow: the verdict was not applied to the answer).",
                &["mode", "verdict", "enforcement"],
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
            store_errors: total(
                &r,
                "cada_case_store_errors_total",
                "Case-store writes made in the background (response records, logged cases) that failed or were dropped because the store queue was full or closed.",
            )?,
            cases_full: total(
                &r,
                "cada_cases_refused_full_total",
                "New cases (logged or made by feedback) not stored because store.cases.pending_max cases were pending review.",
            )?,
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
            adapter_refused: counter(
                &r,
                "cada_adapter_refused_total",
                "Adapter versions refused before or while loading, by reason (see the README's Adapters section); a refused version is not tried again until its file changes.",
                &["reason"],
            )?,
            connections_refused: total(
                &r,
                "cada_connections_refused_total",
                "Client connections closed at accept because limits.max_connections were open.",
            )?,
            adapter_fallback: gauge(
                &r,
                "cada_adapter_fallback",
                "1 while the gateway serves an older version, the release adapter or the base model because the adapter it was asked to serve was refused; 0 otherwise.",
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
        for kind in cada_core::FailureKind::ALL {
            m.engine_failures.with_label_values(&[kind.as_str()]);
        }
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
                for enforcement in ["enforce", "shadow"] {
                    m.safety_decisions
                        .with_label_values(&[mode.as_str(), verdict, enforcement]);
                }
            }
        }
        for reason in BORDERLINE_REASONS {
            m.borderline.with_label_values(&[reason]);
        }
        for reason in ADAPTER_REFUSALS {
            m.adapter_refused.with_label_values(&[reason]);
        }
        for label in FEEDBACK_LABELS {
            m.feedback.with_label_values(&[label.as_str()]);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use cada_core::policy::Label;
    use cada_core::store::FeedbackLabel;
    use cada_core::{FinishReason, Usage};
    use hyper::StatusCode;

    use super::*;
    use crate::error::ApiError;
    use crate::events::Out;
    use crate::metrics::tests::metrics;
    use crate::safety::{Decision, Mode};
    use crate::server::text_response;

    const NAMES: [&str; 28] = [
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
        "cada_engine_up",
        "cada_engine_failures_total",
        "cada_cache_requests_total",
        "cada_cache_entries",
        "cada_cache_bytes",
        "cada_rate_limited_total",
        "cada_safety_decisions_total",
        "cada_borderline_cases_total",
        "cada_feedback_total",
        "cada_case_store_errors_total",
        "cada_model_info",
        "cada_adapter_info",
        "cada_adapter_refused_total",
        "cada_adapter_fallback",
        "cada_connections_refused_total",
        "cada_cases_refused_full_total",
        "cada_policy_info",
        "cada_gateway_overhead_seconds",
    ];

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
            r#"cada_safety_decisions_total{enforcement="enforce",mode="trained",verdict="allow"} 1"#,
            r#"cada_safety_decisions_total{enforcement="shadow",mode="off",verdict="none"} 0"#,
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
}
