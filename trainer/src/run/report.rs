//! The run report: `summary.json` (the outcome, machine-readable) and `report.md` (what a
//! reviewer reads: data, configuration, training curves in numbers, dev-set figures, decision).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::{RunOutcome, TrainConfig, TrainError};

pub fn write(
    run_dir: &Path,
    config: &TrainConfig,
    outcome: &RunOutcome,
    lines: &[Value],
) -> Result<(), TrainError> {
    let summary =
        serde_json::to_string_pretty(outcome).map_err(|e| TrainError::new("report", e))?;
    std::fs::write(run_dir.join("summary.json"), summary + "\n")
        .map_err(TrainError::io("report"))?;
    std::fs::write(run_dir.join("report.md"), markdown(config, outcome, lines))
        .map_err(TrainError::io("report"))
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Mean of a numeric field over the lines of a phase, in `buckets` consecutive slices.
fn curve(lines: &[Value], phase: &str, field: &str, buckets: usize) -> Vec<f64> {
    let values: Vec<f64> = lines
        .iter()
        .filter(|l| l["phase"] == phase)
        .filter_map(|l| l[field].as_f64())
        .collect();
    if values.is_empty() {
        return Vec::new();
    }
    let size = values.len().div_ceil(buckets.max(1));
    values
        .chunks(size)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect()
}

fn markdown(config: &TrainConfig, o: &RunOutcome, lines: &[Value]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Training run {}\n", o.run_id);
    let _ = writeln!(
        s,
        "- examples: {} (data sha256 `{}`)\n- training time: {:.0} s (budget {} min)\n- adapter: `{}`\n- decision: {}{}\n",
        o.examples,
        o.data_hash,
        o.train_seconds,
        config.budget_minutes,
        o.adapter.display(),
        o.decision,
        if o.promoted { " (promoted)" } else { "" }
    );
    if let (Some(c), Some(b)) = (&o.candidate, &o.baseline) {
        let _ = writeln!(s, "## Dev set (`trained` mode through the gateway)\n");
        let _ = writeln!(
            s,
            "| model | harmful refusal | benign compliance |\n|---|---|---|"
        );
        let _ = writeln!(
            s,
            "| baseline ({}) | {} | {} |",
            o.baseline_version.as_deref().unwrap_or("base model"),
            pct(b.harmful_refusal_rate),
            pct(b.benign_compliance_rate)
        );
        let _ = writeln!(
            s,
            "| candidate | {} | {} |\n",
            pct(c.harmful_refusal_rate),
            pct(c.benign_compliance_rate)
        );
    }
    let _ = writeln!(s, "## Curves (means over tenths of each phase)\n");
    for (phase, field) in [
        ("warm_start", "loss"),
        ("warm_start", "verdict_nll"),
        ("warm_start", "tokens_per_s"),
        ("grpo", "reward"),
        ("grpo", "reward_verdict"),
        ("grpo", "reward_consistency"),
        ("dpo", "loss"),
        ("dpo", "margin"),
    ] {
        let c = curve(lines, phase, field, 10);
        if !c.is_empty() {
            let shown: Vec<String> = c.iter().map(|v| format!("{v:.3}")).collect();
            let _ = writeln!(s, "- {phase} {field}: {}", shown.join(" → "));
        }
    }
    let _ = writeln!(
        s,
        "\nPer-step figures: `metrics.jsonl`; configuration: `config.toml`; DPO pairs: `pairs.jsonl`."
    );
    s
}
