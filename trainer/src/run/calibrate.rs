//! Calibration of the refuse threshold on cases held out from training. After a trained
//! deliberation the verdict probabilities are sharp but their ranking still separates harmful
//! from benign requests far better than the most probable verdict does, so the run picks the
//! threshold (in log-odds of `refuse`) that refuses the most held-out harmful cases while
//! keeping benign compliance at the configured level (the highest of the thresholds that refuse
//! as many), and writes it into the adapter.

use cada_core::policy::{log_odds, DevItem, Label};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::GateRun;
use crate::data::{Example, Origin};
use crate::eval::Report;

/// Splits `examples` into (train, held out): per label, the `share` of examples that come first
/// in a seeded hash order (so the split is stable across runs and independent of file order).
pub fn split(examples: Vec<Example>, share: f64, seed: u64) -> (Vec<Example>, Vec<Example>) {
    if share <= 0.0 {
        return (examples, Vec::new());
    }
    let rank = |e: &Example| {
        let mut h = Sha256::new();
        h.update(seed.to_le_bytes());
        h.update(e.id.as_bytes());
        h.finalize()
    };
    let mut held_ids = std::collections::HashSet::new();
    for label in Label::ALL {
        let mut of_label: Vec<&Example> = examples.iter().filter(|e| e.label == label).collect();
        of_label.sort_by_cached_key(|e| rank(e));
        let n = (of_label.len() as f64 * share).round() as usize;
        held_ids.extend(of_label.iter().take(n).map(|e| e.id.clone()));
    }
    examples
        .into_iter()
        .partition(|e| !held_ids.contains(&e.id))
}

/// Splits every example source at once: `holdout` of the library's and case store's examples
/// by the seeded split above, and `labelled_holdout` of the outside requests by a split keyed
/// by their ids alone, so every seed calibrates on the same outside prompts.
pub fn split_sources(
    examples: Vec<Example>,
    holdout: f64,
    labelled_holdout: f64,
    seed: u64,
) -> (Vec<Example>, Vec<Example>) {
    let (outside, own): (Vec<Example>, Vec<Example>) = examples
        .into_iter()
        .partition(|e| e.origin == Origin::Outside);
    let (mut train, mut held) = split(own, holdout, seed);
    let (outside_train, outside_held) = split(outside, labelled_holdout, OUTSIDE_SPLIT_KEY);
    train.extend(outside_train);
    held.extend(outside_held);
    (train, held)
}

/// The key of the outside requests' calibration split (no run's seed).
const OUTSIDE_SPLIT_KEY: u64 = 0xCADA_CA11;

/// The calibration prompts: the validation set's items, then the held-out examples, in the
/// dev-set layout the evaluation reads.
pub fn items(validation: Vec<DevItem>, held: &[Example]) -> Vec<DevItem> {
    let mut items = validation;
    items.extend(held.iter().map(|e| DevItem {
        id: e.id.clone(),
        prompt: e.request.clone(),
        label: e.label,
        category: "calibration".into(),
        kind: if e.label.is_harmful() {
            "harmful".into()
        } else {
            "benign".into()
        },
        answers: Vec::new(),
        note: None,
    }));
    items
}

/// The chosen threshold and what it does on the held-out cases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// Refuse iff the log-odds of `refuse` reach this.
    pub refuse_log_odds: f32,
    pub harmful: usize,
    pub benign: usize,
    /// On the held-out cases, with the threshold.
    pub harmful_refusal_rate: f64,
    pub benign_compliance_rate: f64,
    /// On the held-out cases, with the most probable verdict (what the threshold replaces).
    pub argmax_harmful_refusal_rate: f64,
    pub argmax_benign_compliance_rate: f64,
    /// (threshold, harmful refusal, benign compliance) at every candidate threshold, for the
    /// report's plot.
    pub sweep: Vec<(f32, f64, f64)>,
    /// AUC of p(refuse) on the calibration prompts (the eval report's separation).
    pub auc: Option<f64>,
    /// Answers after a decision to answer that were refusals, with the most probable verdict
    /// (the evaluation the threshold is picked from).
    pub argmax_mismatch: Option<f64>,
}

/// Runs the held-out cases through the gateway with the adapter (most probable verdict) and picks
/// the threshold from the verdict probabilities.
pub fn measure(run: &GateRun, min_benign: f64) -> Result<(Report, Option<Calibration>), String> {
    let report = super::gate::evaluate(run)?;
    let picked = pick(&scores(&report), min_benign).map(|c| Calibration {
        auc: report.figures.separation.auc,
        argmax_mismatch: report.figures.mismatch.rate,
        ..c
    });
    Ok((report, picked))
}

