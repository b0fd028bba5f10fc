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
    /// Run case-augmented RL on collected cases (not available in this release).
    Train,
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
    /// Export an adapter as a llama.cpp LoRA GGUF (not available in this release).
    Export,
}

/// Arguments of `cada-trainer eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Base URL of the OpenAI-compatible API, including `/v1`.
    #[arg(long, value_name = "URL")]
    pub base_url: String,
    /// Labelled prompts, one JSON object a line: {"id","prompt","label","category","kind"}.
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
}
