//! The store for async callers: one OS thread owns the [`CaseStore`] and serves requests from a
//! bounded queue in order, so SQLite's blocking writes never stall the runtime. Logging from the
//! request path is fire-and-forget and can never fail a request; review and feedback calls await
//! their answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::{
    CaseFilter, CaseStore, ExportFilter, FeedbackOutcome, Logged, NewCase, NewFeedback,
    ResponseRecord, StoreConfig, StoreCounts, StoreError, StoreLocation, StoredCase, TrainingCase,
};
use crate::policy::Label;

/// Requests that may wait for the store thread; beyond it detached writes are dropped.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// How long an awaited store call may take, queueing included, by default.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Live counters of the store thread, for metrics.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Cases logged as new.
    pub logged: AtomicU64,
    /// Cases merged into a pending near-duplicate.
    pub merged: AtomicU64,
    /// Response records kept.
    pub recorded: AtomicU64,
    /// Detached writes the store failed (the caller had already moved on).
    pub errors: AtomicU64,
    /// Detached writes dropped because the queue was full or the store had shut down.
    pub dropped: AtomicU64,
    /// New cases refused because the store held `pending_max` pending cases.
    pub full: AtomicU64,
}

/// A handle to the store thread. Cheap to clone; when the last handle drops, the thread writes
/// everything still queued and exits (the drop waits for it).
#[derive(Debug, Clone)]
pub struct StoreHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None` once dropping: closing the queue tells the thread to drain it and finish.
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<StoreStats>,
    capacity: usize,
    call_timeout: Duration,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

#[derive(Debug)]
enum Request {
    Record(Box<ResponseRecord>, Option<Reply<()>>),
    Log(Box<NewCase>, Option<Reply<Logged>>),
    Feedback(NewFeedback, Reply<FeedbackOutcome>),
    List(CaseFilter, Reply<Vec<StoredCase>>),
    Get(String, Reply<StoredCase>),
    Label {
        id: String,
        label: Label,
        note: Option<String>,
        reviewer: Option<String>,
        reply: Reply<StoredCase>,
    },
    Export(ExportFilter, Reply<Vec<TrainingCase>>),
    Counts(Reply<StoreCounts>),
    Flush(Reply<()>),
}

impl StoreHandle {
    /// Starts the store thread with a queue of [`DEFAULT_QUEUE_CAPACITY`].
    pub fn spawn(store: CaseStore) -> Result<Self, StoreError> {
        Self::spawn_with_capacity(store, DEFAULT_QUEUE_CAPACITY)
    }

    /// Starts the store thread with a queue of `capacity` requests (at least 1).
    pub fn spawn_with_capacity(store: CaseStore, capacity: usize) -> Result<Self, StoreError> {
        Self::start(move || Ok(store), capacity)
    }

    /// Opens the store at `location` on the store thread itself and serves it there. Safe to
    /// call from async code: a backend whose client blocks (PostgreSQL) never runs on the
    /// runtime. Waits until the store is open (or failed to open).
    pub fn open(
        location: StoreLocation,
        config: StoreConfig,
        capacity: usize,
    ) -> Result<Self, StoreError> {
        Self::start(move || CaseStore::open(location, config), capacity)
    }

    fn start(
        open: impl FnOnce() -> Result<CaseStore, StoreError> + Send + 'static,
        capacity: usize,
    ) -> Result<Self, StoreError> {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let stats = Arc::new(StoreStats::default());
        let worker_stats = Arc::clone(&stats);
        let (opened_tx, opened) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("cada-store".into())
            .spawn(move || match open() {
                Ok(store) => {
                    let _ = opened_tx.send(Ok(()));
                    serve(store, rx, &worker_stats);
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                }
            })
            .map_err(|e| StoreError::Io {
                path: "the store thread".into(),
                message: format!("cannot spawn it: {e}"),
            })?;
        match opened.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(StoreError::Io {
                    path: "the store thread".into(),
                    message: "it stopped while opening the store".into(),
                });
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                requests: Some(tx),
                thread: Some(thread),
                stats,
                capacity,
                call_timeout: DEFAULT_CALL_TIMEOUT,
            }),
        })
    }

    pub fn stats(&self) -> &StoreStats {
        &self.inner.stats
    }

    /// Queues a case without waiting; a full queue or a store failure is counted and logged,
    /// never returned.
    pub fn log_case_detached(&self, case: NewCase) {
        self.send_detached(Request::Log(Box::new(case), None));
    }

    /// Queues a response record without waiting, like [`Self::log_case_detached`].
    pub fn record_response_detached(&self, record: ResponseRecord) {
        self.send_detached(Request::Record(Box::new(record), None));
    }

    pub async fn log_case(&self, case: NewCase) -> Result<Logged, StoreError> {
        self.call(|reply| Request::Log(Box::new(case), Some(reply)))
            .await
    }

    pub async fn record_response(&self, record: ResponseRecord) -> Result<(), StoreError> {
        self.call(|reply| Request::Record(Box::new(record), Some(reply)))
            .await
    }

    /// Stores feedback; `Ok` means it is on disk.
    pub async fn feedback(&self, feedback: NewFeedback) -> Result<FeedbackOutcome, StoreError> {
        self.call(|reply| Request::Feedback(feedback, reply)).await
    }

    pub async fn list_cases(&self, filter: CaseFilter) -> Result<Vec<StoredCase>, StoreError> {
        self.call(|reply| Request::List(filter, reply)).await
    }

    pub async fn get_case(&self, id: impl Into<String>) -> Result<StoredCase, StoreError> {
        let id = id.into();
        self.call(|reply| Request::Get(id, reply)).await
    }

    pub async fn label_case(
        &self,
        id: impl Into<String>,
        label: Label,
        note: Option<String>,
        reviewer: Option<String>,
    ) -> Result<StoredCase, StoreError> {
        let id = id.into();
        self.call(|reply| Request::Label {
            id,
            label,
            note,
            reviewer,
            reply,
        })
        .await
    }

    pub async fn export(&self, filter: ExportFilter) -> Result<Vec<TrainingCase>, StoreError> {
        self.call(|reply| Request::Export(filter, reply)).await
    }

    pub async fn counts(&self) -> Result<StoreCounts, StoreError> {
        self.call(Request::Counts).await
    }

    /// Waits until every request queued before it has been served.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.call(Request::Flush).await
    }

    fn send_detached(&self, request: Request) {
        let Some(requests) = &self.inner.requests else {
            return;
        };
        if let Err(e) = requests.try_send(request) {
            self.inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
            let why = match e {
                TrySendError::Full(_) => "the store queue is full",
                TrySendError::Closed(_) => "the store has shut down",
            };
            tracing::warn!(
                capacity = self.inner.capacity,
                "dropped a store write: {why}"
            );
        }
    }

    /// Bounds every awaited call (waiting for room in the queue included): past it the caller
    /// gets [`StoreError::Timeout`] instead of waiting on a store that may never answer (a
    /// database gone silent). The request itself may still be applied later.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.call_timeout = timeout;
        }
        self
    }

    /// Queues a request (waiting for room) and awaits its reply, within the call timeout.
    async fn call<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> Result<T, StoreError> {
        let requests = self.inner.requests.as_ref().ok_or(StoreError::ShutDown)?;
        let (tx, rx) = oneshot::channel();
        let within = self.inner.call_timeout;
        let answered = tokio::time::timeout(within, async {
            requests
                .send(request(tx))
                .await
                .map_err(|_| StoreError::ShutDown)?;
            rx.await.map_err(|_| StoreError::ShutDown)?
        });
        answered.await.map_err(|_| StoreError::Timeout {
            secs: within.as_secs(),
        })?
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the thread serve what is queued and exit.
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the store thread panicked");
            }
        }
    }
}

/// The store thread: serves requests in order until every handle is gone and the queue is empty.
fn serve(mut store: CaseStore, mut requests: mpsc::Receiver<Request>, stats: &StoreStats) {
    while let Some(request) = requests.blocking_recv() {
        match request {
            Request::Record(record, reply) => {
                let result = store.record_response(&record);
                if result.is_ok() {
                    stats.recorded.fetch_add(1, Ordering::Relaxed);
                }
                answer(reply, result, stats, "record a response");
            }
            Request::Log(case, reply) => {
                let result = store.log_case(*case);
                match &result {
                    Ok(Logged::Inserted { .. }) => stats.logged.fetch_add(1, Ordering::Relaxed),
                    Ok(Logged::Merged { .. }) => stats.merged.fetch_add(1, Ordering::Relaxed),
                    Err(StoreError::Full { .. }) => stats.full.fetch_add(1, Ordering::Relaxed),
                    Err(_) => 0,
                };
                answer(reply, result, stats, "log a case");
            }
            Request::Feedback(feedback, reply) => {
                let result = store.feedback(feedback);
                if matches!(result, Err(StoreError::Full { .. })) {
                    stats.full.fetch_add(1, Ordering::Relaxed);
                }
                let _ = reply.send(result);
            }
            Request::List(filter, reply) => {
                let _ = reply.send(store.list_cases(&filter));
            }
            Request::Get(id, reply) => {
                let _ = reply.send(store.get_case(&id));
            }
            Request::Label {
                id,
                label,
                note,
                reviewer,
                reply,
            } => {
                let _ = reply.send(store.label_case(&id, label, note, reviewer));
            }
            Request::Export(filter, reply) => {
                let _ = reply.send(store.export(&filter));
            }
            Request::Counts(reply) => {
                let _ = reply.send(store.counts());
            }
            Request::Flush(reply) => {
                let _ = reply.send(Ok(()));
            }
        }
    }
}

/// Replies to an awaited write; a detached one's failure is counted and logged instead (by code
/// and message, which never quote request text).
fn answer<T>(
    reply: Option<Reply<T>>,
    result: Result<T, StoreError>,
    stats: &StoreStats,
    what: &str,
) {
    match (reply, result) {
        (Some(reply), result) => {
            let _ = reply.send(result);
        }
        (None, Ok(_)) => {}
        (None, Err(e @ StoreError::Full { .. })) => {
            // Counted in `full`; warned about once per thousand, not at every borderline request.
            if stats.full.load(Ordering::Relaxed) % 1000 == 1 {
                tracing::warn!(code = e.code(), error = %e, "cannot {what}");
            }
        }
        (None, Err(e)) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(code = e.code(), error = %e, "cannot {what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{case, record, unit};
    use crate::store::FeedbackLabel;

    fn open(path: &std::path::Path) -> CaseStore {
        CaseStore::open(path, StoreConfig::default()).unwrap()
    }

    #[tokio::test]
    async fn cases_refused_at_the_pending_cap_are_counted_not_errors() {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::Sqlite(dir.path().join("f.db"));
        let config = StoreConfig {
            pending_max: 1,
            ..StoreConfig::default()
        };
        let handle = StoreHandle::open(location, config, 8).unwrap();
        handle.log_case_detached(case("chatcmpl-1", unit(1), &["x"]));
        handle.log_case_detached(case("chatcmpl-2", unit(2), &["x"]));
        let awaited = handle.log_case(case("chatcmpl-3", unit(3), &["x"])).await;
        assert_eq!(awaited.unwrap_err().code(), "store_full");
        let stats = handle.stats();
        assert_eq!(stats.logged.load(Ordering::Relaxed), 1);
        assert_eq!(stats.full.load(Ordering::Relaxed), 2);
        assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_store_opens_on_its_thread_and_a_failure_is_returned() {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::Sqlite(dir.path().join("o.db"));
        let handle = StoreHandle::open(location, StoreConfig::default(), 8).unwrap();
        assert_eq!(handle.counts().await.unwrap(), StoreCounts::default());
        // A directory where the file should be.
        let bad = StoreLocation::Sqlite(dir.path().to_path_buf());
        let err = StoreHandle::open(bad, StoreConfig::default(), 8).unwrap_err();
        assert_eq!(err.code(), "store_database_error");
        // PostgreSQL from inside the runtime: its blocking client never touches this one.
        // (The test's own client blocks too: it is made and dropped off the runtime.)
        let db = std::thread::spawn(crate::store::testing::PgDatabase::new)
            .join()
            .unwrap();
        let location = StoreLocation::parse(&db.url).unwrap();
        let handle = StoreHandle::open(location, StoreConfig::default(), 8).unwrap();
        let logged = handle.log_case(case("chatcmpl-pg", unit(1), &["x"])).await;
        assert!(matches!(logged, Ok(Logged::Inserted { .. })), "{logged:?}");
        drop(handle);
        std::thread::spawn(move || drop(db)).join().unwrap();
    }

    #[tokio::test]
    async fn serves_review_and_feedback_calls() {
        let dir = tempfile::tempdir().unwrap();
        let handle = StoreHandle::spawn(open(&dir.path().join("h.db"))).unwrap();
        let now = crate::store::codec::now();
        handle
            .record_response(record("chatcmpl-1", now))
            .await
            .unwrap();
        let logged = handle.log_case(case("chatcmpl-2", unit(1), &["x"])).await;
        let id = logged.unwrap().id().to_owned();
        let unknown = NewFeedback {
            response_id: "chatcmpl-nope".into(),
            label: FeedbackLabel::Harmful,
            comment: None,
            caller: None,
        };
        assert_eq!(
            handle.feedback(unknown).await.unwrap_err().code(),
            "not_found"
        );
        let known = NewFeedback {
            response_id: "chatcmpl-1".into(),
            label: FeedbackLabel::OverRefusal,
            comment: None,
            caller: Some("reviewer".into()),
        };
        assert!(handle.feedback(known).await.unwrap().created_case);
        let labelled = handle.label_case(&id, Label::Allow, None, None).await;
        assert_eq!(labelled.unwrap().label, Some(Label::Allow));
        assert_eq!(handle.get_case(&id).await.unwrap().id, id);
        assert_eq!(
            handle
                .list_cases(CaseFilter::default())
                .await
                .unwrap()
                .len(),
            2
        );
        let export = ExportFilter {
            include_feedback: true,
            feedback_quorum: 1,
            since: None,
        };
        assert_eq!(handle.export(export).await.unwrap().len(), 2);
        let counts = handle.counts().await.unwrap();
        assert_eq!(
            (counts.pending, counts.labelled, counts.responses),
            (1, 1, 1)
        );
        let stats = handle.stats();
        assert_eq!(stats.logged.load(Ordering::Relaxed), 1);
        assert_eq!(stats.recorded.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn dropping_the_last_handle_writes_everything_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drain.db");
        let handle = StoreHandle::spawn(open(&path)).unwrap();
        let clone = handle.clone();
        let now = crate::store::codec::now();
        for i in 0..100 {
            clone.log_case_detached(case(&format!("chatcmpl-{i}"), unit(i), &["x"]));
            handle.record_response_detached(record(&format!("chatcmpl-{i}"), now));
        }
        drop(clone);
        drop(handle);
        let counts = open(&path).counts().unwrap();
        assert_eq!((counts.pending, counts.responses), (100, 100));
    }

    #[test]
    fn detached_writes_are_counted_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.db");
        let store = open(&path);
        // Another connection holds the write lock, so the store thread waits on its first write
        // while the one-slot queue fills.
        let mut blocker = rusqlite::Connection::open(&path).unwrap();
        let lock = blocker
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let handle = StoreHandle::spawn_with_capacity(store, 1).unwrap();
        for i in 0..5 {
            handle.log_case_detached(case(&format!("chatcmpl-{i}"), unit(i), &["x"]));
        }
        let stats = Arc::clone(&handle.inner.stats);
        assert!(stats.dropped.load(Ordering::Relaxed) >= 3);
        lock.commit().unwrap();
        handle.log_case_detached(case("chatcmpl-bad", Vec::new(), &["x"]));
        drop(handle);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(
            load(&stats.logged) + load(&stats.dropped) + load(&stats.errors),
            6
        );
        assert!(load(&stats.logged) >= 1);
    }
}
