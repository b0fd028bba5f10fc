//! The trainer's command line: registry listing and the commands not available yet.

use std::process::Command;

fn trainer() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cada-trainer"));
    c.arg("--registry").arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/registry.toml"
    ));
    c
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
    let out = Command::new(env!("CARGO_BIN_EXE_cada-trainer"))
        .args(["--registry", "/nonexistent/registry.toml", "models"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/registry.toml"));
}

#[test]
fn unavailable_commands_say_so() {
    let out = trainer().arg("train").output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not available yet"));
}
