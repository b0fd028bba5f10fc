//! The trainer's command line: registry listing, adapter export and rollback, bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The trainer on the model registry at `registry`.
fn trainer_on(registry: impl AsRef<Path>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cada-trainer"));
    c.arg("--registry").arg(registry.as_ref());
    c
}

/// The trainer on the repository's model registry.
fn trainer() -> Command {
    trainer_on(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/registry.toml"
    ))
}

/// A `trainer.toml` in `dir` that keeps the runs in `dir` too.
fn config_in(dir: &Path) -> PathBuf {
    let config = dir.join("trainer.toml");
    std::fs::write(&config, format!("runs_dir = {:?}\n", dir.join("runs"))).expect("config");
    config
}

#[test]
fn models_lists_and_verifies_the_registry() {
    let out = trainer()
        .args(["models", "--verify"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("smollm2-135m-instruct") && stdout.contains("all-minilm-l6-v2"),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains("verified")).count(),
        4,
        "{stdout}"
    );
}

#[test]
fn a_missing_registry_is_a_clear_failure() {
    let out = trainer_on("/nonexistent/registry.toml")
        .arg("models")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/registry.toml"));
}

/// `export` and `rollback` work on the adapter registry beside the model registry.
#[test]
fn export_and_rollback_use_the_adapter_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = dir.path().join("registry.toml");
    let bin = || trainer_on(&registry);
    let out_file = dir.path().join("out.gguf");
    let out = bin()
        .args(["export", "--out"])
        .arg(&out_file)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no adapter is promoted"));

    let adapters = cada_core::adapters::AdapterRegistry::beside(&registry);
    let src = dir.path().join("a.gguf");
    std::fs::write(&src, b"adapter bytes").expect("write");
    let entry = cada_core::adapters::AdapterEntry {
        version: "v1".into(),
        parent: None,
        file: String::new(),
        sha256: String::new(),
        base_model: "m".into(),
        data_hash: "d".into(),
        config: serde_json::json!({}),
        figures: cada_core::adapters::Figures {
            harmful_refusal_rate: 0.5,
            benign_compliance_rate: 0.9,
            dev_sha256: String::new(),
            policy_version: String::new(),
            utility: None,
            utility_base: None,
            mismatch: None,
            auc: None,
            outside: None,
        },
        created: 0,
    };
    adapters.promote(&src, entry).expect("promote");
    let out = bin()
        .args(["export", "--out"])
        .arg(&out_file)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&out_file).expect("exported"),
        b"adapter bytes"
    );

    let out = bin().arg("rollback").output().expect("runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("base model"));
    assert_eq!(adapters.read().expect("index").promoted, None);
}

#[test]
fn run_names_a_bad_configuration() {
    let out = trainer()
        .args(["run", "--config", "/nonexistent/trainer.toml"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/trainer.toml"));
}

/// `schedule --once` reports a failed check in its exit status, for timers and CronJobs.
#[test]
fn a_failed_scheduled_check_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_in(dir.path());
    let out = trainer()
        .args(["schedule", "--once", "--gateway", "http://127.0.0.1:9"])
        .arg("--config")
        .arg(&config)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot fetch cases"), "{stderr}");
    assert!(
        !dir.path().join("runs/trainer.lock").exists(),
        "the lock is released"
    );
}

/// `schedule --store` reads the labelled cases from the case store itself (here the gateway's
/// SQLite file) and counts only those labelled since the last run.
#[test]
fn a_scheduled_check_reads_the_case_store() {
    use cada_core::policy::Label;
    use cada_core::store::testing::{case, unit};
    use cada_core::store::{CaseStore, StoreConfig};

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("data/cases.sqlite");
    let mut store = CaseStore::open(&db, StoreConfig::default()).expect("store");
    for i in 0..3 {
        let id = store
            .log_case(case(&format!("chatcmpl-{i}"), unit(i), &["x"]))
            .expect("log")
            .id()
            .to_owned();
        if i < 2 {
            store
                .label_case(&id, Label::Allow, None, None)
                .expect("label");
        }
    }
    let config = config_in(dir.path());
    let out = trainer()
        .args(["schedule", "--once", "--min-new-cases", "5", "--store"])
        .arg(format!("sqlite://{}", db.display()))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 newly labelled cases, 5 needed: not training"),
        "{stderr}"
    );
    let out = trainer()
        .args(["schedule", "--once", "--store", "mysql://db/cada"])
        .arg("--config")
        .arg(&config)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("unknown store scheme"), "{stderr}");
}

