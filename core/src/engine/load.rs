//! Starting an engine: the engine thread loads the model (and adapter), creates the context,
//! warms it up and only then reports ready; it then serves until its channel closes, and a
//! panic on it fails the engine instead of leaving requests waiting.

use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};

use super::chat::ChatFormat;
use super::health::{self, Health};
use super::worker::Worker;
use super::{
    backend, cpu, priority, Engine, EngineConfig, EngineError, EngineStats, Inner, ModelInfo,
};

impl Engine {
    /// Loads the model, warms it up with one prefill and one decode step (as llama-server does
    /// before it listens: a kernel that crashes then ends start-up, never a request) and starts
    /// the engine thread. Blocking: call it off the async runtime.
    pub fn load(config: EngineConfig) -> Result<Self, EngineError> {
        let backend = backend::get()?;
        if config.n_slots == 0 || config.ctx_per_slot < 16 || config.n_batch == 0 {
            return Err(EngineError::Context(
                "n_slots and n_batch must be positive and ctx_per_slot at least 16".into(),
            ));
        }
        if !config.model_path.is_file() {
            return Err(EngineError::ModelLoad {
                path: config.model_path.display().to_string(),
                message: "no such file".into(),
            });
        }
        log_cpu_once();
        let stats = Arc::new(EngineStats::default());
        let health = Health::new();
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let worker_stats = Arc::clone(&stats);
        let worker_health = Arc::clone(&health);
        let worker_config = config.clone();
        // The model is loaded on the engine thread too. With OpenMP, every thread that runs
        // llama.cpp work keeps its own worker team alive; a second team (say, from loading on
        // the caller's thread) makes libgomp count more threads than cores and stop spinning
        // between barriers, which measured 20-40% slower decoding on 2 cores.
        let thread = std::thread::Builder::new()
            .name("cada-engine".into())
            .spawn(move || {
                // Before any llama.cpp call: the threads it starts inherit the niceness.
                priority::lower_this_thread(worker_config.nice);
                worker_health.adopt_this_thread();
                let (loaded, mut adapter) = match load_model(backend, &worker_config) {
                    Ok(loaded) => loaded,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let model = Arc::clone(&loaded.model);
                let worker = Worker::new(
                    backend,
                    &model,
                    adapter.as_mut(),
                    &worker_config,
                    worker_stats,
                )
                .and_then(|mut w| w.warm_up().map(|()| w));
                let mut worker = match worker {
                    Ok(worker) => worker,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(loaded));
                // The worker outlives the unwind, so the failure is recorded (and every open
                // session told) before its channels close.
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    worker.run(&rx, &worker_health);
                }));
                if let Err(panic) = served {
                    worker_health.fail(
                        health::FailureKind::Panic,
                        format!("the engine thread panicked: {}", panic_message(&*panic)),
                    );
                }
            })
            .map_err(|e| EngineError::Backend(format!("cannot spawn the engine thread: {e}")))?;
        let loaded = loop {
            // An abort during loading parks the engine thread inside llama.cpp: the failure is
            // the answer then, not a wait without end.
            match ready_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(loaded) => break loaded,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(f) = health.failure() {
                        return Err(f.into());
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(EngineError::Context(
                        "engine thread exited during start-up".into(),
                    ))
                }
            }
        };
        let Loaded {
            model,
            format,
            info,
        } = loaded?;
        let (watchdog_stop, watchdog) = match config.stall_after {
            Some(limit) => {
                let (stop_tx, stop_rx) = mpsc::channel();
                let handle = health::spawn_watchdog(&health, limit, stop_rx).map_err(|e| {
                    EngineError::Backend(format!("cannot spawn the engine watchdog: {e}"))
                })?;
                (Some(stop_tx), Some(handle))
            }
            None => (None, None),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                jobs: Some(tx),
                next_session: AtomicU64::new(0),
                thread: Some(thread),
                watchdog_stop,
                watchdog,
                health,
                model,
                format,
                info,
                config,
                stats,
            }),
        })
    }
}

/// What the engine thread hands back once the model is loaded.
struct Loaded {
    model: Arc<LlamaModel>,
    format: ChatFormat,
    info: ModelInfo,
}

/// Loads the model and, when configured, its adapter (which stays on the engine thread).
fn load_model(
    backend: &'static LlamaBackend,
    config: &EngineConfig,
) -> Result<(Loaded, Option<LlamaLoraAdapter>), EngineError> {
    let params = LlamaModelParams::default().with_n_gpu_layers(config.n_gpu_layers);
    let mut model =
        LlamaModel::load_from_file(backend, &config.model_path, &params).map_err(|e| {
            EngineError::ModelLoad {
                path: config.model_path.display().to_string(),
                message: e.to_string(),
            }
        })?;
    let adapter = match &config.adapter {
        Some(path) if !path.is_file() => {
            return Err(EngineError::ModelLoad {
                path: path.display().to_string(),
                message: "no such adapter file".into(),
            })
        }
        Some(path) => Some(
            model
                .lora_adapter_init(path)
                .map_err(|e| EngineError::ModelLoad {
                    path: path.display().to_string(),
                    message: format!("not a LoRA adapter for this model: {e}"),
                })?,
        ),
        None => None,
    };
    let format = ChatFormat::for_model(&model)?;
    let info = ModelInfo {
        name: model.meta_val_str("general.name").ok(),
        architecture: model.meta_val_str("general.architecture").ok(),
        n_ctx_train: model.n_ctx_train(),
        ctx_per_slot: config.ctx_per_slot,
        n_params: model.n_params(),
        n_vocab: model.n_vocab(),
        size_bytes: model.size(),
        chat_template: format.source(),
    };
    Ok((
        Loaded {
            model: Arc::new(model),
            format,
            info,
        },
        adapter,
    ))
}

/// The text of a panic's payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Logs, once per process, what llama.cpp was built for on this CPU.
fn log_cpu_once() {
    static LOGGED: std::sync::Once = std::sync::Once::new();
    LOGGED.call_once(|| {
        let extra = cpu::extra_buffer_types();
        tracing::info!(
            system = %cpu::system_info(),
            extra_buffer_types = ?extra,
            "llama.cpp CPU backend"
        );
        if cpu::amx_kernels() {
            tracing::warn!(
                "this build has llama.cpp's AMX kernels, which segfault on some Xeons \
                 (llama.cpp #20824); the default build leaves them out (.cargo/config.toml)"
            );
        }
    });
}
