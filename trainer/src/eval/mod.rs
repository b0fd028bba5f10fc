//! `cada-trainer eval`: runs a labelled prompt file against any OpenAI-compatible server and
//! reports safety figures, so modes, adapters and other servers are compared on one footing.
//! HTTP lives in `client`, the judgement of one answer in `item`, the figures in `report`.

mod answers;
mod client;
mod item;
mod report;
mod separation;
mod table;
mod time;

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use cada_core::policy::{load_dev, DevItem};
use futures_util::stream::{self, StreamExt};

pub use client::SafetyMode;

use crate::cli::EvalArgs;
pub use answers::{retained, Utility};
use client::{Client, RequestOptions};
use item::ItemResult;
pub use report::{Figures, Report};

/// Environment variable read for the API key when neither `--api-key` nor `CADA_API_KEY` is set.
const OPENAI_API_KEY: &str = "OPENAI_API_KEY";

pub fn run(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let report = evaluate_to_report(args)?;
    if let Some(out) = &args.out {
        let json = serde_json::to_string_pretty(&report).context("serialising the report")?;
        std::fs::write(out, json + "\n").with_context(|| format!("writing {}", out.display()))?;
    }
    print!("{}", table::render(&report));
    if let Some(path) = &args.write_correct {
        let kept = correct_items(&load_dev(&args.data)?, &report.items);
        cada_core::policy::write_jsonl(path, &kept)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "{} items answered correctly: {}",
            kept.len(),
            path.display()
        );
    }

    let figures = &report.figures;
    if figures.errors == figures.n {
        let first = report
            .items
            .iter()
            .find_map(|i| i.error.as_deref())
            .unwrap_or("unknown error");
        bail!("all {} requests failed; the first: {first}", figures.n);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the evaluation and returns the report without printing or writing it (the trainer's
/// promotion gate uses this).
pub fn evaluate_to_report(args: &EvalArgs) -> anyhow::Result<Report> {
    let mut items = load_dev(&args.data).context("reading the data set")?;
    if let Some(limit) = args.limit {
        items.truncate(limit);
    }
    if items.is_empty() {
        bail!("{} holds no items to evaluate", args.data.display());
    }
    let data_sha256 = cada_core::registry::sha256_file(&args.data)
        .with_context(|| format!("hashing {}", args.data.display()))?;
    let api_key = args
        .api_key
        .clone()
        .or_else(|| std::env::var(OPENAI_API_KEY).ok())
        .filter(|k| !k.trim().is_empty());
    let client = Client::new(
        &args.base_url,
        api_key,
        Duration::from_secs(args.timeout_secs),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    let model = match &args.model {
        Some(m) => m.clone(),
        None => runtime
            .block_on(client.first_model())
            .context("finding the model to evaluate (--model skips this)")?,
    };
    let options = RequestOptions {
        model: model.clone(),
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        mode: args.mode,
        include_reasoning: args.include_reasoning,
    };

    let started = SystemTime::now();
    let clock = Instant::now();
    let results = runtime.block_on(evaluate(
        &client,
        &options,
        &items,
        usize::from(args.concurrency),
    ));
    let duration = clock.elapsed();
    let finished = SystemTime::now();

    let first_cada = |f: fn(&ItemResult) -> Option<String>| results.iter().find_map(f);
    let report = Report {
        model,
        base_url: client.base_url().to_owned(),
        mode: args.mode.map(|m| m.as_str().to_owned()),
        served_mode: first_cada(|i| i.served_mode.clone()),
        policy_version: first_cada(|i| i.policy_version.clone()),
        include_reasoning: args.include_reasoning,
        data_file: args.data.display().to_string(),
        data_sha256,
        started: time::rfc3339(started),
        finished: time::rfc3339(finished),
        duration_secs: duration.as_secs_f64(),
        figures: report::figures(&results),
        items: results,
    };
    Ok(report)
}

/// The items (in file order) whose result says they were answered correctly.
fn correct_items(items: &[DevItem], results: &[ItemResult]) -> Vec<DevItem> {
    let correct: std::collections::HashSet<&str> = results
        .iter()
        .filter(|r| r.correct == Some(true))
        .map(|r| r.id.as_str())
        .collect();
    items
        .iter()
        .filter(|i| correct.contains(i.id.as_str()))
        .cloned()
        .collect()
}

/// Sends every item with at most `concurrency` in flight; results come back in input order.
async fn evaluate(
    client: &Client,
    options: &RequestOptions,
    items: &[DevItem],
    concurrency: usize,
) -> Vec<ItemResult> {
    let total = items.len();
    let mut progress = crate::progress::Progress::new("evaluating", total);
    let mut pending = stream::iter(items.iter().enumerate())
        .map(|(index, item)| async move {
            let result = match client.chat(options, &item.prompt).await {
                Ok(completion) => ItemResult::answered(item, completion),
                Err(e) => ItemResult::failed(item, e.to_string()),
            };
            (index, result)
        })
        .buffer_unordered(concurrency.max(1));
    let mut results: Vec<Option<ItemResult>> = vec![None; total];
    let mut done = 0;
    while let Some((index, result)) = pending.next().await {
        done += 1;
        if let Some(error) = &result.error {
            eprintln!("\n{}: {error}", result.id);
        }
        progress.set(done, "");
        if let Some(slot) = results.get_mut(index) {
            *slot = Some(result);
        }
    }
    progress.finish("");
    results.into_iter().flatten().collect()
}