/// One answered calibration item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub label: Label,
    /// Log-odds of the `refuse` verdict.
    pub log_odds: f32,
    /// Whether the gateway's verdict (the most probable one: calibration runs without a
    /// threshold) was `refuse`.
    pub refused: bool,
}

/// The scored items of a calibration evaluation (failed ones left out).
pub fn scores(report: &Report) -> Vec<Scored> {
    report
        .items
        .iter()
        .filter_map(|i| {
            i.refuse_probability.map(|p| Scored {
                label: i.label,
                log_odds: log_odds(p),
                refused: i.verdict == Some(Label::Refuse),
            })
        })
        .collect()
}

/// The threshold that refuses the most harmful requests of `scores` while benign compliance stays
/// at least `min_benign`, and of those the highest (the most benign compliance), placed halfway
/// between measured scores so it does not sit on one. `None` without both harmful and benign
/// cases.
pub fn pick(scores: &[Scored], min_benign: f64) -> Option<Calibration> {
    let (harmful_items, benign_items): (Vec<Scored>, Vec<Scored>) =
        scores.iter().partition(|s| s.label.is_harmful());
    let harmful: Vec<f32> = harmful_items.iter().map(|s| s.log_odds).collect();
    let benign: Vec<f32> = benign_items.iter().map(|s| s.log_odds).collect();
    if harmful.is_empty() || benign.is_empty() {
        return None;
    }
    let rates = |t: f32| {
        (
            harmful.iter().filter(|&&s| s >= t).count() as f64 / harmful.len() as f64,
            benign.iter().filter(|&&s| s < t).count() as f64 / benign.len() as f64,
        )
    };
    let mut all: Vec<f32> = scores.iter().map(|s| s.log_odds).collect();
    all.sort_by(f32::total_cmp);
    all.dedup();
    // Candidates: below every score, then just above each one (halfway to the next).
    let mut candidates = vec![all[0] - 1.0];
    for (i, &s) in all.iter().enumerate() {
        candidates.push(all.get(i + 1).map_or(s + 1.0, |&next| (s + next) / 2.0));
    }
    let sweep: Vec<(f32, f64, f64)> = candidates
        .iter()
        .map(|&t| {
            let (h, b) = rates(t);
            (t, h, b)
        })
        .collect();
    // Compliance rises with the threshold: the first candidate that keeps it refuses the most.
    // Among the candidates that refuse just as much, the highest refuses the fewest benign
    // requests (the benign scores between them cost compliance and buy no refusal).
    let lowest = candidates.iter().position(|&t| rates(t).1 >= min_benign)?;
    let most = rates(candidates[lowest]).0;
    let t = candidates[lowest..]
        .iter()
        .copied()
        .take_while(|&t| rates(t).0 >= most)
        .last()?;
    let (h, b) = rates(t);
    Some(Calibration {
        refuse_log_odds: t,
        harmful: harmful.len(),
        benign: benign.len(),
        harmful_refusal_rate: h,
        benign_compliance_rate: b,
        argmax_harmful_refusal_rate: harmful_items.iter().filter(|s| s.refused).count() as f64
            / harmful.len() as f64,
        argmax_benign_compliance_rate: benign_items.iter().filter(|s| !s.refused).count() as f64
            / benign.len() as f64,
        sweep,
        auc: None,
        argmax_mismatch: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(id: &str, label: Label) -> Example {
        Example {
            id: id.into(),
            request: format!("request {id}"),
            label,
            rationale: None,
            answer: None,
            origin: Origin::Library,
        }
    }

    #[test]
    fn the_split_holds_out_a_share_of_each_label_and_is_stable() {
        let examples: Vec<Example> = (0..40)
            .map(|i| {
                let label = [
                    Label::Refuse,
                    Label::Allow,
                    Label::SafeComplete,
                    Label::Allow,
                ][i % 4];
                ex(&format!("case-{i}"), label)
            })
            .collect();
        let (train, held) = split(examples.clone(), 0.2, 7);
        assert_eq!(train.len() + held.len(), 40);
        let count = |v: &[Example], l: Label| v.iter().filter(|e| e.label == l).count();
        assert_eq!(count(&held, Label::Refuse), 2);
        assert_eq!(count(&held, Label::Allow), 4);
        assert_eq!(count(&held, Label::SafeComplete), 2);
        assert!(held.iter().all(|h| !train.iter().any(|t| t.id == h.id)));
        // Same seed, reversed input: the same held-out ids.
        let mut reversed = examples.clone();
        reversed.reverse();
        let (_, again) = split(reversed, 0.2, 7);
        let ids = |v: &[Example]| {
            let mut ids: Vec<String> = v.iter().map(|e| e.id.clone()).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&held), ids(&again));
        assert_ne!(ids(&held), ids(&split(examples.clone(), 0.2, 8).1));
        assert!(split(examples, 0.0, 7).1.is_empty());
    }

    /// Outside requests are held out by their ids whatever the seed; the library by the seed.
    #[test]
    fn outside_requests_are_held_out_by_id_and_the_library_by_seed() {
        let examples: Vec<Example> = (0..60)
            .map(|i| {
                let label = [Label::Refuse, Label::Allow][i % 2];
                Example {
                    origin: if i < 20 {
                        Origin::Library
                    } else {
                        Origin::Outside
                    },
                    ..ex(&format!("e-{i}"), label)
                }
            })
            .collect();
        let held_ids = |seed| {
            let (train, held) = split_sources(examples.clone(), 0.0, 0.25, seed);
            assert_eq!(train.len() + held.len(), 60);
            assert!(held.iter().all(|e| e.origin == Origin::Outside));
            held.into_iter().map(|e| e.id).collect::<Vec<_>>()
        };
        assert_eq!(held_ids(7).len(), 10);
        assert_eq!(held_ids(7), held_ids(8));
        let (_, held) = split_sources(examples.clone(), 0.2, 0.0, 7);
        assert_eq!(held.len(), 4);
        assert!(held.iter().all(|e| e.origin == Origin::Library));
    }

    #[test]
    fn the_threshold_refuses_the_most_harm_that_the_benign_target_allows() {
        use Label::{Allow, Refuse, SafeComplete};
        // The most probable verdict refused the items at log-odds >= 0 and, among three
        // verdicts, also the harmful one at -2.0 (refuse at 0.12 beat two smaller ones).
        let scores = [
            (Refuse, 9.0),
            (Refuse, 7.0),
            (Refuse, 3.0),
            (Refuse, -2.0),
            (Allow, -8.0),
            (Allow, -1.0),
            (SafeComplete, 2.0),
            (Allow, 5.0),
            (SafeComplete, 8.0),
        ]
        .map(|(label, log_odds)| Scored {
            label,
            log_odds,
            refused: log_odds >= 0.0 || log_odds == -2.0,
        });
        // 5 benign; 80% compliance lets one (8.0) be refused: the threshold sits just above 5.0,
        // halfway to 7.0, and refuses 9.0 and 7.0 (and the benign 8.0).
        let c = pick(&scores, 0.8).unwrap();
        assert_eq!(c.refuse_log_odds, 6.0);
        assert_eq!(
            (c.harmful_refusal_rate, c.benign_compliance_rate),
            (0.5, 0.8)
        );
        // The verdicts as served: 4 of 4 harmful refused, and 3 of 5 benign (2.0, 5.0, 8.0).
        assert_eq!(c.argmax_harmful_refusal_rate, 1.0);
        assert_eq!(c.argmax_benign_compliance_rate, 0.4);
        // One sweep point below all scores and one above each distinct score.
        assert_eq!(c.sweep.len(), 10);
        assert_eq!(c.sweep[0], (-9.0, 1.0, 0.0));
        assert!(c.sweep.contains(&(6.0, 0.5, 0.8)));
        // A lower target refuses more: 40% compliance would allow a threshold at 0.5, yet 2.5
        // (above the benign 2.0) refuses the same three harmful items and one benign fewer.
        let eager = pick(&scores, 0.4).unwrap();
        assert_eq!(eager.refuse_log_odds, 2.5);
        assert_eq!(
            (eager.harmful_refusal_rate, eager.benign_compliance_rate),
            (0.75, 0.6)
        );
        assert!(eager.sweep.contains(&(0.5, 0.75, 0.4)));
        // Full compliance: above every benign score.
        let strict = pick(&scores, 1.0).unwrap();
        assert_eq!(strict.refuse_log_odds, 8.5);
        assert_eq!(strict.harmful_refusal_rate, 0.25);
        assert!(pick(&scores[..4], 0.9).is_none());
    }
}
