//! What a deliberation decided, how sure it was, and whether the request is borderline: the
//! signals that turn production traffic into new cases.

use cada_core::policy::{Label, ProbeCall, Refusal, VerdictRule};
use cada_core::store::PrecedentRef;
use serde_json::{json, Value};

use super::Mode;

/// Precedents less similar than this say too little about a request to flag disagreement.
pub const PRECEDENT_MIN_SIMILARITY: f32 = 0.3;
/// Sharpness of the precedent weighting in the risk estimate (similarity units).
const RISK_TEMPERATURE: f32 = 0.05;

/// The safety decision of one request.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    /// Mode the request asked for (or the default).
    pub mode: Option<Mode>,
    /// Shadow mode: the verdict is reported, the answer is the one `off` gives.
    pub shadow: bool,
    /// `adaptive`: whether the request was served directly (low risk) or deliberated.
    pub deliberated: bool,
    /// Verdict read from the logits at the verdict position; `None` when nothing deliberated.
    pub verdict: Option<Label>,
    /// Probability of the verdict, normalised over the three verdicts.
    pub probability: Option<f32>,
    /// Normalised probabilities of allow, refuse, safe_complete.
    pub probs: Option<[f32; 3]>,
    /// Calibrated refuse threshold (log-odds) the verdict was read with, if any.
    pub refuse_log_odds: Option<f32>,
    /// `adaptive`: estimated risk in [0, 1].
    pub risk: Option<f32>,
    /// `adaptive` over an adapter's probe: its refuse log-odds and what it decided.
    pub probe: Option<(f32, ProbeCall)>,
    pub precedents: Vec<PrecedentRef>,
    /// The request's embedding (for near-duplicate merging of logged cases).
    pub embedding: Option<Vec<f32>>,
}

impl Decision {
    /// Normalises raw next-token probabilities of the three verdicts and picks the verdict by
    /// `rule` (the most probable, or a calibrated refuse threshold).
    pub fn from_probs(raw: &[f32], rule: VerdictRule) -> (Label, f32, [f32; 3]) {
        let total: f32 = raw.iter().sum();
        let mut p = [0.0; 3];
        for (i, v) in raw.iter().take(3).enumerate() {
            p[i] = if total > 0.0 { v / total } else { 1.0 / 3.0 };
        }
        let label = rule.pick(p);
        let i = Label::ALL.iter().position(|l| *l == label).unwrap_or(0);
        (label, p[i], p)
    }

    /// Whether the answer is the gateway's refusal (a `refuse` verdict, enforced).
    pub fn refused(&self) -> bool {
        self.verdict == Some(Label::Refuse) && !self.shadow
    }

    /// `enforce` or `shadow`, as headers and metrics say it.
    pub fn enforcement(&self) -> &'static str {
        if self.shadow {
            "shadow"
        } else {
            "enforce"
        }
    }

    /// Weight of each precedent: `exp((similarity - best) / 0.05)`, so the nearest precedents
    /// dominate and a crowd of weakly similar ones cannot outvote a close match.
    pub fn precedent_weights(&self) -> impl Iterator<Item = (&PrecedentRef, f32)> {
        let best = self
            .precedents
            .iter()
            .map(|p| p.similarity)
            .fold(f32::MIN, f32::max);
        self.precedents
            .iter()
            .map(move |p| (p, ((p.similarity - best) / RISK_TEMPERATURE).exp()))
    }

    /// Weighted majority label of the precedents, when the nearest is similar enough to count.
    pub fn precedent_label(&self) -> Option<Label> {
        let mut score = [0.0f32; 3];
        for (p, w) in self
            .precedent_weights()
            .filter(|(p, _)| p.similarity >= PRECEDENT_MIN_SIMILARITY)
        {
            let i = Label::ALL.iter().position(|l| *l == p.label).unwrap_or(0);
            score[i] += w;
        }
        let (i, best) =
            score.iter().enumerate().fold(
                (0, 0.0f32),
                |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
            );
        (best > 0.0).then_some(Label::ALL[i])
    }

    /// Precedent risk in [0, 1]: refuse counts 1, safe_complete 0.5, allow 0, weighted as in
    /// [`Decision::precedent_label`].
    pub fn precedent_risk(&self) -> f32 {
        let (mut num, mut den) = (0.0, 0.0);
        for (p, w) in self.precedent_weights() {
            num += w * label_risk(p.label);
            den += w;
        }
        if den > 0.0 {
            num / den
        } else {
            0.0
        }
    }

    /// Why this request should become a case for review; empty when it is not borderline.
    pub fn borderline(&self, answer: Refusal, band: [f32; 2]) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Some(p) = self.probability {
            if p >= band[0] && p < band[1] {
                reasons.push("low_confidence");
            }
        }
        // What the request was treated as: the verdict, or for direct answers the answer itself.
        let refused = match self.verdict {
            Some(v) => v == Label::Refuse,
            None => answer.is_refusal(),
        };
        match (refused, self.precedent_label()) {
            (true, Some(Label::Allow)) => reasons.push("possible_over_refusal"),
            (false, Some(Label::Refuse)) => reasons.push("possible_harmful"),
            _ => {}
        }
        if matches!(self.verdict, Some(Label::Allow | Label::SafeComplete)) && answer.is_refusal() {
            reasons.push("verdict_answer_mismatch");
        }
        reasons.into_iter().map(str::to_owned).collect()
    }

    /// The `cada` extension object of a response.
    pub fn to_json(
        &self,
        policy_version: &str,
        borderline: &[String],
        refusal: Option<Refusal>,
    ) -> Value {
        json!({
            "mode": self.mode.map(Mode::as_str),
            "enforced": !self.shadow,
            "deliberated": self.deliberated,
            "verdict": self.verdict.map(Label::as_str),
            "verdict_probability": self.probability,
            "verdict_probabilities": self.probs.map(|p| json!({
                "allow": p[0], "refuse": p[1], "safe_complete": p[2]
            })),
            "refuse_log_odds": self.refuse_log_odds,
            "risk": self.risk,
            "probe": self.probe.map(|(log_odds, call)| json!({
                "refuse_log_odds": log_odds, "call": call.as_str()
            })),
            "policy_version": policy_version,
            "precedents": self.precedents.iter().map(|p| json!({
                "id": p.id, "label": p.label.as_str(), "similarity": p.similarity
            })).collect::<Vec<_>>(),
            "borderline": borderline,
            "refusal": refusal,
        })
    }
}

