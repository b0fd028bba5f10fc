//! The probe band of `adaptive` over a trained adapter. The probe is the verdict read right after
//! `Reasoning:` with no reasoning, one prefill of the bare request (trained with
//! `warm_start.probe`); on the calibration prompts its refuse log-odds pick two bounds: below
//! the first a request is served directly, from the second it is refused, in between the
//! adapter deliberates as in `trained` mode.

use cada_core::policy::protocol::{verdict_text, VERDICT_PREFIX};
use cada_core::policy::{log_odds, DevItem, Label, ProbeBand};
use cada_core::{Engine, EngineError};
use serde::Serialize;

use crate::chain::trained_prompt;

/// The picked band and what it does on the calibration prompts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeCalibration {
    pub band: ProbeBand,
    pub harmful: usize,
    pub benign: usize,
    /// Harmful prompts the band would serve without deliberating.
    pub harmful_served: usize,
    /// Benign prompts the band would refuse without deliberating.
    pub benign_refused: usize,
    /// Benign prompts served directly: the share that pays `off`'s latency.
    pub benign_served: usize,
    /// Prompts (of both kinds) left to deliberation.
    pub deliberated: usize,
}

/// The probe's refuse log-odds for each item, with its label, as the gateway computes it.
pub fn scores(engine: &Engine, items: &[DevItem]) -> Result<Vec<(Label, f32)>, EngineError> {
    let candidates: Vec<_> = Label::ALL
        .iter()
        .map(|l| engine.tokens(&verdict_text(*l)))
        .collect();
    let refuse = Label::ALL
        .iter()
        .position(|l| *l == Label::Refuse)
        .unwrap_or(1);
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let mut prompt = trained_prompt(engine, &item.prompt)?;
        prompt.extend(&engine.tokens(VERDICT_PREFIX));
        let mut session = engine.session()?;
        let raw = session.score_blocking(prompt, &candidates, true)?;
        let total: f32 = raw.iter().sum();
        let p = if total > 0.0 {
            raw[refuse] / total
        } else {
            1.0 / 3.0
        };
        out.push((item.label, log_odds(p)));
    }
    Ok(out)
}

/// The widest direct-serving band that serves at most `max_harmful_served` of the harmful
/// prompts, and the lowest refusing bound that refuses at most `max_benign_refused` of the
/// benign ones; `None` without prompts of both kinds.
pub fn pick(
    scores: &[(Label, f32)],
    max_harmful_served: f64,
    max_benign_refused: f64,
) -> Option<ProbeCalibration> {
    let mut harmful: Vec<f32> = scores
        .iter()
        .filter(|(l, _)| l.is_harmful())
        .map(|s| s.1)
        .collect();
    let mut benign: Vec<f32> = scores
        .iter()
        .filter(|(l, _)| !l.is_harmful())
        .map(|s| s.1)
        .collect();
    if harmful.is_empty() || benign.is_empty() {
        return None;
    }
    harmful.sort_by(f32::total_cmp);
    benign.sort_by(|a, b| b.total_cmp(a));
    // Served: strictly below the (k+1)-th lowest harmful score, so at most k harmful ones.
    let k = allowed(max_harmful_served, harmful.len());
    let serve_below = harmful[k.min(harmful.len() - 1)];
    // Refused: strictly above the (m+1)-th highest benign score, so at most m benign ones.
    let m = allowed(max_benign_refused, benign.len());
    let refuse_from = if m >= benign.len() {
        f32::MIN
    } else {
        next_up(benign[m])
    };
    let band = ProbeBand {
        serve_below,
        refuse_from: refuse_from.max(serve_below),
    };
    let count = |xs: &[f32], f: &dyn Fn(f32) -> bool| xs.iter().filter(|x| f(**x)).count();
    let serves = |x: f32| x < band.serve_below;
    let refuses = |x: f32| x >= band.refuse_from;
    let benign_served = count(&benign, &serves);
    let benign_refused = count(&benign, &refuses);
    let harmful_served = count(&harmful, &serves);
    let harmful_refused = count(&harmful, &refuses);
    Some(ProbeCalibration {
        band,
        harmful: harmful.len(),
        benign: benign.len(),
        harmful_served,
        benign_refused,
        benign_served,
        deliberated: scores.len()
            - benign_served
            - benign_refused
            - harmful_served
            - harmful_refused,
    })
}

/// How many of `n` a share allows (rounded down).
fn allowed(share: f64, n: usize) -> usize {
    (share * n as f64 + 1e-9).floor() as usize
}

/// The next f32 above `x` (a bound just above a score).
fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let bits = x.to_bits();
    f32::from_bits(if x > 0.0 { bits + 1 } else { bits - 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(harmful: &[f32], benign: &[f32]) -> Vec<(Label, f32)> {
        harmful
            .iter()
            .map(|s| (Label::Refuse, *s))
            .chain(benign.iter().map(|s| (Label::Allow, *s)))
            .collect()
    }

    #[test]
    fn the_band_keeps_the_allowed_errors() {
        // 10 harmful, 10 benign; a 10% allowance is one of each.
        let harmful = [-5.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        let benign = [-8.0, -7.0, -6.0, -5.5, -4.0, -3.0, -2.0, -0.5, 0.5, 6.5];
        let c = pick(&labelled(&harmful, &benign), 0.1, 0.1).unwrap();
        assert_eq!(c.band.serve_below, -1.0);
        assert!(c.band.refuse_from > 0.5 && c.band.refuse_from < 0.51);
        assert_eq!((c.harmful_served, c.benign_refused), (1, 1));
        assert_eq!(c.benign_served, 7);
        // Harmful -1 and 0, benign -0.5 and 0.5: -1 <= x < refuse_from.
        assert_eq!(c.deliberated, 4);
    }

    #[test]
    fn no_allowance_means_no_harmful_served_and_no_benign_refused() {
        let harmful = [-1.0, 2.0, 3.0];
        let benign = [-3.0, -2.0, 2.5];
        let c = pick(&labelled(&harmful, &benign), 0.0, 0.0).unwrap();
        assert_eq!((c.harmful_served, c.benign_refused), (0, 0));
        assert_eq!(c.band.serve_below, -1.0);
        assert!(c.band.refuse_from > 2.5);
    }

    #[test]
    fn overlapping_bounds_collapse_to_serving_or_refusing() {
        // Perfectly separated: nothing is left to deliberate.
        let c = pick(&labelled(&[5.0, 6.0], &[-6.0, -5.0]), 0.0, 0.0).unwrap();
        assert_eq!(c.band.serve_below, 5.0);
        assert_eq!(c.band.refuse_from, 5.0);
        assert_eq!(c.deliberated, 0);
    }

    #[test]
    fn both_kinds_are_needed() {
        assert_eq!(pick(&labelled(&[1.0], &[]), 0.1, 0.1), None);
    }
}
