//! The report as a compact plain-text table for the terminal; the JSON file has the details.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cada_core::policy::Label;

use super::report::{Cost, Group, Report};

/// Renders the headline figures, the cost split, the confusion matrix and the per-category and
/// per-kind rates. `-` marks a figure with nothing to divide by.
pub fn render(r: &Report) -> String {
    let f = &r.figures;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model {} at {}, mode {}, {} items, {} errors, {:.1} s",
        r.model,
        r.base_url,
        r.served_mode
            .as_deref()
            .or(r.mode.as_deref())
            .unwrap_or("(not sent)"),
        f.n,
        f.errors,
        r.duration_secs
    );
    let c = &f.counts;
    let _ = writeln!(
        s,
        "harmful refusal rate    {:>6}  ({}/{})",
        rate(f.harmful_refusal_rate),
        c.harmful_refused,
        c.harmful
    );
    let _ = writeln!(
        s,
        "benign compliance rate  {:>6}  ({}/{})",
        rate(f.benign_compliance_rate),
        c.benign_complied,
        c.benign
    );
    if f.utility.n > 0 {
        let _ = writeln!(
            s,
            "utility (correct)       {:>6}  ({}/{})",
            rate(f.utility.rate),
            f.utility.correct,
            f.utility.n
        );
    }
    let m = &f.mismatch;
    let _ = writeln!(
        s,
        "allowed, refused anyway {:>6}  ({}/{} answers after a decision to answer)",
        rate(m.rate),
        m.refused_anyway,
        m.helped
    );
    let sep = &f.separation;
    if let Some(auc) = sep.auc {
        let _ = writeln!(
            s,
            "AUC of p(refuse)        {auc:>6.3}  ({} harmful, {} benign with a probability)",
            sep.harmful, sep.benign
        );
    }
    let v = &f.verdicts;
    let _ = writeln!(
        s,
        "verdict accuracy        {:>6}  ({} with a verdict, {} disagree with the detector)",
        rate(v.accuracy),
        v.judged,
        v.detector_disagreements
    );

    let _ = writeln!(
        s,
        "\n{:<8} {:>5} {:>11} {:>10} {:>9} {:>8} {:>8}",
        "cost", "n", "completion", "reasoning", "ms mean", "p50", "p95"
    );
    cost_row(&mut s, "all", &f.cost.all);
    cost_row(&mut s, "benign", &f.cost.benign);

    if v.judged > 0 {
        let _ = write!(s, "\n{:<16}", "label \\ verdict");
        for l in Label::ALL {
            let _ = write!(s, " {:>13}", l.as_str());
        }
        s.push('\n');
        for (label, row) in &v.confusion {
            let _ = write!(s, "{:<16}", label.as_str());
            for n in row.values() {
                let _ = write!(s, " {n:>13}");
            }
            s.push('\n');
        }
    }

    group_rows(&mut s, "category", &f.by_category);
    group_rows(&mut s, "kind", &f.by_kind);
    s
}

fn cost_row(s: &mut String, name: &str, c: &Cost) {
    let _ = writeln!(
        s,
        "{name:<8} {:>5} {:>11} {:>10} {:>9} {:>8} {:>8}",
        c.n,
        number(c.mean_completion_tokens, 1),
        number(c.mean_reasoning_tokens, 1),
        number(c.latency_ms.mean, 0),
        number(c.latency_ms.p50, 0),
        number(c.latency_ms.p95, 0)
    );
}

fn group_rows(s: &mut String, title: &str, groups: &BTreeMap<String, Group>) {
    let width = groups
        .keys()
        .map(|k| k.chars().count())
        .chain([title.len()])
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        s,
        "\n{title:<width$} {:>5} {:>6} {:>8} {:>8}",
        "count", "errors", "harmful", "benign"
    );
    for (name, g) in groups {
        let _ = writeln!(
            s,
            "{name:<width$} {:>5} {:>6} {:>8} {:>8}",
            g.count,
            g.errors,
            rate(g.harmful_refusal_rate),
            rate(g.benign_compliance_rate)
        );
    }
}

fn rate(r: Option<f64>) -> String {
    number(r, 3)
}

fn number(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "-".to_owned(), |x| format!("{x:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::super::report::figures;
    use super::*;

    #[test]
    fn empty_figures_render_as_dashes() {
        let report = Report {
            model: "m".into(),
            base_url: "http://h/v1".into(),
            mode: None,
            served_mode: None,
            policy_version: None,
            include_reasoning: false,
            data_file: "d.jsonl".into(),
            data_sha256: String::new(),
            started: String::new(),
            finished: String::new(),
            duration_secs: 0.0,
            figures: figures(&[]),
            items: Vec::new(),
        };
        let text = render(&report);
        assert!(
            text.starts_with("model m at http://h/v1, mode (not sent), 0 items"),
            "{text}"
        );
        assert!(
            text.contains("harmful refusal rate         -  (0/0)"),
            "{text}"
        );
        assert!(!text.contains("label \\ verdict"), "{text}");
    }
}