/// One key's `over_refusal` on its own refused request is evidence, not a label: the scheduler
/// counts reviewed cases only; `--include-feedback` adds cases that a quorum of other keys
/// (`--feedback-quorum`, 2 by default) agree on, and the requester's own report never votes.
#[test]
fn a_single_feedback_does_not_become_training_data() {
    use cada_core::store::testing::{case, unit};
    use cada_core::store::{CaseStore, FeedbackLabel, NewFeedback, StoreConfig};

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("data/cases.sqlite");
    let mut store = CaseStore::open(&db, StoreConfig::default()).expect("store");
    // The testing record was refused; the feedback says it was an over-refusal.
    store
        .log_case(case("chatcmpl-refused", unit(3), &["x"]))
        .expect("log");
    let report = |store: &mut CaseStore, key: &str| {
        store
            .feedback(NewFeedback {
                response_id: "chatcmpl-refused".into(),
                label: FeedbackLabel::OverRefusal,
                comment: None,
                caller: Some(key.into()),
            })
            .expect("feedback");
    };
    // The testing record's request was made by the key named `requester`.
    report(&mut store, "requester");
    report(&mut store, "requester");
    drop(store);
    let config = config_in(dir.path());
    let check = |extra: &[&str]| {
        let out = trainer()
            .args(["schedule", "--once", "--min-new-cases", "5", "--store"])
            .arg(format!("sqlite://{}", db.display()))
            .args(extra)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    let reviewed_only = check(&[]);
    assert!(
        reviewed_only.contains("counting reviewed cases only")
            && reviewed_only.contains("0 newly labelled cases, 5 needed"),
        "{reviewed_only}"
    );
    let own_only = check(&["--include-feedback", "--feedback-quorum", "1"]);
    assert!(
        own_only.contains("0 newly labelled cases, 5 needed"),
        "{own_only}"
    );
    let mut store = CaseStore::open(&db, StoreConfig::default()).expect("store");
    report(&mut store, "alice");
    drop(store);
    let default_quorum = check(&["--include-feedback"]);
    assert!(
        default_quorum.contains("quorum of 2")
            && default_quorum.contains("0 newly labelled cases, 5 needed"),
        "{default_quorum}"
    );
    let one_other = check(&["--include-feedback", "--feedback-quorum", "1"]);
    assert!(
        one_other.contains("1 newly labelled cases, 5 needed"),
        "{one_other}"
    );
}

/// A run never trains on an evaluation prompt: a labelled file holding one of the outside
/// held-out requests stops the run before the model is loaded, naming the request.
#[test]
fn a_run_that_would_train_on_an_evaluation_prompt_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let held = root.join("configs/policy/outside/heldout.jsonl");
    let first = std::fs::read_to_string(&held)
        .expect("held-out set")
        .lines()
        .next()
        .expect("a held-out item")
        .to_owned();
    let labelled = dir.path().join("labelled.jsonl");
    std::fs::write(&labelled, format!("{first}\n")).expect("write");
    let config = dir.path().join("trainer.toml");
    let policy = root.join("configs/policy");
    std::fs::write(
        &config,
        format!(
            "policy_dir = {:?}\ndev = {:?}\nruns_dir = {:?}\nlabelled = [{:?}]\n\
             [calibrate]\ndata = {:?}\n[promote]\nutility = {:?}\noutside = {:?}\n",
            policy,
            policy.join("dev.jsonl"),
            dir.path().join("runs"),
            labelled,
            policy.join("calib.jsonl"),
            policy.join("utility.jsonl"),
            held,
        ),
    )
    .expect("config");
    let out = trainer()
        .args(["run", "--skip-eval", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 training requests are also prompts of") && stderr.contains("heldout"),
        "{stderr}"
    );
}
