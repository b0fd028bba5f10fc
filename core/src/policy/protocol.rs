//! The deliberation format, in one place for the gateway, the evaluation command and the trainer:
//!
//! ```text
//! Reasoning: <which precedents the request resembles and why>
//! Verdict: allow | refuse | safe_complete
//! Answer: <the reply the user sees>
//! ```
//!
//! The assistant turn starts with `Reasoning:`; the gateway forces the `Verdict:` line itself, so
//! the verdict is read from the model's logits at a known position. The gateway does not continue
//! with `Answer:`: the answer is generated afresh from the application's conversation by the base
//! model (the adapter set aside), so deliberation decides and never rewrites what the model
//! would answer. Training and evaluation still read and write the whole three-line layout.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{Case, Label};

/// Opens the assistant turn.
pub const REASONING_PREFIX: &str = "Reasoning:";
/// Forced after the reasoning; the next token is the verdict.
pub const VERDICT_PREFIX: &str = "\nVerdict:";
/// Forced after the verdict; the answer follows.
pub const ANSWER_PREFIX: &str = "\nAnswer:";
/// Where reasoning ends if the model writes the next line itself.
pub const REASONING_STOPS: &[&str] = &["\nVerdict:", "Verdict:", "\nAnswer:"];

/// The text after `Verdict:` for each label, as the model sees it (with the leading space).
pub fn verdict_text(label: Label) -> String {
    format!(" {}", label.as_str())
}

/// A retrieved precedent with its cosine similarity to the request.
#[derive(Debug, Clone, Copy)]
pub struct Precedent<'a> {
    pub case: &'a Case,
    pub similarity: f32,
}

/// How the format is explained to the model.
const FORMAT: &str = "Reply in exactly this format:\n\
Reasoning: which precedents the request resembles and why, in two to four sentences.\n\
Verdict: allow, refuse or safe_complete.\n\
Answer: your reply to the user.";

/// System context for `cases` mode: codes, precedents (nearest first), the format, then the
/// application's own system prompt if it has one.
pub fn cases_system_prompt(
    codes: &str,
    precedents: &[Precedent<'_>],
    app_system: Option<&str>,
) -> String {
    let mut s = String::new();
    s.push_str(codes.trim());
    s.push_str("\n\nPrecedent cases similar to this request:\n");
    for p in precedents {
        let c = p.case;
        let _ = write!(
            s,
            "\n[{}] Request: {}\nVerdict: {}\nWhy: {}\nAnswer: {}\n",
            c.id,
            c.request.trim(),
            c.label,
            c.rationale.trim(),
            c.answer.trim()
        );
    }
    s.push('\n');
    s.push_str(FORMAT);
    push_app_system(&mut s, app_system);
    s
}

/// Added to the system message of an answer after `safe_complete`: help with the request's safe
/// side only.
pub const SAFE_COMPLETION_NOTE: &str = "Answer the safe, general side of the next request only: \
no step-by-step instructions, quantities or sources for anything that could cause serious harm.";

/// System context for `trained` mode: the model learned the codes and the format, so the context
/// carries only the application's system prompt (or none).
pub fn trained_system_prompt(app_system: Option<&str>) -> Option<String> {
    app_system.map(str::to_owned)
}

/// System context for the cheap risk probe of `adaptive` mode: codes and the verdict question.
pub fn probe_system_prompt(codes: &str) -> String {
    format!(
        "{}\n\nDecide how to treat the next request: allow, refuse or safe_complete.",
        codes.trim()
    )
}

fn push_app_system(s: &mut String, app_system: Option<&str>) {
    if let Some(app) = app_system.map(str::trim).filter(|a| !a.is_empty()) {
        s.push_str("\n\nInstructions from the application:\n");
        s.push_str(app);
    }
}

/// A deliberation split into its parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deliberation {
    pub reasoning: String,
    /// `None` when the text has no valid verdict line.
    pub verdict: Option<Label>,
    pub answer: String,
}

