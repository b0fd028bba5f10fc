//! `cada-trainer schedule`: retrain periodically once enough newly labelled cases have arrived
//! in the review queue (read from a gateway or straight from the case store), with a lock so two runs (two timers, a timer and a manual
//! run) never overlap.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cada_core::store::{
    export_jsonl, CaseStore, ExportFilter, StoreConfig, StoreLocation, DEFAULT_FEEDBACK_QUORUM,
};
use serde::{Deserialize, Serialize};

/// A lock another host (another container or pod on a shared volume) wrote is taken over only
/// once it is this old: its process cannot be looked up from here, and a run is bounded by its
/// budget plus evaluation, well under this.
pub const FOREIGN_LOCK_STALE: Duration = Duration::from_secs(6 * 3600);

/// Held while a run trains; removed on drop. The file says `<pid> <hostname>`. A lock whose
/// process is gone is taken over: on this host, when no other process has that pid (a
/// container's trainer is always pid 1, so a lock with our own pid that this process did not
/// take is a dead predecessor's); from another host, after [`FOREIGN_LOCK_STALE`].
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another training run (pid {pid} on {host}) holds {path}")]
    Held {
        path: String,
        pid: u32,
        host: String,
    },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

impl RunLock {
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let io = |e: std::io::Error| LockError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut f) => {
                    writeln!(f, "{} {}", std::process::id(), hostname()).map_err(io)?;
                    HELD.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(path.to_owned());
                    return Ok(Self {
                        path: path.to_owned(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(path).unwrap_or_default();
                    let mut parts = text.split_whitespace();
                    let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
                    // Locks written before the hostname was recorded are this host's.
                    let host = parts.next().map_or_else(hostname, str::to_owned);
                    let age = std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .unwrap_or_default();
                    let held = match pid {
                        Some(pid) if host == hostname() => {
                            if pid == std::process::id() {
                                held_here(path)
                            } else {
                                alive(pid)
                            }
                        }
                        Some(_) => age < FOREIGN_LOCK_STALE,
                        None => false,
                    };
                    if let (true, Some(pid)) = (held, pid) {
                        return Err(LockError::Held {
                            path: path.display().to_string(),
                            pid,
                            host,
                        });
                    }
                    // The holder is gone (or the file is garbage): take it over.
                    std::fs::remove_file(path).map_err(io)?;
                }
                Err(e) => return Err(io(e)),
            }
        }
        Err(LockError::Io {
            path: path.display().to_string(),
            message: "could not take over a stale lock".into(),
        })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        HELD.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|p| p != &self.path);
    }
}

/// Lock files this process holds: a lock with our pid is ours only if listed here.
static HELD: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn held_here(path: &Path) -> bool {
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .any(|p| p == path)
}

/// This host's name (a container's or pod's own under Linux UTS namespaces); empty when unknown.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Whether a process with this pid exists (Linux `/proc`; elsewhere assume it does).
fn alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// What the scheduler remembers between ticks (`<runs_dir>/schedule.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// Unix seconds of the last training run's start; labels after it count as new.
    pub last_run: Option<i64>,
    pub last_run_id: Option<String>,
}

impl ScheduleState {
    pub fn read(path: &Path) -> Self {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).unwrap_or_default())?;
        std::fs::rename(tmp, path)
    }
}

/// Where the scheduler reads labelled cases.
#[derive(Debug, Clone)]
pub enum CaseSource {
    /// A gateway's `/admin/cases/export`, with its admin key.
    Gateway {
        url: String,
        admin_key: Option<String>,
    },
    /// The case store itself (shared PostgreSQL, or the gateway's SQLite file).
    Store(StoreLocation),
}

impl CaseSource {
    /// Reviewed cases (with a `feedback_quorum`, also those that many independent keys' feedback
    /// agrees on) labelled since `since`, or all, as JSONL. Blocking; the gateway source runs
    /// its request on `rt`.
    pub fn fetch(
        &self,
        rt: &tokio::runtime::Runtime,
        since: Option<i64>,
        feedback_quorum: Option<u32>,
    ) -> Result<String, String> {
        match self {
            Self::Gateway { url, admin_key } => rt.block_on(fetch_cases(
                url,
                admin_key.as_deref(),
                since,
                feedback_quorum,
            )),
            Self::Store(location) => export_from_store(location, since, feedback_quorum),
        }
    }
}

