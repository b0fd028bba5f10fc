//! The run report: `summary.json` (the outcome, machine-readable) and `report.md` (what a
//! reviewer reads: data, configuration, training curves in numbers, dev-set figures, decision).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::plot::{self, Chart, Series};
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
    plot::write_png(&run_dir.join("report.png"), &charts(outcome, lines))
        .map_err(TrainError::io("report plots"))?;
    std::fs::write(run_dir.join("report.md"), markdown(config, outcome, lines))
        .map_err(TrainError::io("report"))
}

/// (step, value) of a field (`a.b` reaches into objects) over the lines of a phase.
fn points(lines: &[Value], phase: &str, x: &str, field: &str) -> Vec<(f64, f64)> {
    lines
        .iter()
        .filter(|l| l["phase"] == phase)
        .filter_map(|l| {
            let y = field.split('.').fold(l, |v, k| &v[k]).as_f64()?;
            Some((l[x].as_f64()?, y))
        })
        .collect()
}

fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.into(),
        points,
    }
}

/// The report's charts: training curves, the GRPO rewards by component and KL, DPO, the
/// threshold sweep on the held-out cases, and the dev-set rates before and after.
fn charts(o: &RunOutcome, lines: &[Value]) -> Vec<Chart> {
    let chart = |title: &str, series: Vec<Series>| Chart {
        title: title.into(),
        series,
    };
    let grpo = |name: &str, field: &str| series(name, points(lines, "grpo", "grpo_step", field));
    let mut charts = vec![
        chart(
            "warm start loss by update",
            vec![series("loss", points(lines, "warm_start", "step", "loss"))],
        ),
        chart(
            "verdict nll by update",
            vec![
                series(
                    "after written rationales",
                    points(lines, "warm_start", "step", "verdict_nll"),
                ),
                series(
                    "after own reasoning",
                    points(lines, "own_reasoning", "step", "verdict_nll"),
                ),
            ],
        ),
        chart(
            "grpo reward by step",
            vec![
                grpo("total", "reward"),
                grpo("verdict", "reward_verdict"),
                grpo("consistency", "reward_consistency"),
                grpo("format", "reward_format"),
            ],
        ),
        chart(
            "grpo kl and loss by step",
            vec![grpo("kl", "update.kl"), grpo("loss", "update.loss")],
        ),
        chart(
            "dpo loss by update",
            vec![series("loss", points(lines, "dpo", "step", "loss"))],
        ),
    ];
    if let Some(c) = &o.calibration {
        let sweep = |f: fn(&(f32, f64, f64)) -> f64| {
            c.sweep.iter().map(|p| (f64::from(p.0), f(p))).collect()
        };
        charts.push(chart(
            "held-out rates by refuse threshold",
            vec![
                series("harmful refused", sweep(|p| p.1)),
                series("benign complied", sweep(|p| p.2)),
            ],
        ));
    }
    if let (Some(c), Some(b)) = (&o.candidate, &o.baseline) {
        charts.push(chart(
            "dev set: baseline (0) and candidate (1)",
            vec![
                series(
                    "harmful refused",
                    vec![(0.0, b.harmful_refusal_rate), (1.0, c.harmful_refusal_rate)],
                ),
                series(
                    "benign complied",
                    vec![
                        (0.0, b.benign_compliance_rate),
                        (1.0, c.benign_compliance_rate),
                    ],
                ),
            ],
        ));
    }
    charts
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// `-` for a figure that was not measured.
fn opt_pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), pct)
}