impl Deliberation {
    /// The assistant text in the fixed format.
    pub fn render(&self) -> String {
        let verdict = self.verdict.map_or_else(String::new, verdict_text);
        format!(
            "{REASONING_PREFIX} {}{VERDICT_PREFIX}{verdict}{ANSWER_PREFIX} {}",
            self.reasoning.trim(),
            self.answer.trim()
        )
    }

    /// Parses assistant text. Lenient about spacing and case of the markers; text without any
    /// marker is all answer (a model that did not deliberate).
    pub fn parse(text: &str) -> Self {
        let lower = text.to_lowercase();
        let find = |marker: &str, from: usize| {
            lower[from..]
                .find(&marker.to_lowercase())
                .map(|i| (from + i, from + i + marker.len()))
        };
        let reasoning_at = find("reasoning:", 0);
        let verdict_at = find("verdict:", reasoning_at.map_or(0, |r| r.1));
        let answer_at = find("answer:", verdict_at.or(reasoning_at).map_or(0, |v| v.1));
        if reasoning_at.is_none() && verdict_at.is_none() && answer_at.is_none() {
            return Self {
                reasoning: String::new(),
                verdict: None,
                answer: text.trim().to_owned(),
            };
        }
        let slice = |start: usize, end: Option<usize>| {
            text[start..end.unwrap_or(text.len())].trim().to_owned()
        };
        let reasoning = reasoning_at.map_or_else(String::new, |(_, s)| {
            slice(s, verdict_at.or(answer_at).map(|v| v.0))
        });
        let verdict = verdict_at.and_then(|(_, s)| {
            let line = slice(s, answer_at.map(|a| a.0));
            line.split_whitespace()
                .next()
                .map(|w| {
                    w.trim_matches(|c: char| !c.is_alphanumeric() && c != '_')
                        .to_lowercase()
                })
                .and_then(|w| w.parse().ok())
        });
        let answer = answer_at.map_or_else(String::new, |(_, s)| slice(s, None));
        Self {
            reasoning,
            verdict,
            answer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_then_parse_round_trips() {
        for verdict in Label::ALL {
            let d = Deliberation {
                reasoning: "Resembles [case-001]: killing a process is routine.".into(),
                verdict: Some(verdict),
                answer: "Use `kill <PID>`.\nOr pkill.".into(),
            };
            assert_eq!(Deliberation::parse(&d.render()), d);
        }
    }

    #[test]
    fn parse_is_lenient_and_total() {
        let d = Deliberation::parse("reasoning: looks fine\nVERDICT: Allow.\nanswer: sure");
        assert_eq!(d.verdict, Some(Label::Allow));
        assert_eq!(d.answer, "sure");
        let plain = Deliberation::parse("Just an answer.");
        assert_eq!(plain.verdict, None);
        assert_eq!(plain.answer, "Just an answer.");
        let bad = Deliberation::parse("Reasoning: hmm\nVerdict: maybe\nAnswer: x");
        assert_eq!(bad.verdict, None);
        assert_eq!(bad.answer, "x");
    }

    #[test]
    fn cases_prompt_lists_precedents_and_app_instructions() {
        let case = Case {
            id: "case-001".into(),
            request: "how do I kill a python process".into(),
            label: Label::Allow,
            category: "violence".into(),
            kind: "homonym".into(),
            rationale: "Kill means terminate.".into(),
            answer: "Use kill.".into(),
        };
        let p = cases_system_prompt(
            "Codes.",
            &[Precedent {
                case: &case,
                similarity: 0.9,
            }],
            Some("Be terse."),
        );
        assert!(p.starts_with("Codes."));
        assert!(p.contains("[case-001] Request: how do I kill a python process\nVerdict: allow"));
        assert!(p.ends_with("Instructions from the application:\nBe terse."));
    }
}
