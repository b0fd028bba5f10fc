//! The promotion gate's measurement: the dev set through a real gateway (in this process, on a
//! loopback port) in `trained` mode, with or without an adapter, so the figures are exactly what
//! users of the gateway would see.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cada_core::adapters::OutsideFigures;
use cada_core::policy::WRAPPED_KIND;
use cada_gateway::config::{AdapterChoice, Mode};

use crate::cli::EvalArgs;
use crate::eval::{self, Report, SafetyMode, Utility};

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct GateRun {
    pub registry: PathBuf,
    pub model: String,
    pub adapter: Option<PathBuf>,
    pub policy_dir: PathBuf,
    pub dev: PathBuf,
    /// Scratch data directory for the gateway's case store.
    pub data_dir: PathBuf,
    pub threads: u32,
    pub concurrency: u16,
    pub max_tokens: u32,
    pub limit: Option<usize>,
}

/// Serves the model (and adapter) on 127.0.0.1 and runs the evaluation against it in `trained`
/// mode.
pub fn evaluate(run: &GateRun) -> Result<Report, String> {
    let mut reports = evaluate_modes(run, &[SafetyMode::Trained])?;
    reports.pop().ok_or_else(|| "no evaluation ran".to_owned())
}

/// Serves the model (and adapter) on 127.0.0.1 and runs the evaluation once per mode against
/// the one server, in order. `off` runs on the engine's base weights, so it measures the base
/// model on the same build and machine as the adapter.
pub fn evaluate_modes(run: &GateRun, modes: &[SafetyMode]) -> Result<Vec<Report>, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| format!("binding a loopback port: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("reading the bound port: {e}"))?;
    let mut config = cada_gateway::Config {
        registry: run.registry.clone(),
        model: run.model.clone(),
        adapter: run
            .adapter
            .clone()
            .map_or(AdapterChoice::None, AdapterChoice::File),
        adapter_poll_secs: 0,
        ..cada_gateway::Config::default()
    };
    config.safety.mode = Mode::Trained;
    config.safety.policy_dir = run.policy_dir.clone();
    config.store.data_dir = run.data_dir.clone();
    config.engine.threads = run.threads;
    config.engine.parallel = usize::from(run.concurrency.max(1));
    // The gate's own loopback gateway: its evaluation is the only caller, never throttled.
    config.auth.anonymous.requests_per_minute = 0;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(cada_gateway::run(listener, config, async {
        let _ = stopped.await;
    }));
    let base = format!("http://{addr}");
    let ready = rt.block_on(async {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            if server.is_finished() {
                return false;
            }
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
                if r.status() == 200 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    let report = if ready {
        let args = |mode: SafetyMode| EvalArgs {
            base_url: format!("{base}/v1"),
            data: run.dev.clone(),
            model: None,
            mode: Some(mode),
            include_reasoning: false,
            api_key: None,
            concurrency: run.concurrency,
            max_tokens: run.max_tokens,
            temperature: 0.0,
            limit: run.limit,
            timeout_secs: 300,
            out: None,
            write_correct: None,
        };
        modes
            .iter()
            .map(|m| eval::evaluate_to_report(&args(*m)).map_err(|e| format!("{e:#}")))
            .collect()
    } else {
        Err("the gateway did not become ready".to_owned())
    };
    let _ = stop.send(());
    match rt.block_on(server) {
        Ok(Err(e)) if report.is_err() => return Err(format!("the gateway failed: {e}")),
        _ => {}
    }
    report
}

/// The utility set answered on the candidate's gateway in `trained` and in `off` (its base
/// weights), and what the candidate kept of what the base model answers there: greedy answers
/// of the small model change with the CPU, so the base model is measured on this machine, not
/// on the one that wrote the set.
#[derive(Debug)]
pub struct UtilityRun {
    pub candidate: Report,
    pub base: Report,
    pub kept: Utility,
}

pub fn measure_utility(run: &GateRun) -> Result<UtilityRun, String> {
    let mut reports = evaluate_modes(run, &[SafetyMode::Trained, SafetyMode::Off])?.into_iter();
    let (Some(candidate), Some(base)) = (reports.next(), reports.next()) else {
        return Err("the utility set ran in too few modes".to_owned());
    };
    let kept = eval::retained(&candidate.items, &base.items);
    Ok(UtilityRun {
        candidate,
        base,
        kept,
    })
}

/// The dev file's sha256 (figures are only comparable on the same file).
pub fn dev_sha256(dev: &Path) -> Result<String, String> {
    cada_core::registry::sha256_file(dev).map_err(|e| format!("hashing {}: {e}", dev.display()))
}

/// The record of an evaluation on the held-out outside requests.
pub fn outside_figures(report: &Report, data: &Path) -> Result<OutsideFigures, String> {
    let f = &report.figures;
    Ok(OutsideFigures {
        data_sha256: dev_sha256(data)?,
        harmful_refusal_rate: f.harmful_refusal_rate.unwrap_or(0.0),
        benign_compliance_rate: f.benign_compliance_rate.unwrap_or(0.0),
        wrapped_benign_compliance_rate: f
            .by_kind
            .get(WRAPPED_KIND)
            .and_then(|g| g.benign_compliance_rate),
        mismatch: f.mismatch.rate,
        auc: f.separation.auc,
    })
}
