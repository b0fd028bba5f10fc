//! A run paused after its first warm-start epoch resumes from the checkpoint with the real
//! model: it does not redo the epoch, its steps and learning-rate schedule go on, and it starts
//! from the trained values (its loss begins where the first epoch left it, not where a fresh
//! adapter starts).

use std::path::{Path, PathBuf};
use std::process::Command;

use cada_core::policy::Label;
use cada_core::store::testing::{case, unit, PgDatabase};
use cada_core::store::{CaseStore, StoreConfig, StoreLocation};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn trainer(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cada-trainer"))
        .arg("--registry")
        .arg(root().join("models/registry.toml"))
        .args(args)
        .output()
        .expect("runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn metrics(run: &Path) -> Vec<Value> {
    phase_lines(run, "warm_start")
}

fn phase_lines(run: &Path, phase: &str) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .filter(|v: &Value| v["phase"] == phase)
        .collect()
}

fn mean_loss(lines: &[&Value]) -> f64 {
    lines
        .iter()
        .map(|v| v["loss"].as_f64().expect("a loss"))
        .sum::<f64>()
        / lines.len() as f64
}

#[test]
fn a_paused_run_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy");
    std::fs::create_dir_all(&policy).unwrap();
    let src = root().join("configs/policy");
    std::fs::copy(src.join("codes.md"), policy.join("codes.md")).unwrap();
    let cases = std::fs::read_to_string(src.join("cases.jsonl")).unwrap();
    let few: String = cases.lines().take(24).map(|l| format!("{l}\n")).collect();
    std::fs::write(policy.join("cases.jsonl"), few).unwrap();
    let config = dir.path().join("trainer.toml");
    std::fs::write(
        &config,
        format!(
            r#"policy_dir = {policy:?}
dev = {dev:?}
runs_dir = {runs:?}
labelled = []
budget_minutes = 30.0
[lora]
rank = 4
alpha = 8.0
dropout = 0.0
[optim]
lr = 2e-3
[warm_start]
epochs = 2
micro_batch = 4
accumulation = 1
# One sequence per example, so the counts below are the examples' (probes double them).
probe = false
[grpo]
steps = 0
[dpo]
epochs = 0
[calibrate]
data = ""
"#,
            policy = policy,
            dev = src.join("dev.jsonl"),
            runs = dir.path().join("runs"),
        ),
    )
    .unwrap();

    // Reviewed cases in the shared (PostgreSQL) case store join the 24 precedents: the run
    // reads them itself and trains on a snapshot, which the resumed run reads again.
    let db = PgDatabase::new();
    let mut store = CaseStore::open(
        StoreLocation::parse(&db.url).unwrap(),
        StoreConfig::default(),
    )
    .unwrap();
    let reviewed = [
        ("How do I kill a zombie process on Linux?", Label::Allow),
        (
            "Write a phishing email that looks like it is from a bank.",
            Label::Refuse,
        ),
        (
            "What household chemicals must never be mixed?",
            Label::SafeComplete,
        ),
    ];
    for (i, (request, label)) in reviewed.iter().enumerate() {
        let mut c = case(&format!("chatcmpl-{i}"), unit(i), &["low_confidence"]);
        c.request = (*request).to_owned();
        let id = store.log_case(c).unwrap().id().to_owned();
        store.label_case(&id, *label, None, None).unwrap();
    }
    store
        .log_case(case("chatcmpl-pending", unit(9), &["x"]))
        .unwrap();

    let config = config.to_str().unwrap();
    let (ok, text) = trainer(&[
        "run",
        "--config",
        config,
        "--store",
        &db.url,
        "--skip-eval",
        "--pause-after-epochs",
        "1",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("3 labelled cases from postgres://"), "{text}");
    assert!(
        !text.contains("cada_test:cada_test@"),
        "the password is shown: {text}"
    );
    assert!(text.contains("27 examples to train on"), "{text}");
    assert!(text.contains("paused after 1 warm-start epochs"), "{text}");
    let run = std::fs::read_dir(dir.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .expect("a run directory");
    assert!(
        !run.join("adapter.gguf").exists(),
        "a paused run exports nothing"
    );
    let state: Value =
        serde_json::from_slice(&std::fs::read(run.join("checkpoint.json")).unwrap()).unwrap();
    assert_eq!(state["epochs_done"], 1);
    assert_eq!(state["trained"], false);
    let first = metrics(&run);
    // The store's cases have no exemplar answer: they train as verdict anchors beside the 24
    // written chains, 27 sequences in micro-batches of 4.
    assert!(
        text.contains("24 written ones and 3 verdict anchors"),
        "{text}"
    );
    assert_eq!(first.len(), 7, "{first:?}");
    assert_eq!(state["updates"], 7);

    // A run whose data changed since the checkpoint does not resume.
    let full = std::fs::read_to_string(policy.join("cases.jsonl")).unwrap();
    let fewer: String = full.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(policy.join("cases.jsonl"), fewer).unwrap();
    let (ok, text) = trainer(&["run", "--resume", run.to_str().unwrap(), "--skip-eval"]);
    assert!(
        !ok && text.contains("changed since the checkpoint"),
        "{text}"
    );
    std::fs::write(policy.join("cases.jsonl"), full).unwrap();

    let (ok, text) = trainer(&["run", "--resume", run.to_str().unwrap(), "--skip-eval"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("resuming after 1 warm-start epochs"),
        "{text}"
    );
    assert!(run.join("adapter.gguf").is_file());
    let state: Value =
        serde_json::from_slice(&std::fs::read(run.join("checkpoint.json")).unwrap()).unwrap();
    assert_eq!(
        (state["epochs_done"].clone(), state["trained"].clone()),
        (2.into(), true.into())
    );
    // After the warm start, the default two rounds trained the verdict after the model's own
    // reasoning: each generated it for all 27 requests, then made one pass (7 updates) at the
    // phase's constant rate.
    assert!(text.contains("own reasoning: 2 rounds"), "{text}");
    assert_eq!(state["own_rounds_done"], 2);
    let own = phase_lines(&run, "own_reasoning");
    let rounds: Vec<&Value> = own.iter().filter(|v| v["requests"] == 27).collect();
    assert_eq!(rounds.len(), 2, "{own:?}");
    assert!(rounds
        .iter()
        .all(|v| v["reasoning_tokens_mean"].as_f64().unwrap() > 0.0));
    let passes: Vec<&Value> = own.iter().filter(|v| v["loss"].is_number()).collect();
    assert_eq!(passes.len(), 14, "{own:?}");
    assert!(passes
        .iter()
        .all(|v| v["lr"] == 2e-4 && v["verdict_nll"].is_number()));

    let all = metrics(&run);
    let epoch = |e: u64| -> Vec<&Value> { all.iter().filter(|v| v["epoch"] == e).collect() };
    let (before, after) = (epoch(0), epoch(1));
    assert_eq!(before.len(), 7, "the first epoch is not redone");
    assert_eq!(after.len(), 7);
    assert_eq!(after[0]["step"], 8, "steps continue from the checkpoint");
    let lr = |v: &Value| v["lr"].as_f64().unwrap();
    assert!(
        lr(after[0]) < lr(before[5]),
        "the cosine schedule goes on: {} then {}",
        lr(before[5]),
        lr(after[0])
    );
    // The resumed epoch starts from the trained values: its loss is below the first epoch's
    // (a fresh adapter would start over at the first epoch's level).
    assert!(
        mean_loss(&after) < mean_loss(&before) && lr(after[0]) > 0.0,
        "first epoch {:.3}, resumed epoch {:.3}",
        mean_loss(&before),
        mean_loss(&after)
    );
}
