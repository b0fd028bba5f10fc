//! How a verdict is read from the model's probabilities of the three verdicts: the most probable
//! one, or, with a calibrated threshold, `refuse` exactly when its log-odds reach the threshold.
//! After a deliberation the verdict probabilities are sharp (the reasoning has all but decided),
//! so the trainer calibrates the threshold in log-odds on held-out cases and writes it into the
//! adapter's metadata; the gateway serves each adapter with the rule it was calibrated with.

use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use serde::{Deserialize, Serialize};

use super::Label;

/// GGUF metadata key of an adapter's calibrated refuse threshold (f32, log-odds).
pub const REFUSE_LOG_ODDS_KEY: &str = "cada.verdict.refuse_log_odds";

/// GGUF metadata keys of an adapter's probe band (f32, log-odds; see [`ProbeBand`]).
pub const PROBE_SERVE_BELOW_KEY: &str = "cada.probe.serve_below";
pub const PROBE_REFUSE_FROM_KEY: &str = "cada.probe.refuse_from";

/// Log-odds beyond this are treated as certain (f32 probabilities saturate near 1).
const LOG_ODDS_LIMIT: f32 = 30.0;

/// The rule that turns verdict probabilities into a verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct VerdictRule {
    /// `refuse` iff `ln(p / (1 - p))` of refuse is at least this; otherwise the more probable of
    /// allow and safe_complete. `None`: the most probable verdict.
    pub refuse_log_odds: Option<f32>,
    /// How `adaptive` reads the adapter's probe (the verdict right after `Reasoning:`, no
    /// reasoning), calibrated with the adapter; `None`: the adapter has no calibrated probe.
    pub probe: Option<ProbeBand>,
}

/// The probe's refuse log-odds split three ways: clearly benign requests are served directly,
/// clearly harmful ones refused, the uncertain middle deliberated. The trainer picks the bounds
/// on held-out cases (few harmful ones below `serve_below`, few benign ones from `refuse_from`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProbeBand {
    pub serve_below: f32,
    pub refuse_from: f32,
}

/// What `adaptive` does with a request after the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeCall {
    Serve,
    Deliberate,
    Refuse,
}

impl ProbeCall {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeCall::Serve => "serve",
            ProbeCall::Deliberate => "deliberate",
            ProbeCall::Refuse => "refuse",
        }
    }
}

impl ProbeBand {
    pub fn call(&self, refuse_log_odds: f32) -> ProbeCall {
        if refuse_log_odds < self.serve_below {
            ProbeCall::Serve
        } else if refuse_log_odds >= self.refuse_from {
            ProbeCall::Refuse
        } else {
            ProbeCall::Deliberate
        }
    }
}

/// `ln(p / (1 - p))`, finite for every probability.
pub fn log_odds(p: f32) -> f32 {
    let p = f64::from(p);
    let v = (p / (1.0 - p)).ln() as f32;
    if v.is_nan() {
        0.0
    } else {
        v.clamp(-LOG_ODDS_LIMIT, LOG_ODDS_LIMIT)
    }
}

impl VerdictRule {
    /// The verdict for normalised probabilities in [`Label::ALL`] order.
    pub fn pick(&self, p: [f32; 3]) -> Label {
        let best = |candidates: &[usize]| {
            candidates
                .iter()
                .copied()
                .fold(None::<usize>, |acc, i| match acc {
                    Some(j) if p[j] >= p[i] => Some(j),
                    _ => Some(i),
                })
                .map_or(Label::Allow, |i| Label::ALL[i])
        };
        match self.refuse_log_odds {
            None => best(&[0, 1, 2]),
            Some(t) if log_odds(p[1]) >= t => Label::Refuse,
            Some(_) => best(&[0, 2]),
        }
    }

    /// The rule recorded in an adapter GGUF's metadata (the default when it records none).
    pub fn from_adapter(path: &Path) -> Result<Self, String> {
        let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let content = Content::read(&mut file)
            .map_err(|e| format!("{} is not a GGUF file: {e}", path.display()))?;
        let f32_key = |key: &str| match content.metadata.get(key) {
            None => Ok(None),
            Some(Value::F32(v)) if v.is_finite() => Ok(Some(*v)),
            Some(other) => Err(format!(
                "{}: {key} must be a finite f32, found {other:?}",
                path.display()
            )),
        };
        let refuse_log_odds = f32_key(REFUSE_LOG_ODDS_KEY)?;
        let probe = match (
            f32_key(PROBE_SERVE_BELOW_KEY)?,
            f32_key(PROBE_REFUSE_FROM_KEY)?,
        ) {
            (Some(serve_below), Some(refuse_from)) if serve_below <= refuse_from => {
                Some(ProbeBand {
                    serve_below,
                    refuse_from,
                })
            }
            (None, None) => None,
            _ => {
                return Err(format!(
                    "{}: {PROBE_SERVE_BELOW_KEY} and {PROBE_REFUSE_FROM_KEY} come together, \
                     the first not above the second",
                    path.display()
                ))
            }
        };
        Ok(Self {
            refuse_log_odds,
            probe,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_threshold_the_most_probable_verdict_wins() {
        let rule = VerdictRule::default();
        assert_eq!(rule.pick([0.2, 0.5, 0.3]), Label::Refuse);
        assert_eq!(rule.pick([0.6, 0.3, 0.1]), Label::Allow);
        assert_eq!(rule.pick([0.1, 0.3, 0.6]), Label::SafeComplete);
    }

    #[test]
    fn a_threshold_decides_refuse_alone() {
        // ln(0.99 / 0.01) = 4.595
        let rule = VerdictRule {
            refuse_log_odds: Some(4.0),
            probe: None,
        };
        assert_eq!(rule.pick([0.005, 0.99, 0.005]), Label::Refuse);
        // A most probable refuse below the threshold falls to the better of the other two.
        assert_eq!(rule.pick([0.02, 0.9, 0.08]), Label::SafeComplete);
        assert_eq!(rule.pick([0.08, 0.9, 0.02]), Label::Allow);
        // A low threshold refuses what argmax would allow.
        let eager = VerdictRule {
            refuse_log_odds: Some(-2.0),
            probe: None,
        };
        assert_eq!(eager.pick([0.8, 0.15, 0.05]), Label::Refuse);
    }

    #[test]
    fn the_probe_band_serves_deliberates_or_refuses() {
        let band = ProbeBand {
            serve_below: -2.0,
            refuse_from: 3.0,
        };
        assert_eq!(band.call(-2.5), ProbeCall::Serve);
        assert_eq!(band.call(-2.0), ProbeCall::Deliberate);
        assert_eq!(band.call(2.9), ProbeCall::Deliberate);
        assert_eq!(band.call(3.0), ProbeCall::Refuse);
    }

    #[test]
    fn log_odds_stay_finite() {
        assert!((log_odds(0.5)).abs() < 1e-6);
        assert!((log_odds(0.99) - 4.59512).abs() < 1e-4);
        assert_eq!(log_odds(1.0), LOG_ODDS_LIMIT);
        assert_eq!(log_odds(0.0), -LOG_ODDS_LIMIT);
        assert_eq!(log_odds(f32::NAN), 0.0);
    }
}
