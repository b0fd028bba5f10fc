//! The promotion gate's measurement on the real model: one in-process gateway answers the same
//! utility questions in `trained` and in `off` (its base weights), and the share kept is counted
//! against what the base model answered on this machine.

mod common;

use cada_trainer::run::{measure_utility, GateRun};

#[test]
fn the_gate_measures_the_base_model_beside_the_candidate_on_one_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = common::root();
    // Three utility questions; the first ("capital of France") the base model answers.
    let questions: Vec<String> = std::fs::read_to_string(root.join("configs/policy/utility.jsonl"))
        .expect("utility set")
        .lines()
        .take(3)
        .map(str::to_owned)
        .collect();
    let data = dir.path().join("utility.jsonl");
    std::fs::write(&data, questions.join("\n") + "\n").expect("write");
    let run = GateRun {
        registry: root.join("models/registry.toml"),
        model: String::new(),
        adapter: None,
        policy_dir: root.join("configs/policy"),
        dev: data,
        data_dir: dir.path().join("gate"),
        threads: 0,
        concurrency: 2,
        max_tokens: 32,
        limit: None,
    };
    let u = measure_utility(&run).expect("gate evaluation");
    let (trained, off) = (&u.candidate, &u.base);
    assert_eq!(trained.served_mode.as_deref(), Some("trained"));
    assert_eq!(off.served_mode.as_deref(), Some("off"));
    assert_eq!((trained.items.len(), off.items.len()), (3, 3));
    assert_eq!(
        off.items[0].correct,
        Some(true),
        "{:?}",
        off.items[0].answer
    );
    // Kept: of the questions `off` answered, those `trained` answered too.
    let both = trained
        .items
        .iter()
        .filter(|t| t.correct == Some(true))
        .filter(|t| {
            off.items
                .iter()
                .any(|o| o.id == t.id && o.correct == Some(true))
        })
        .count();
    assert_eq!(u.kept.n, off.figures.utility.correct);
    assert_eq!(u.kept.correct, both);
}
