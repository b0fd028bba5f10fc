//! What logging a case costs on each backend as the review queue grows: SQLite (the embedded
//! default: one write transaction scans the file's pending embeddings) against PostgreSQL (the
//! fleet store: under an advisory lock, the pending set is read from the database and compared
//! with cached embeddings), in the same run, on fresh stores, over loopback.
//!
//! For each queue size it fills a fresh store of each backend with that many pending cases
//! (random 384-dimension embeddings: nothing merges), then times `log_case` for 100 more, one
//! writer, and for 100 more split between 4 writers with their own connections.
//!
//! Run: `cargo bench -p cada-core --features test-util --bench store` with
//! `CADA_TEST_POSTGRES_URL` set (`export CADA_TEST_POSTGRES_URL=$(scripts/test-postgres.sh)`);
//! writes target/bench/store.json.

use std::time::Instant;

use cada_core::store::testing::{case, PgDatabase, DIM};
use cada_core::store::{CaseStore, Logged, StoreConfig, StoreLocation};
use serde_json::json;

const QUEUES: [usize; 3] = [100, 1000, 3000];
const TIMED: usize = 100;
const WRITERS: usize = 4;

/// A deterministic random unit vector (xorshift), far from every other one.
fn embedding(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= norm);
    v
}

fn log(store: &mut CaseStore, i: u64) {
    let c = case(&format!("chatcmpl-{i}"), embedding(i), &["low_confidence"]);
    let logged = store.log_case(c).expect("log_case");
    assert!(
        matches!(logged, Logged::Inserted { .. }),
        "random cases merged"
    );
}

/// Milliseconds per `log_case`: one writer, then `WRITERS` at once (wall clock / cases).
fn measure(location: &StoreLocation, queue: usize) -> (f64, f64) {
    let config = || StoreConfig {
        busy_timeout_ms: 120_000,
        ..StoreConfig::default()
    };
    let mut store = CaseStore::open(location.clone(), config()).expect("open");
    for i in 0..queue {
        log(&mut store, i as u64);
    }
    let t = Instant::now();
    for i in 0..TIMED {
        log(&mut store, (queue + i) as u64);
    }
    let one = t.elapsed().as_secs_f64() * 1e3 / TIMED as f64;
    let t = Instant::now();
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let location = location.clone();
            s.spawn(move || {
                let mut store = CaseStore::open(location, config()).expect("open");
                for i in 0..TIMED / WRITERS {
                    log(&mut store, (queue + TIMED + w * TIMED + i) as u64);
                }
            });
        }
    });
    let many = t.elapsed().as_secs_f64() * 1e3 / TIMED as f64;
    (one, many)
}

fn main() {
    let mut rows = Vec::new();
    println!("| pending cases | SQLite ms/case (1 writer) | PostgreSQL ms/case (1 writer) | ratio | SQLite ms/case (4 writers) | PostgreSQL ms/case (4 writers) | ratio |");
    println!("|---|---|---|---|---|---|---|");
    for queue in QUEUES {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = StoreLocation::Sqlite(dir.path().join("bench.sqlite"));
        let db = PgDatabase::new();
        let pg = StoreLocation::parse(&db.url).expect("url");
        let (s1, s4) = measure(&sqlite, queue);
        let (p1, p4) = measure(&pg, queue);
        println!(
            "| {queue} | {s1:.2} | {p1:.2} | {:.2}x | {s4:.2} | {p4:.2} | {:.2}x |",
            p1 / s1,
            p4 / s4
        );
        rows.push(json!({
            "pending": queue,
            "sqlite_ms_per_case_1_writer": s1,
            "postgres_ms_per_case_1_writer": p1,
            "sqlite_ms_per_case_4_writers": s4,
            "postgres_ms_per_case_4_writers": p4,
        }));
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).expect("mkdir");
    std::fs::write(
        out.join("store.json"),
        serde_json::to_string_pretty(
            &json!({ "timed_cases": TIMED, "writers": WRITERS, "runs": rows }),
        )
        .expect("json"),
    )
    .expect("write");
}
