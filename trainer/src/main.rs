//! `cada-trainer`: the case-augmented RL trainer's command line, a thin layer over the
//! `cada_trainer` library: `run` (train, evaluate, promote), `schedule`, `eval`, `export`,
//! `rollback` and `models`.

use std::process::ExitCode;

use anyhow::Context;
use cada_core::Registry;
use clap::Parser;

use cada_core::adapters::AdapterRegistry;
use cada_core::store::StoreLocation;
use cada_trainer::cli::{Cli, Command, RunArgs, ScheduleArgs};
use cada_trainer::eval;
use cada_trainer::run::{self, RunOptions, TrainConfig};
use cada_trainer::schedule::{self, CaseSource, ScheduleState};

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
        Command::Run(args) => {
            let mut config = train_config(args)?;
            if let Some(store) = &args.store {
                let location = StoreLocation::parse(store)?;
                let cases = schedule::export_from_store(&location, None, args.feedback())
                    .map_err(anyhow::Error::msg)?;
                let started = cada_core::adapters::now() as i64;
                std::fs::create_dir_all(&config.runs_dir)
                    .with_context(|| format!("creating {}", config.runs_dir.display()))?;
                let file = config.runs_dir.join(format!("cases-{started}.jsonl"));
                std::fs::write(&file, &cases)
                    .with_context(|| format!("writing {}", file.display()))?;
                eprintln!(
                    "{} labelled cases from {location} -> {}",
                    schedule::count_lines(&cases),
                    file.display()
                );
                config.extra_data.push(file);
            }
            let opts = RunOptions {
                registry: cli.registry.clone(),
                promote: !args.no_promote,
                skip_eval: args.skip_eval,
                resume: args.resume.clone(),
                pause_after_epochs: args.pause_after_epochs,
            };
            let outcome = run::run(&config, &opts)?;
            println!("{}", serde_json::to_string_pretty(&outcome)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback { to } => {
            let index = AdapterRegistry::beside(&cli.registry);
            match index.rollback(to.as_deref())? {
                Some(v) => println!("serving adapter {v}"),
                None => println!("serving the base model without an adapter"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { version, out } => {
            let index = AdapterRegistry::beside(&cli.registry);
            let wanted = match version {
                Some(v) => v.clone(),
                None => index
                    .read()?
                    .promoted
                    .context("no adapter is promoted; name one with --version")?,
            };
            let entry = index
                .read()?
                .versions
                .into_iter()
                .find(|e| e.version == wanted)
                .with_context(|| format!("no adapter version '{wanted}' in the registry"))?;
            std::fs::copy(index.dir.join(&entry.file), out)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{} -> {}", entry.version, out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Schedule(args) => schedule(cli, args),
    }
}

/// Loads the run configuration with the command line's overrides.
fn train_config(args: &RunArgs) -> anyhow::Result<TrainConfig> {
    // A resumed run goes on with the configuration it recorded.
    let path = match &args.resume {
        Some(dir) => dir.join("config.toml"),
        None => args.config.clone(),
    };
    let mut config = TrainConfig::from_file(&path)?;
    if let Some(m) = args.budget_minutes {
        config.budget_minutes = m;
    }
    config.extra_data.extend(args.data.iter().cloned());
    Ok(config)
}

fn schedule(cli: &Cli, args: &ScheduleArgs) -> anyhow::Result<ExitCode> {
    let config = train_config(&args.run)?;
    std::fs::create_dir_all(&config.runs_dir)
        .with_context(|| format!("creating {}", config.runs_dir.display()))?;
    let source = match (&args.run.store, &args.gateway) {
        (Some(store), _) => CaseSource::Store(StoreLocation::parse(store)?),
        (None, Some(url)) => CaseSource::Gateway {
            url: url.clone(),
            admin_key: args.admin_key.clone(),
        },
        (None, None) => anyhow::bail!("schedule needs --gateway URL or --store URL"),
    };
    let feedback = args.run.feedback();
    match feedback {
        Some(q) => eprintln!(
            "counting reviewed cases and cases a quorum of {q} independent keys' feedback \
             agrees on (--include-feedback: unreviewed feedback becomes training data)"
        ),
        None => eprintln!(
            "counting reviewed cases only (feedback is evidence for review; --include-feedback \
             also counts cases independent keys' feedback agrees on)"
        ),
    }
    let state_path = config.runs_dir.join("schedule.json");
    let lock_path = config.runs_dir.join("trainer.lock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    loop {
        // With --once, the exit status tells a timer or CronJob whether this check failed.
        let mut failed = false;
        let state = ScheduleState::read(&state_path);
        let started = cada_core::adapters::now() as i64;
        match schedule::RunLock::acquire(&lock_path) {
            Err(e) => {
                eprintln!("skipping this check: {e}");
                failed = matches!(e, schedule::LockError::Io { .. });
            }
            Ok(lock) => {
                let new = source.fetch(&rt, state.last_run, feedback);
                match new {
                    Err(e) => {
                        eprintln!("cannot fetch cases: {e}");
                        failed = true;
                    }
                    Ok(new) if schedule::count_lines(&new) < args.min_new_cases => eprintln!(
                        "{} newly labelled cases, {} needed: not training",
                        schedule::count_lines(&new),
                        args.min_new_cases
                    ),
                    Ok(_) => {
                        let all = source
                            .fetch(&rt, None, feedback)
                            .map_err(anyhow::Error::msg)?;
                        let file = config.runs_dir.join(format!("cases-{started}.jsonl"));
                        std::fs::write(&file, &all)?;
                        let mut run_config = config.clone();
                        run_config.extra_data.push(file);
                        let opts = RunOptions {
                            registry: cli.registry.clone(),
                            promote: !args.run.no_promote,
                            skip_eval: args.run.skip_eval,
                            resume: None,
                            pause_after_epochs: None,
                        };
                        match run::run(&run_config, &opts) {
                            Ok(outcome) => {
                                eprintln!("{}: {}", outcome.run_id, outcome.decision);
                                ScheduleState {
                                    last_run: Some(started),
                                    last_run_id: Some(outcome.run_id),
                                }
                                .write(&state_path)?;
                            }
                            Err(e) => {
                                eprintln!("training run failed: {e}");
                                failed = true;
                            }
                        }
                    }
                }
                drop(lock);
            }
        }
        if args.once {
            return Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        std::thread::sleep(std::time::Duration::from_secs_f64(
            args.interval_minutes * 60.0,
        ));
    }
}
