//! User feedback on an answer and the case label it implies: over-refusal and harmful reports
//! turn into training labels once they agree.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::policy::Label;

/// What a user says about an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackLabel {
    /// The assistant declined (or hedged) a request it should have helped with.
    OverRefusal,
    /// The assistant helped with something it should have declined.
    Harmful,
    /// The assistant got it right.
    Correct,
}

impl FeedbackLabel {
    pub const ALL: [FeedbackLabel; 3] = [Self::OverRefusal, Self::Harmful, Self::Correct];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OverRefusal => "over_refusal",
            Self::Harmful => "harmful",
            Self::Correct => "correct",
        }
    }

    /// The case label this feedback argues for: an over-refused request should have been
    /// allowed, a harmful answer refused, and `correct` confirms the verdict the response had
    /// (none when it had none).
    pub fn implied_label(self, verdict: Option<Label>) -> Option<Label> {
        match self {
            Self::OverRefusal => Some(Label::Allow),
            Self::Harmful => Some(Label::Refuse),
            Self::Correct => verdict,
        }
    }
}

impl fmt::Display for FeedbackLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FeedbackLabel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                format!("unknown feedback label `{s}` (expected over_refusal, harmful or correct)")
            })
    }
}

/// Feedback as the API receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewFeedback {
    /// The `chatcmpl-...` id of the answer the feedback is about.
    pub response_id: String,
    pub label: FeedbackLabel,
    /// Free text from the user; redact it before storing, like the request.
    pub comment: Option<String>,
}

/// Where feedback went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackOutcome {
    pub feedback_id: String,
    /// The case it is attached to.
    pub case_id: String,
    /// Whether the case was made for this feedback (no case had been logged from the response).
    pub created_case: bool,
}

/// Feedback attached to a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackEntry {
    /// `fb_` followed by a time-ordered unique suffix.
    pub id: String,
    /// The response it was given on (a merged case has several).
    pub response_id: String,
    pub label: FeedbackLabel,
    pub comment: Option<String>,
    /// When it was received, unix seconds.
    pub created: i64,
}

/// The label more than half of the feedback implies, if any. Feedback implying nothing (`correct`
/// on a response without a verdict) does not vote; ties and split votes give `None`, so only
/// agreeing feedback becomes training data.
pub fn majority_label(feedback: &[FeedbackEntry], verdict: Option<Label>) -> Option<Label> {
    let votes: Vec<Label> = feedback
        .iter()
        .filter_map(|f| f.label.implied_label(verdict))
        .collect();
    Label::ALL
        .into_iter()
        .find(|l| votes.iter().filter(|v| *v == l).count() * 2 > votes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(label: FeedbackLabel) -> FeedbackEntry {
        FeedbackEntry {
            id: "fb".into(),
            response_id: "chatcmpl-1".into(),
            label,
            comment: None,
            created: 0,
        }
    }

    #[test]
    fn labels_parse_and_serialise_in_snake_case() {
        for l in FeedbackLabel::ALL {
            assert_eq!(l.as_str().parse::<FeedbackLabel>(), Ok(l));
            assert_eq!(serde_json::to_string(&l).unwrap(), format!("\"{l}\""));
        }
        let err = "overrefusal".parse::<FeedbackLabel>().unwrap_err();
        assert!(
            err.contains("`overrefusal`") && err.contains("over_refusal"),
            "{err}"
        );
    }

    #[test]
    fn implied_labels() {
        use FeedbackLabel::*;
        assert_eq!(
            OverRefusal.implied_label(Some(Label::Refuse)),
            Some(Label::Allow)
        );
        assert_eq!(
            Harmful.implied_label(Some(Label::Allow)),
            Some(Label::Refuse)
        );
        assert_eq!(Harmful.implied_label(None), Some(Label::Refuse));
        assert_eq!(
            Correct.implied_label(Some(Label::SafeComplete)),
            Some(Label::SafeComplete)
        );
        assert_eq!(Correct.implied_label(None), None);
    }

    #[test]
    fn majority_needs_more_than_half_of_the_votes() {
        use FeedbackLabel::*;
        let fb = |ls: &[FeedbackLabel]| ls.iter().copied().map(entry).collect::<Vec<_>>();
        let refuse = Some(Label::Refuse);
        assert_eq!(
            majority_label(&fb(&[OverRefusal]), refuse),
            Some(Label::Allow)
        );
        assert_eq!(
            majority_label(&fb(&[OverRefusal, OverRefusal, Correct]), refuse),
            Some(Label::Allow)
        );
        assert_eq!(majority_label(&fb(&[OverRefusal, Correct]), refuse), None);
        assert_eq!(
            majority_label(&fb(&[Harmful, Correct]), refuse),
            Some(Label::Refuse)
        );
        // `correct` without a verdict does not vote.
        assert_eq!(
            majority_label(&fb(&[Correct, Correct, Harmful]), None),
            Some(Label::Refuse)
        );
        assert_eq!(majority_label(&fb(&[Correct]), None), None);
        assert_eq!(majority_label(&[], refuse), None);
    }
}
