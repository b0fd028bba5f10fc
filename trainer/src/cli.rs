//! The command line's shape: global options, the subcommands and their arguments, kept apart
//! from what the commands do so `--help` can be read in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::eval::SafetyMode;

#[derive(Debug, Parser)]
#[command(
    name = "cada-trainer",
    version,
    about = "Case-augmented RL trainer for cada"
)]
pub struct Cli {
    /// Model registry file.
    #[arg(
        long,
        env = "CADA_REGISTRY",
        default_value = "models/registry.toml",
        global = true
    )]
    pub registry: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the registry's models and whether their files are present and intact.
    Models {
        /// Also check each file's sha256.
        #[arg(long)]
        verify: bool,
    },
    /// Train an adapter (warm start, verdicts after its own reasoning, GRPO, DPO), evaluate it
    /// through the gateway against the promoted model and promote it when it is better.
    #[command(alias = "train")]
    Run(RunArgs),
    /// Serve an earlier adapter version again (default: the current one's parent).
    Rollback {
        /// Version to serve; without it, the promoted version's parent.
        #[arg(long)]
        to: Option<String>,
    },
    /// Run a labelled prompt file against an OpenAI-compatible server and report safety figures.
    #[command(
        alias = "evaluate",
        long_about = "Run a labelled prompt file (the dev-set JSONL layout) against any \
OpenAI-compatible server, the cada gateway or another, and report safety figures: the harmful \
refusal rate, the benign compliance rate, verdict accuracy where the server gives verdicts, and \
the token and latency cost, overall and per category and kind.\n\n\
An item counts as refused when the response carries the gateway's `cada.verdict` and it is \
`refuse`; without a verdict, when the refusal detector reads the answer as a full refusal.",
        after_help = "Example:\n  cada-trainer eval --base-url http://127.0.0.1:8080/v1 \
--data configs/policy/dev.jsonl --mode cases --out report.json"
    )]
    Eval(EvalArgs),
    /// Copy a registry adapter version (default: the promoted one) out as a llama.cpp LoRA
    /// GGUF, e.g. for another llama.cpp server (`llama-server --lora FILE`).
    Export {
        /// Version to export; default the promoted one.
        #[arg(long)]
        version: Option<String>,
        /// Destination file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Retrain on a schedule: every interval, fetch the labelled cases (from a gateway or the
    /// case store) and run (`run` with them as extra data) once enough new ones arrived; a lock
    /// keeps runs apart.
    Schedule(ScheduleArgs),
}

/// Arguments of `cada-trainer run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Training configuration (TOML); see configs/trainer.toml.
    #[arg(
        long,
        env = "CADA_TRAIN_CONFIG",
        default_value = "configs/trainer.toml"
    )]
    pub config: PathBuf,
    /// Override `budget_minutes`.
    #[arg(long, value_name = "MIN")]
    pub budget_minutes: Option<f64>,
    /// Labelled case-store exports to train on as well (added to `extra_data`).
    #[arg(long = "data", value_name = "JSONL")]
    pub data: Vec<PathBuf>,
    /// Read the reviewed cases (with `--include-feedback`, also those whose feedback agrees)
    /// straight from a case store:
    /// the gateways' shared PostgreSQL (`postgres://...`) or an SQLite file. The run trains on a
    /// snapshot written to `<runs_dir>/cases-<time>.jsonl`, so it can be resumed and audited.
    #[arg(
        long,
        env = "CADA_STORE_URL",
        hide_env_values = true,
        value_name = "URL",
        conflicts_with = "resume"
    )]
    pub store: Option<String>,
    /// Also train on pending cases whose users' feedback agrees on a label, though no reviewer
    /// saw them: at least `--feedback-quorum` distinct keys, none of them the key that made the
    /// request, and more than half of the keys that judged it. Off by default: feedback is
    /// evidence for review.
    #[arg(long)]
    pub include_feedback: bool,
    /// Independent keys that must agree before `--include-feedback` trains on a case.
    #[arg(
        long,
        value_name = "N",
        default_value_t = cada_core::store::DEFAULT_FEEDBACK_QUORUM,
        value_parser = clap::value_parser!(u32).range(1..),
        requires = "include_feedback"
    )]
    pub feedback_quorum: u32,
    /// Evaluate and report, but do not promote.
    #[arg(long)]
    pub no_promote: bool,
    /// Skip evaluation and promotion (smoke runs).
    #[arg(long)]
    pub skip_eval: bool,
    /// Continue a stopped, crashed or paused run from its last checkpoint (written after each
    /// warm-start epoch, each own-reasoning round and after GRPO/DPO), with the configuration it
    /// recorded.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    pub resume: Option<PathBuf>,
    /// Stop, checkpointed, once this many warm-start epochs are done (train in slices).
    #[arg(long, value_name = "N")]
    pub pause_after_epochs: Option<usize>,
}

impl RunArgs {
    /// The quorum that makes feedback training data, when `--include-feedback` asks for it.
    pub fn feedback(&self) -> Option<u32> {
        self.include_feedback.then_some(self.feedback_quorum)
    }
}

/// Arguments of `cada-trainer schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Gateway base URL (without `/v1`) whose `/admin/cases/export` supplies labelled cases;
    /// or read them from the case store itself with `--store`.
    #[arg(
        long,
        env = "CADA_GATEWAY_URL",
        value_name = "URL",
        required_unless_present = "store",
        conflicts_with = "store"
    )]
    pub gateway: Option<String>,
    /// Admin key of that gateway.
    #[arg(long, env = "CADA_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Minutes between checks.
    #[arg(long, default_value_t = 60.0)]
    pub interval_minutes: f64,
    /// Newly labelled cases needed to start a run.
    #[arg(long, default_value_t = 50)]
    pub min_new_cases: usize,
    /// Check once and exit (for cron jobs and systemd timers).
    #[arg(long)]
    pub once: bool,
}

/// Arguments of `cada-trainer eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Base URL of the OpenAI-compatible API, including `/v1`.
    #[arg(long, value_name = "URL")]
    pub base_url: String,
    /// Labelled prompts, one JSON object a line: {"id","prompt","label","category","kind"},
    /// and "answers" (accepted answers) for utility items.
    #[arg(long, value_name = "JSONL")]
    pub data: PathBuf,
    /// Model id to request; by default the first id `GET {base}/models` lists.
    #[arg(long, value_name = "ID")]
    pub model: Option<String>,
    /// Send the gateway extension `safety_mode` (other servers ignore it); not sent by default.
    #[arg(long, value_enum)]
    pub mode: Option<SafetyMode>,
    /// Send the gateway extension `include_reasoning: true` and record the reasoning.
    #[arg(long)]
    pub include_reasoning: bool,
    /// Bearer token; falls back to the OPENAI_API_KEY environment variable.
    #[arg(long, env = "CADA_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// `max_tokens` of each request.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: u32,
    /// `temperature` of each request.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Evaluate only the first N items.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Seconds one request may take, retries not counted.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: u64,
    /// Write the full report, per-item results included, as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write the utility items answered correctly, as JSONL, to this file: how the utility set
    /// keeps only what the base model answers correctly in `off` mode.
    #[arg(long, value_name = "JSONL")]
    pub write_correct: Option<PathBuf>,
}
