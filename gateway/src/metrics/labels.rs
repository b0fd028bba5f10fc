//! The fixed label sets of the metrics: route names, token kinds, cache results, limits, safety
//! modes, verdicts, borderline reasons, feedback labels. Nothing a client sends becomes a label.

use cada_core::store::FeedbackLabel;

use crate::safety::Mode;

/// The route a request went to: the `endpoint` label (never the raw path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Moderations,
    Models,
    Feedback,
    Admin,
    Health,
    Metrics,
    Other,
}

impl Endpoint {
    pub const ALL: [Endpoint; 9] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Moderations,
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
            "/v1/moderations" => Endpoint::Moderations,
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
            Endpoint::Moderations => "moderations",
            Endpoint::Models => "models",
            Endpoint::Feedback => "feedback",
            Endpoint::Admin => "admin",
            Endpoint::Health => "health",
            Endpoint::Metrics => "metrics",
            Endpoint::Other => "other",
        }
    }

    /// Whether the route generates tokens (and so has a time to first token).
    pub(super) fn generates(self) -> bool {
        matches!(self, Endpoint::ChatCompletions | Endpoint::Completions)
    }
}

/// `status` of a request whose client went away before the response started (nginx's code).
pub const CLIENT_CLOSED: u16 = 499;

pub(super) const TOKEN_KINDS: [&str; 3] = ["prompt", "completion", "reasoning"];
pub(super) const CACHE_RESULTS: [&str; 2] = ["hit", "miss"];
pub(super) const RATE_LIMITS: [&str; 3] = ["requests", "tokens", "feedback"];
pub(super) const MODES: [Mode; 4] = [Mode::Off, Mode::Cases, Mode::Trained, Mode::Adaptive];
/// Verdicts, plus `none` for requests served without one.
pub(super) const VERDICTS: [&str; 4] = ["allow", "refuse", "safe_complete", "none"];
/// Reasons `Decision::borderline` gives; anything else is counted as `other`.
pub(super) const BORDERLINE_REASONS: [&str; 5] = [
    "low_confidence",
    "possible_over_refusal",
    "possible_harmful",
    "verdict_answer_mismatch",
    "other",
];
/// Why an adapter version was refused: the adapter check's reasons
/// ([`crate::adapters::reason`]), `metadata` (its verdict rule), `load` (llama.cpp refused it)
/// and `registry` (the adapter registry could not be read).
pub(super) const ADAPTER_REFUSALS: [&str; 10] = [
    "unreadable",
    "digest",
    "base_model",
    "header",
    "not_lora",
    "architecture",
    "shapes",
    "metadata",
    "load",
    "registry",
];
pub(super) const FEEDBACK_LABELS: [FeedbackLabel; 3] = [
    FeedbackLabel::OverRefusal,
    FeedbackLabel::Harmful,
    FeedbackLabel::Correct,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::metrics;
    use crate::server::text_response;
    use hyper::StatusCode;

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
}
