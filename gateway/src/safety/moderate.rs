//! Safety as a classifier, for `/v1/moderations`: the served model's verdict probabilities for
//! one text, read as `adaptive` reads its probe (one prefill, no generation), flagged by the
//! refuse threshold in force, with categories taken from the nearest precedents. Other gateways'
//! moderation guardrails and apps that run their own model call cada this way.

use std::sync::Arc;

use cada_core::policy::protocol::{REASONING_PREFIX, VERDICT_PREFIX};
use cada_core::policy::{log_odds, Label, VerdictRule};
use cada_core::store::PrecedentRef;
use cada_core::{ChatMessage, ChatRole, Engine};

use super::deliberate::verdict_scores;
use super::screen::{probe_messages, retrieve};
use super::{Decision, Safety};
use crate::error::ApiError;

/// OpenAI's moderation categories, each with the policy categories whose precedents count for it.
pub const CATEGORIES: [(&str, &[&str]); 13] = [
    ("harassment", &["abuse"]),
    ("harassment/threatening", &[]),
    ("hate", &["hate"]),
    ("hate/threatening", &["extremism"]),
    ("illicit", &["crime", "cybercrime", "drugs", "privacy"]),
    ("illicit/violent", &["weapons"]),
    ("self-harm", &["self_harm"]),
    ("self-harm/intent", &[]),
    ("self-harm/instructions", &[]),
    ("sexual", &["sexual"]),
    ("sexual/minors", &[]),
    ("violence", &["violence", "extremism"]),
    ("violence/graphic", &[]),
];

/// What the served model makes of one text.
#[derive(Debug, Clone)]
pub struct Assessment {
    /// Normalised probabilities of allow, refuse, safe_complete.
    pub probs: [f32; 3],
    /// `ln(p/(1-p))` of refuse.
    pub refuse_log_odds: f32,
    /// The threshold the verdict was read with (unset: the most probable verdict).
    pub threshold: Option<f32>,
    pub flagged: bool,
    pub precedents: Vec<PrecedentRef>,
    /// Share of the precedents' weight per policy category, from the nearest precedents.
    pub policy_categories: Vec<(String, f32)>,
}

impl Assessment {
    /// p(refuse) spread over OpenAI's categories by the precedents' policy categories.
    pub fn category_scores(&self) -> Vec<(&'static str, f32)> {
        let p = self.probs[refuse_index()];
        CATEGORIES
            .iter()
            .map(|(name, sources)| {
                let share: f32 = self
                    .policy_categories
                    .iter()
                    .filter(|(c, _)| sources.contains(&c.as_str()))
                    .map(|(_, w)| w)
                    .sum();
                (*name, (p * share).clamp(0.0, 1.0))
            })
            .collect()
    }
}

fn refuse_index() -> usize {
    Label::ALL
        .iter()
        .position(|l| *l == Label::Refuse)
        .unwrap_or(1)
}

/// Assesses `text` as a user turn. `trained_layout`: an adapter is served, so the probe is the
/// one its training taught (the turn, `Reasoning:`, `Verdict:`); otherwise the codes ask.
pub async fn assess(
    engine: &Engine,
    safety: &Arc<Safety>,
    rule: VerdictRule,
    trained_layout: bool,
    text: String,
) -> Result<Assessment, ApiError> {
    let messages = [ChatMessage::new(ChatRole::User, text)];
    let (precedents, _) = retrieve(safety, &messages).await?;
    let decision = Decision {
        precedents: precedents.clone(),
        ..Decision::default()
    };
    let mut shares: Vec<(String, f32)> = Vec::new();
    for (p, w) in decision.precedent_weights() {
        let Some(case) = safety.policy.case(&p.id) else {
            continue;
        };
        match shares.iter_mut().find(|(c, _)| *c == case.category) {
            Some((_, total)) => *total += w,
            None => shares.push((case.category.clone(), w)),
        }
    }
    let total: f32 = shares.iter().map(|(_, w)| w).sum();
    for (_, w) in &mut shares {
        *w /= total.max(f32::MIN_POSITIVE);
    }
    let mut session = engine.session()?;
    let prompt = if trained_layout {
        let mut p = engine.chat_prompt(&messages)?;
        p.extend(&engine.tokens(REASONING_PREFIX));
        p.extend(&engine.tokens(VERDICT_PREFIX));
        p
    } else {
        let mut p = engine.chat_prompt(&probe_messages(&safety.policy.codes, &messages))?;
        p.extend(&engine.tokens(VERDICT_PREFIX.trim_start()));
        p
    };
    let raw = verdict_scores(engine, &mut session, prompt, true).await?;
    let rule = VerdictRule {
        refuse_log_odds: rule.refuse_log_odds,
        probe: None,
    };
    let (label, _, probs) = Decision::from_probs(&raw, rule);
    Ok(Assessment {
        probs,
        refuse_log_odds: log_odds(probs[refuse_index()]),
        threshold: rule.refuse_log_odds,
        flagged: label == Label::Refuse,
        precedents,
        policy_categories: shares,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuse_probability_is_spread_by_precedent_category() {
        let a = Assessment {
            probs: [0.2, 0.8, 0.0],
            refuse_log_odds: log_odds(0.8),
            threshold: None,
            flagged: true,
            precedents: Vec::new(),
            policy_categories: vec![("weapons".into(), 0.75), ("hate".into(), 0.25)],
        };
        let scores = a.category_scores();
        let get = |n: &str| scores.iter().find(|(c, _)| *c == n).unwrap().1;
        assert!((get("illicit/violent") - 0.6).abs() < 1e-6);
        assert!((get("hate") - 0.2).abs() < 1e-6);
        assert_eq!(get("sexual"), 0.0);
        assert_eq!(scores.len(), 13);
    }

    #[test]
    fn every_policy_category_maps_to_an_openai_one() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/policy");
        let policy = cada_core::policy::Policy::load(&root).expect("policy");
        for case in &policy.cases {
            assert!(
                CATEGORIES
                    .iter()
                    .any(|(_, s)| s.contains(&case.category.as_str())),
                "policy category '{}' has no moderation category",
                case.category
            );
        }
    }
}
