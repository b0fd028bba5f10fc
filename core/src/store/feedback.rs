//! User feedback on an answer and the case label it implies. Feedback is evidence for review:
//! it becomes a training label on its own only when enough independent keys agree (a quorum of
//! distinct keys, none of them the key that made the request), so no single key can relabel
//! its own refused request.

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
    /// Name of the key that sent it (`None`: an anonymous caller).
    #[serde(default)]
    pub caller: Option<String>,
}

/// Agreeing independent keys that make feedback a training label when the export asks for none.
pub const DEFAULT_FEEDBACK_QUORUM: u32 = 2;

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
    /// Name of the key that sent it; `None` for anonymous callers and for feedback stored
    /// before keys were recorded. Either way it never votes.
    #[serde(default)]
    pub caller: Option<String>,
    /// Sent by the key that made the request it judges: evidence for review, never a vote.
    #[serde(default)]
    pub from_requester: bool,
}

impl FeedbackEntry {
    /// The key this feedback votes as: a named key judging someone else's response.
    fn voter(&self) -> Option<&str> {
        match &self.caller {
            Some(k) if !self.from_requester => Some(k),
            _ => None,
        }
    }
}

/// The label independent keys agree on, if any. Each named key votes once, with its newest
/// feedback on the case; feedback from the key that made the request, from anonymous callers,
/// or implying nothing (`correct` on a response without a verdict) does not vote. A label
/// needs at least `quorum` votes (at least 1) and more than half of them; ties and split votes
/// give `None`, and the case waits for review.
pub fn agreed_label(
    feedback: &[FeedbackEntry],
    verdict: Option<Label>,
    quorum: u32,
) -> Option<Label> {
    let mut newest: Vec<&FeedbackEntry> = Vec::new();
    for f in feedback.iter().filter(|f| f.voter().is_some()) {
        match newest.iter_mut().find(|n| n.voter() == f.voter()) {
            Some(n) if (f.created, &f.id) >= (n.created, &n.id) => *n = f,
            Some(_) => {}
            None => newest.push(f),
        }
    }
    let votes: Vec<Label> = newest
        .iter()
        .filter_map(|f| f.label.implied_label(verdict))
        .collect();
    let quorum = usize::try_from(quorum.max(1)).unwrap_or(usize::MAX);
    Label::ALL.into_iter().find(|l| {
        let n = votes.iter().filter(|v| *v == l).count();
        n >= quorum && n * 2 > votes.len()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feedback from key `k{i}` (a distinct key each), none of them the requester.
    fn voters(ls: &[FeedbackLabel]) -> Vec<FeedbackEntry> {
        ls.iter()
            .enumerate()
            .map(|(i, &l)| entry(l, Some(&format!("k{i}")), false, i64::try_from(i).unwrap()))
            .collect()
    }

    fn entry(label: FeedbackLabel, caller: Option<&str>, own: bool, created: i64) -> FeedbackEntry {
        FeedbackEntry {
            id: format!("fb_{created:03}"),
            response_id: "chatcmpl-1".into(),
            label,
            comment: None,
            created,
            caller: caller.map(str::to_owned),
            from_requester: own,
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
    fn a_label_needs_a_quorum_and_more_than_half_of_the_votes() {
        use FeedbackLabel::*;
        let refuse = Some(Label::Refuse);
        assert_eq!(
            agreed_label(&voters(&[OverRefusal]), refuse, 1),
            Some(Label::Allow)
        );
        assert_eq!(agreed_label(&voters(&[OverRefusal]), refuse, 2), None);
        assert_eq!(
            agreed_label(&voters(&[OverRefusal, OverRefusal, Correct]), refuse, 2),
            Some(Label::Allow)
        );
        assert_eq!(
            agreed_label(&voters(&[OverRefusal, Correct]), refuse, 1),
            None
        );
        assert_eq!(
            agreed_label(&voters(&[Harmful, Correct]), refuse, 2),
            Some(Label::Refuse)
        );
        // `correct` without a verdict does not vote.
        assert_eq!(
            agreed_label(&voters(&[Correct, Correct, Harmful]), None, 1),
            Some(Label::Refuse)
        );
        assert_eq!(agreed_label(&voters(&[Correct]), None, 1), None);
        assert_eq!(agreed_label(&[], refuse, 1), None);
        // A quorum of 0 means 1: feedback never labels without a vote.
        assert_eq!(agreed_label(&[], refuse, 0), None);
    }

    #[test]
    fn the_requester_anonymous_callers_and_repeats_do_not_outvote_review() {
        use FeedbackLabel::*;
        let refuse = Some(Label::Refuse);
        // The key that made the request, however often it reports, never votes.
        let own: Vec<_> = (0..5)
            .map(|t| entry(OverRefusal, Some("mallory"), true, t))
            .collect();
        assert_eq!(agreed_label(&own, refuse, 1), None);
        // Anonymous feedback (and feedback stored before callers were recorded) never votes.
        let anon: Vec<_> = (0..5).map(|t| entry(OverRefusal, None, false, t)).collect();
        assert_eq!(agreed_label(&anon, refuse, 1), None);
        // One key repeating itself is one vote: its newest.
        let repeat: Vec<_> = (0..5)
            .map(|t| entry(OverRefusal, Some("alice"), false, t))
            .collect();
        assert_eq!(agreed_label(&repeat, refuse, 1), Some(Label::Allow));
        assert_eq!(agreed_label(&repeat, refuse, 2), None);
        let mut changed = repeat.clone();
        changed.push(entry(Correct, Some("alice"), false, 9));
        assert_eq!(agreed_label(&changed, refuse, 1), Some(Label::Refuse));
        // Two independent keys make a quorum of 2.
        let mut two = repeat;
        two.push(entry(OverRefusal, Some("bob"), false, 9));
        two.extend(own);
        assert_eq!(agreed_label(&two, refuse, 2), Some(Label::Allow));
    }
}
