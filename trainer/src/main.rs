//! `cada-trainer`: the case-augmented RL trainer's command line. This release ships the CLI
//! skeleton, registry access and the safety evaluation (`eval`); the training commands arrive
//! with the trainer issue.

use std::process::ExitCode;

use anyhow::Context;
use cada_core::Registry;
use clap::Parser;

use cada_trainer::cli::{Cli, Command};
use cada_trainer::eval;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Models { verify } => {
            let verify = *verify;
            let registry = Registry::load(&cli.registry).context("loading the registry")?;
            let mut healthy = true;
            for m in &registry.models {
                for f in &m.files {
                    let path = registry.file_path(f);
                    let state = match (path.is_file(), verify) {
                        (false, _) => "missing",
                        (true, false) => "present",
                        (true, true) => match cada_core::registry::sha256_file(&path) {
                            Ok(d) if d.eq_ignore_ascii_case(&f.sha256) => "verified",
                            Ok(_) => "CHECKSUM MISMATCH",
                            Err(_) => "unreadable",
                        },
                    };
                    healthy &= matches!(state, "present" | "verified");
                    println!(
                        "{:<28} {:<10} {:<18} {}",
                        m.id,
                        m.kind.to_string(),
                        state,
                        f.path
                    );
                }
            }
            Ok(if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Eval(args) => eval::run(args),
        Command::Train | Command::Export => {
            eprintln!("this command is not available yet: the trainer ships the CLI, registry access and `eval` only");
            Ok(ExitCode::from(2))
        }
    }
}
