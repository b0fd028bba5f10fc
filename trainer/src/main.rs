//! `cada-trainer`: the case-augmented RL trainer's command line. This release ships the CLI
//! skeleton and registry access; the training commands arrive with the trainer issue.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cada_core::Registry;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cada-trainer",
    version,
    about = "Case-augmented RL trainer for cada"
)]
struct Cli {
    /// Model registry file.
    #[arg(
        long,
        env = "CADA_REGISTRY",
        default_value = "models/registry.toml",
        global = true
    )]
    registry: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the registry's models and whether their files are present and intact.
    Models {
        /// Also check each file's sha256.
        #[arg(long)]
        verify: bool,
    },
    /// Run case-augmented RL on collected cases (not available in this release).
    Train,
    /// Evaluate an adapter on the dev set (not available in this release).
    Evaluate,
    /// Export an adapter as a llama.cpp LoRA GGUF (not available in this release).
    Export,
}

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
    match cli.command {
        Command::Models { verify } => {
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
        Command::Train | Command::Evaluate | Command::Export => {
            eprintln!("this command is not available yet: the trainer ships the CLI and registry access only");
            Ok(ExitCode::from(2))
        }
    }
}