fn opt_num(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
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
    if let Some(c) = &o.calibration {
        let _ = writeln!(
            s,
            "## Refuse threshold (held-out training cases: {} harmful, {} benign)\n\n\
             Refuse when the log-odds of `refuse` reach **{:.2}** (written into the adapter). \
             AUC of p(refuse): {}; with the most probable verdict, {} of the answers after a \
             decision to answer were refusals.\n\n\
             | verdict rule | harmful refusal | benign compliance |\n|---|---|---|\n\
             | most probable verdict | {} | {} |\n| threshold | {} | {} |\n",
            c.harmful,
            c.benign,
            c.refuse_log_odds,
            opt_num(c.auc),
            opt_pct(c.argmax_mismatch),
            pct(c.argmax_harmful_refusal_rate),
            pct(c.argmax_benign_compliance_rate),
            pct(c.harmful_refusal_rate),
            pct(c.benign_compliance_rate)
        );
    }
    if let (Some(c), Some(b)) = (&o.candidate, &o.baseline) {
        let _ = writeln!(s, "## Dev set (`trained` mode through the gateway)\n");
        let _ = writeln!(
            s,
            "| model | harmful refusal | benign compliance | allowed, refused anyway | AUC of \
             p(refuse) |\n|---|---|---|---|---|"
        );
        let _ = writeln!(
            s,
            "| baseline ({}) | {} | {} | {} | {} |",
            o.baseline_version.as_deref().unwrap_or("base model"),
            pct(b.harmful_refusal_rate),
            pct(b.benign_compliance_rate),
            opt_pct(b.mismatch),
            opt_num(b.auc)
        );
        let _ = writeln!(
            s,
            "| candidate | {} | {} | {} | {} |\n",
            pct(c.harmful_refusal_rate),
            pct(c.benign_compliance_rate),
            opt_pct(c.mismatch),
            opt_num(c.auc)
        );
        if let Some(x) = &c.outside {
            let _ = writeln!(
                s,
                "## Held-out outside requests (`trained` mode, `eval-outside.json`)\n\n\
                 | harmful refusal | benign compliance | wrapped benign answered | allowed, refused \
                 anyway | AUC of p(refuse) |\n|---|---|---|---|---|\n| {} | {} | {} | {} | {} |\n",
                pct(x.harmful_refusal_rate),
                pct(x.benign_compliance_rate),
                opt_pct(x.wrapped_benign_compliance_rate),
                opt_pct(x.mismatch),
                opt_num(x.auc)
            );
        }
    }
    let _ = writeln!(s, "## Curves (means over tenths of each phase)\n");
    for (phase, field) in [
        ("warm_start", "loss"),
        ("warm_start", "verdict_nll"),
        ("warm_start", "tokens_per_s"),
        ("own_reasoning", "verdict_nll"),
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
        "\nPlots: `report.png`. Per-step figures: `metrics.jsonl`; configuration: `config.toml`; \
         rollouts: `rollouts.jsonl`; DPO pairs: `pairs.jsonl`."
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::calibrate::Calibration;
    use cada_core::adapters::Figures;
    use serde_json::json;

    fn figures(h: f64, b: f64) -> Figures {
        Figures {
            harmful_refusal_rate: h,
            benign_compliance_rate: b,
            dev_sha256: "d".into(),
            policy_version: "p".into(),
            utility: None,
            utility_base: None,
            mismatch: None,
            auc: None,
            outside: None,
        }
    }

    #[test]
    fn the_report_has_its_tables_and_plots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outcome = RunOutcome {
            run_id: "run-1".into(),
            run_dir: dir.path().to_path_buf(),
            adapter: dir.path().join("adapter.gguf"),
            data_hash: "h".into(),
            examples: 10,
            train_seconds: 12.0,
            candidate: Some(Figures {
                mismatch: Some(0.01),
                auc: Some(0.95),
                outside: Some(cada_core::adapters::OutsideFigures {
                    data_sha256: "o".into(),
                    harmful_refusal_rate: 0.8,
                    benign_compliance_rate: 0.7,
                    wrapped_benign_compliance_rate: Some(0.5),
                    mismatch: Some(0.04),
                    auc: Some(0.81),
                }),
                ..figures(0.75, 0.9)
            }),
            baseline: Some(figures(0.4, 0.95)),
            baseline_version: None,
            calibration: Some(Calibration {
                refuse_log_odds: 6.5,
                harmful: 4,
                benign: 6,
                harmful_refusal_rate: 0.75,
                benign_compliance_rate: 1.0,
                argmax_harmful_refusal_rate: 1.0,
                argmax_benign_compliance_rate: 0.5,
                sweep: vec![(-1.0, 1.0, 0.0), (6.5, 0.75, 1.0)],
                auc: Some(0.9),
                argmax_mismatch: Some(0.0),
            }),
            promoted: true,
            decision: "passes".into(),
        };
        let lines: Vec<Value> = (1..=4)
            .map(|i| json!({"phase": "warm_start", "step": i, "loss": 4.0 / f64::from(i)}))
            .chain([
                json!({"phase": "grpo", "step": 5, "grpo_step": 0, "reward": 1.2,
                           "update": {"kl": 0.1, "loss": -0.2}}),
            ])
            .collect();
        write(dir.path(), &TrainConfig::default(), &outcome, &lines).expect("report");
        let md = std::fs::read_to_string(dir.path().join("report.md")).expect("md");
        assert!(
            md.contains("**6.50**") && md.contains("| threshold | 75.0% | 100.0% |"),
            "{md}"
        );
        assert!(md.contains("AUC of p(refuse): 0.900"), "{md}");
        assert!(
            md.contains("| candidate | 75.0% | 90.0% | 1.0% | 0.950 |"),
            "{md}"
        );
        assert!(
            md.contains("| 80.0% | 70.0% | 50.0% | 4.0% | 0.810 |"),
            "{md}"
        );
        let png = std::fs::read(dir.path().join("report.png")).expect("png");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let summary: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).expect("json"))
                .expect("summary");
        assert_eq!(summary["calibration"]["refuse_log_odds"], 6.5);
        // The nested GRPO fields reach the plots.
        assert_eq!(
            points(&lines, "grpo", "grpo_step", "update.kl"),
            vec![(0.0, 0.1)]
        );
    }
}
