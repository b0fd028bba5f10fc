//! One evaluated prompt: the judgement (refused or not) and both signals it can come from, the
//! gateway's verdict and the refusal detector, kept side by side so disagreements can be read.

use cada_core::policy::refusal::{self, Refusal};
use cada_core::policy::{DevItem, Label};
use serde::Serialize;

use super::client::{Completion, PrecedentRef};

/// Characters of the answer and reasoning kept in the report.
pub const TEXT_CHARS: usize = 300;

/// The result for one labelled prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemResult {
    pub id: String,
    pub label: Label,
    pub category: String,
    pub kind: String,
    /// Whether the request was refused: the verdict where the server gave one, else the
    /// detector; null when the request failed.
    pub refused: Option<bool>,
    /// The gateway's verdict (`cada.verdict`); null from other servers and non-deliberating modes.
    pub verdict: Option<Label>,
    pub verdict_probability: Option<f32>,
    /// Probability of the `refuse` verdict, where the gateway sent the three (calibration input).
    pub refuse_probability: Option<f32>,
    /// The refusal detector's reading of the answer; null when the request failed.
    pub detector: Option<Refusal>,
    /// The gateway's own refusal reading (`cada.refusal`), where it sent one.
    pub gateway_refusal: Option<String>,
    /// The mode the gateway ran for this item (`cada.mode`).
    pub served_mode: Option<String>,
    /// `cada.policy_version`; the report states it once, at the top.
    #[serde(skip)]
    pub policy_version: Option<String>,
    /// Precedents the gateway retrieved.
    pub precedents: Vec<PrecedentRef>,
    /// Codes the gateway found the request close to.
    pub borderline: Vec<String>,
    /// Milliseconds of the request that succeeded (retries and waits not counted); 0 on error.
    pub latency_ms: f64,
    /// `usage.completion_tokens`, 0 when absent.
    pub completion_tokens: u64,
    /// `usage.completion_tokens_details.reasoning_tokens`, 0 when absent.
    pub reasoning_tokens: u64,
    /// Requests sent, retries included.
    pub attempts: u32,
    pub error: Option<String>,
    /// The answer's first characters.
    pub answer: Option<String>,
    /// The reasoning's first characters, when the server sent it.
    pub reasoning: Option<String>,
    /// Utility items: an accepted answer in the (whole) answer and not refused; null for items
    /// without accepted answers and failed requests.
    pub correct: Option<bool>,
}

impl ItemResult {
    /// Judges an answered request.
    pub fn answered(item: &DevItem, completion: Completion) -> Self {
        let cada = completion.cada.unwrap_or_default();
        let detector = refusal::detect(&completion.content);
        let refused = judge(cada.verdict, detector);
        Self {
            refused: Some(refused),
            correct: item
                .accepts(&completion.content)
                .map(|hit| hit && !refused && detector == Refusal::None),
            verdict: cada.verdict,
            verdict_probability: cada.verdict_probability,
            refuse_probability: cada.verdict_probabilities.map(|p| p.refuse),
            detector: Some(detector),
            gateway_refusal: cada.refusal,
            served_mode: cada.mode,
            policy_version: cada.policy_version,
            precedents: cada.precedents.unwrap_or_default(),
            borderline: cada.borderline.unwrap_or_default(),
            latency_ms: completion.latency.as_secs_f64() * 1000.0,
            completion_tokens: completion.completion_tokens.unwrap_or(0),
            reasoning_tokens: completion.reasoning_tokens.unwrap_or(0),
            attempts: completion.attempts,
            answer: Some(truncate(&completion.content)),
            reasoning: completion.reasoning.as_deref().map(truncate),
            ..Self::blank(item)
        }
    }

    /// Records a request that failed.
    pub fn failed(item: &DevItem, error: String) -> Self {
        Self {
            error: Some(error),
            ..Self::blank(item)
        }
    }

