//! Whether an engine still serves. Its thread can die (a panic), be stopped by llama.cpp (an
//! abort, which would otherwise end the whole process before anything is drained) or hang in a
//! step. Any of these fails the engine for good: every open session receives
//! `EngineError::Failed` at once, new sessions are refused, and callers (the gateway's health
//! endpoints, the trainer's rollouts) can tell why instead of waiting forever.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedSender, WeakUnboundedSender};

use super::worker::SessionId;
use super::{EngineError, Event};

/// What stopped an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The engine thread panicked.
    Panic,
    /// llama.cpp aborted (`GGML_ABORT`, a failed `GGML_ASSERT`).
    Abort,
    /// One step of the engine ran past `EngineConfig::stall_after`.
    Stall,
}

impl FailureKind {
    /// Every kind, for metric label sets.
    pub const ALL: [FailureKind; 3] = [Self::Panic, Self::Abort, Self::Stall];

    /// Stable name (metric label, health body).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Panic => "panic",
            Self::Abort => "abort",
            Self::Stall => "stall",
        }
    }
}

/// Why an engine stopped serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// The shared health of one engine: its failure, its open sessions (so a failure reaches them
/// even when the engine thread can no longer send anything) and the engine thread's heartbeat.
#[derive(Debug)]
pub(crate) struct Health {
    failure: OnceLock<Failure>,
    /// Weak, so a session's channel still closes when the engine thread drops its sender.
    sessions: Mutex<HashMap<SessionId, WeakUnboundedSender<Event>>>,
    /// Milliseconds since `epoch` (plus one) when the engine thread started its current step;
    /// 0 while it waits for work.
    busy_since: AtomicU64,
    epoch: Instant,
}

/// Engines alive in this process, for llama.cpp aborts raised on threads that are not an
/// engine's own (its OpenMP workers).
static LIVE: Mutex<Vec<Weak<Health>>> = Mutex::new(Vec::new());

thread_local! {
    /// The engine whose thread this is.
    static CURRENT: std::cell::RefCell<Option<Arc<Health>>> = const { std::cell::RefCell::new(None) };
}

impl Health {
    pub(crate) fn new() -> Arc<Self> {
        let health = Arc::new(Self {
            failure: OnceLock::new(),
            sessions: Mutex::new(HashMap::new()),
            busy_since: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let mut live = LIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.retain(|h| h.strong_count() > 0);
        live.push(Arc::downgrade(&health));
        health
    }

    /// Marks the calling thread as this engine's thread (for aborts raised on it).
    pub(crate) fn adopt_this_thread(self: &Arc<Self>) {
        CURRENT.with(|c| *c.borrow_mut() = Some(Arc::clone(self)));
    }

    pub(crate) fn failure(&self) -> Option<&Failure> {
        self.failure.get()
    }

    /// Fails the engine (the first failure wins): logs it and ends every open session with
    /// `EngineError::Failed`.
    pub(crate) fn fail(&self, kind: FailureKind, message: String) {
        if self.failure.set(Failure { kind, message }).is_err() {
            return;
        }
        let failure = self.failure.get().cloned().unwrap_or(Failure {
            kind,
            message: String::new(),
        });
        tracing::error!(
            reason = kind.as_str(),
            message = %failure.message,
            "the engine failed; it serves no more requests"
        );
        let sessions = std::mem::take(
            &mut *self
                .sessions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let error = EngineError::from(&failure);
        for tx in sessions.into_values().filter_map(|w| w.upgrade()) {
            let _ = tx.send(Event::Error(error.clone()));
        }
    }

    /// Registers an opening session; refused once the engine has failed.
    pub(crate) fn register(
        &self,
        id: SessionId,
        tx: &UnboundedSender<Event>,
    ) -> Result<(), EngineError> {
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Checked under the lock: `fail` sets the failure before it takes the sessions, so a
        // session registered here is either refused or reached by the failure.
        if let Some(f) = self.failure.get() {
            return Err(f.into());
        }
        sessions.insert(id, tx.downgrade());
        Ok(())
    }

    pub(crate) fn unregister(&self, id: SessionId) {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }

    /// The engine thread starts a step of work.
    pub(crate) fn working(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.busy_since.store(ms + 1, Ordering::Relaxed);
    }

    /// The engine thread waits for work.
    pub(crate) fn idle(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }

    /// How long the current step has been running, if the engine thread is in one.
    fn busy_for(&self) -> Option<Duration> {
        let since = self.busy_since.load(Ordering::Relaxed);
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        (since > 0).then(|| Duration::from_millis(now.saturating_sub(since)))
    }
}

impl From<&Failure> for EngineError {
    fn from(f: &Failure) -> Self {
        EngineError::Failed {
            reason: f.kind.as_str(),
            message: f.message.clone(),
        }
    }
}

/// Watches the heartbeat of an engine thread and fails the engine when one step runs longer than
/// `limit`. Ends when `stop` closes (the engine is dropped).
pub(crate) fn spawn_watchdog(
    health: &Arc<Health>,
    limit: Duration,
    stop: mpsc::Receiver<()>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let health = Arc::clone(health);
    // A few checks per limit, at most one a second: a stall is noticed within limit * 1.25.
    let every = (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    std::thread::Builder::new()
        .name("cada-engine-watchdog".into())
        .spawn(move || loop {
            match stop.recv_timeout(every) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            if health.failure().is_some() {
                return;
            }
            if let Some(busy) = health.busy_for().filter(|b| *b > limit) {
                health.fail(
                    FailureKind::Stall,
                    format!(
                        "one engine step has run for {:.1} s (limit {:.1} s): a hung decode",
                        busy.as_secs_f64(),
                        limit.as_secs_f64()
                    ),
                );
                return;
            }
        })
}

/// Called by llama.cpp in place of `abort()`: fails the engine whose thread aborted (every live
/// engine when the thread is none of theirs, such as an OpenMP worker) and then never returns,
/// so the process stays up to answer 503, drain the case store and exit on its own terms. The
/// aborting thread is parked for good: llama.cpp's state is no longer trusted.
pub(crate) fn on_llama_abort(message: String) {
    let own = CURRENT.with(|c| c.borrow().clone());
    let targets: Vec<Arc<Health>> = match own {
        Some(h) => vec![h],
        None => LIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|h| h.failure().is_none())
            .collect(),
    };
    if targets.is_empty() {
        // No engine to fail (an abort outside any engine's work): llama.cpp's own abort follows.
        tracing::error!(%message, "llama.cpp aborted");
        return;
    }
    for h in targets {
        h.fail(FailureKind::Abort, format!("llama.cpp aborted: {message}"));
    }
    loop {
        std::thread::park();
    }
}