/// Labelled cases straight from a case store, as JSONL (the same as the gateway's export).
pub fn export_from_store(
    location: &StoreLocation,
    since: Option<i64>,
    feedback_quorum: Option<u32>,
) -> Result<String, String> {
    let mut store = CaseStore::open(location.clone(), StoreConfig::default())
        .map_err(|e| format!("opening the case store {location}: {e}"))?;
    let filter = ExportFilter {
        include_feedback: feedback_quorum.is_some(),
        feedback_quorum: feedback_quorum.unwrap_or(DEFAULT_FEEDBACK_QUORUM),
        since,
    };
    let cases = store
        .export(&filter)
        .map_err(|e| format!("reading cases from {location}: {e}"))?;
    Ok(export_jsonl(&cases))
}

/// Fetches labelled cases from a gateway (`GET /admin/cases/export`), optionally only those
/// labelled since `since`; returns the JSONL text.
pub async fn fetch_cases(
    base_url: &str,
    admin_key: Option<&str>,
    since: Option<i64>,
    feedback_quorum: Option<u32>,
) -> Result<String, String> {
    let mut url = format!(
        "{}/admin/cases/export?include_feedback={}",
        base_url.trim_end_matches('/'),
        feedback_quorum.is_some()
    );
    if let Some(q) = feedback_quorum {
        url.push_str(&format!("&feedback_quorum={q}"));
    }
    if let Some(s) = since {
        url.push_str(&format!("&since={s}"));
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = client.get(&url);
    if let Some(k) = admin_key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("GET {url}: {status}: {text}"));
    }
    Ok(text)
}

/// Non-blank lines of a JSONL text.
pub fn count_lines(text: &str) -> usize {
    text.lines().filter(|l| !l.trim().is_empty()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_excludes_a_second_run_and_stale_locks_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trainer.lock");
        let first = RunLock::acquire(&path).unwrap();
        assert!(matches!(
            RunLock::acquire(&path),
            Err(LockError::Held { .. })
        ));
        drop(first);
        assert!(!path.exists());
        // A lock left by a process that no longer exists.
        std::fs::write(&path, "4294967\n").unwrap();
        let taken = RunLock::acquire(&path).unwrap();
        let ours = format!("{} {}", std::process::id(), hostname());
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), ours);
        drop(taken);
        // A lock a restarted container left: our own pid (1 in a container) on this host is a
        // dead predecessor's, not ours.
        std::fs::write(&path, format!("{ours}\n")).unwrap();
        drop(RunLock::acquire(&path).unwrap());
        // A live process on this host (pid 1 exists) holds it, in either file format.
        std::fs::write(&path, format!("1 {}\n", hostname())).unwrap();
        assert!(matches!(
            RunLock::acquire(&path),
            Err(LockError::Held { pid: 1, .. })
        ));
        std::fs::write(&path, "1\n").unwrap();
        assert!(matches!(
            RunLock::acquire(&path),
            Err(LockError::Held { pid: 1, .. })
        ));
        // Another host's fresh lock is held; an old one is taken over.
        std::fs::write(&path, "4294967 another-pod\n").unwrap();
        assert!(matches!(
            RunLock::acquire(&path),
            Err(LockError::Held { ref host, .. }) if host == "another-pod"
        ));
        let old = std::time::SystemTime::now() - FOREIGN_LOCK_STALE - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        drop(RunLock::acquire(&path).unwrap());
    }

    #[test]
    fn state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedule.json");
        assert_eq!(ScheduleState::read(&path), ScheduleState::default());
        let s = ScheduleState {
            last_run: Some(5),
            last_run_id: Some("run-5".into()),
        };
        s.write(&path).unwrap();
        assert_eq!(ScheduleState::read(&path), s);
        assert_eq!(count_lines("{}\n\n{}\n"), 2);
    }
}