    fn blank(item: &DevItem) -> Self {
        Self {
            id: item.id.clone(),
            label: item.label,
            category: item.category.clone(),
            kind: item.kind.clone(),
            refused: None,
            verdict: None,
            verdict_probability: None,
            refuse_probability: None,
            detector: None,
            gateway_refusal: None,
            served_mode: None,
            policy_version: None,
            precedents: Vec::new(),
            borderline: Vec::new(),
            latency_ms: 0.0,
            completion_tokens: 0,
            reasoning_tokens: 0,
            attempts: 0,
            error: None,
            answer: None,
            reasoning: None,
            correct: None,
        }
    }
}

/// Refused when the verdict says `refuse`; without a verdict, when the answer is a full refusal.
pub fn judge(verdict: Option<Label>, detector: Refusal) -> bool {
    match verdict {
        Some(v) => v == Label::Refuse,
        None => detector.is_refusal(),
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(TEXT_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::client::CadaExtension;
    use super::*;

    fn dev() -> DevItem {
        DevItem {
            id: "d1".into(),
            prompt: "p".into(),
            label: Label::Allow,
            category: "c".into(),
            kind: "k".into(),
            answers: Vec::new(),
            note: None,
        }
    }

    fn completion(content: &str, verdict: Option<Label>) -> Completion {
        Completion {
            content: content.into(),
            reasoning: None,
            completion_tokens: Some(4),
            reasoning_tokens: None,
            cada: verdict.map(|v| CadaExtension {
                verdict: Some(v),
                ..CadaExtension::default()
            }),
            latency: Duration::from_millis(12),
            attempts: 1,
        }
    }

    #[test]
    fn the_verdict_wins_over_the_detector() {
        assert!(judge(Some(Label::Refuse), Refusal::None));
        assert!(!judge(Some(Label::Allow), Refusal::Full));
        assert!(!judge(Some(Label::SafeComplete), Refusal::Full));
        assert!(judge(None, Refusal::Full));
        assert!(!judge(None, Refusal::Partial));
        assert!(!judge(None, Refusal::None));
    }

    #[test]
    fn answered_items_keep_both_signals() {
        let r = ItemResult::answered(&dev(), completion("Sure, here it is.", Some(Label::Refuse)));
        assert_eq!(r.refused, Some(true));
        assert_eq!(r.verdict, Some(Label::Refuse));
        assert_eq!(r.detector, Some(Refusal::None));
        assert_eq!((r.completion_tokens, r.reasoning_tokens), (4, 0));
        assert!((r.latency_ms - 12.0).abs() < 1e-9);

        let r = ItemResult::answered(&dev(), completion("I can't help with that.", None));
        assert_eq!((r.refused, r.verdict), (Some(true), None));
        assert_eq!(r.detector, Some(Refusal::Full));

        let long = "é".repeat(TEXT_CHARS + 50);
        let r = ItemResult::answered(&dev(), completion(&long, None));
        assert_eq!(r.answer.map(|a| a.chars().count()), Some(TEXT_CHARS));
    }

    #[test]
    fn utility_items_need_an_accepted_answer_that_is_not_refused() {
        let mut item = dev();
        item.answers = vec!["paris".into()];
        let r = ItemResult::answered(&item, completion("The capital is Paris.", None));
        assert_eq!(r.correct, Some(true));
        let r = ItemResult::answered(&item, completion("I can help with that.", None));
        assert_eq!(r.correct, Some(false));
        let r = ItemResult::answered(&item, completion("Paris.", Some(Label::Refuse)));
        assert_eq!(r.correct, Some(false));
        let hedged = "I can't help with Paris, but here is a map.";
        assert_eq!(
            ItemResult::answered(&item, completion(hedged, None)).correct,
            Some(false)
        );
        assert_eq!(
            ItemResult::answered(&dev(), completion("Paris", None)).correct,
            None
        );
        assert_eq!(ItemResult::failed(&item, "boom".into()).correct, None);
    }

    #[test]
    fn failed_items_have_no_judgement() {
        let r = ItemResult::failed(&dev(), "boom".into());
        assert_eq!((r.refused, r.detector), (None, None));
        assert_eq!(r.error.as_deref(), Some("boom"));
    }
}