/// Risk weight of a label.
pub fn label_risk(label: Label) -> f32 {
    match label {
        Label::Allow => 0.0,
        Label::SafeComplete => 0.5,
        Label::Refuse => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prec(label: Label, similarity: f32) -> PrecedentRef {
        PrecedentRef {
            id: "c".into(),
            label,
            similarity,
        }
    }

    fn decided(
        verdict: Option<Label>,
        probability: Option<f32>,
        precedents: Vec<PrecedentRef>,
    ) -> Decision {
        Decision {
            verdict,
            probability,
            precedents,
            ..Decision::default()
        }
    }

    #[test]
    fn verdict_is_the_most_probable_normalised() {
        let (label, p, probs) = Decision::from_probs(&[0.1, 0.3, 0.1], VerdictRule::default());
        assert_eq!(label, Label::Refuse);
        assert!((p - 0.6).abs() < 1e-6);
        assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_calibrated_threshold_overrules_the_most_probable_verdict() {
        // p(refuse) = 0.6 is log-odds 0.405: below a threshold of 2, so the better of the rest.
        let rule = VerdictRule {
            refuse_log_odds: Some(2.0),
            probe: None,
        };
        let (label, p, _) = Decision::from_probs(&[0.05, 0.3, 0.15], rule);
        assert_eq!(label, Label::SafeComplete);
        assert!((p - 0.3).abs() < 1e-6);
    }

    #[test]
    fn refusing_what_precedents_allow_is_a_possible_over_refusal() {
        let d = decided(
            Some(Label::Refuse),
            Some(0.9),
            vec![prec(Label::Allow, 0.8), prec(Label::Refuse, 0.4)],
        );
        assert_eq!(
            d.borderline(Refusal::Full, [0.4, 0.7]),
            vec!["possible_over_refusal"]
        );
    }

    #[test]
    fn allowing_what_precedents_refuse_is_possibly_harmful() {
        let d = decided(
            Some(Label::Allow),
            Some(0.5),
            vec![prec(Label::Refuse, 0.7)],
        );
        assert_eq!(
            d.borderline(Refusal::None, [0.4, 0.7]),
            vec!["low_confidence", "possible_harmful"]
        );
    }

    #[test]
    fn agreement_with_confidence_is_not_borderline_and_far_precedents_do_not_count() {
        let d = decided(Some(Label::Allow), Some(0.9), vec![prec(Label::Allow, 0.8)]);
        assert!(d.borderline(Refusal::None, [0.4, 0.7]).is_empty());
        let far = decided(
            Some(Label::Allow),
            Some(0.9),
            vec![prec(Label::Refuse, 0.1)],
        );
        assert!(far.borderline(Refusal::None, [0.4, 0.7]).is_empty());
    }

    #[test]
    fn verdict_and_answer_disagreeing_is_flagged() {
        let d = decided(Some(Label::Allow), Some(0.9), vec![]);
        assert_eq!(
            d.borderline(Refusal::Full, [0.4, 0.7]),
            vec!["verdict_answer_mismatch"]
        );
    }

    #[test]
    fn direct_answers_are_judged_by_their_text() {
        let d = decided(None, None, vec![prec(Label::Allow, 0.9)]);
        assert_eq!(
            d.borderline(Refusal::Full, [0.4, 0.7]),
            vec!["possible_over_refusal"]
        );
        assert!(d.borderline(Refusal::None, [0.4, 0.7]).is_empty());
    }

    #[test]
    fn precedent_risk_weighs_labels_by_similarity() {
        let d = decided(
            None,
            None,
            vec![prec(Label::Refuse, 0.5), prec(Label::Allow, 0.5)],
        );
        assert!((d.precedent_risk() - 0.5).abs() < 1e-6);
        let near_allow = decided(
            None,
            None,
            vec![prec(Label::Allow, 0.88), prec(Label::Refuse, 0.31)],
        );
        assert!(near_allow.precedent_risk() < 0.01);
        let near_refuse = decided(
            None,
            None,
            vec![prec(Label::Refuse, 0.7), prec(Label::Allow, 0.65)],
        );
        assert!(near_refuse.precedent_risk() > 0.7);
        assert_eq!(decided(None, None, vec![]).precedent_risk(), 0.0);
    }
}
