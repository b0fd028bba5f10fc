//! Tests of the PostgreSQL backend against a real server: the shared conformance checks, plus
//! what only this backend has (migrations shared by a fleet, reconnecting, lock timeouts).
//! `CADA_TEST_POSTGRES_URL` names a role that may create databases (`scripts/test-postgres.sh`
//! starts such a server and prints it; `scripts/test.sh` sets it); each test gets its own
//! database, dropped afterwards.

use std::sync::Barrier;

use super::*;
use crate::store::conformance::{conformance_tests, Fixture};
use crate::store::testing::{case, unit, PgDatabase};
use crate::store::{CaseStore, StoreLocation};

impl Fixture for PgDatabase {
    fn try_open(&self, config: StoreConfig) -> Result<CaseStore> {
        CaseStore::open(StoreLocation::parse(&self.url)?, config)
    }
}

conformance_tests!(PgDatabase::new());

fn open(db: &PgDatabase) -> PgStore {
    PgStore::open(&db.url, "test", StoreConfig::default()).unwrap()
}

#[test]
fn a_fleet_starting_at_once_migrates_exactly_once() {
    let db = PgDatabase::new();
    let start = Barrier::new(6);
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                start.wait();
                open(&db);
            });
        }
    });
    let mut client = db.client();
    let versions: Vec<i64> = client
        .query("SELECT version FROM cada_schema ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=schema::VERSION).collect::<Vec<_>>());
}

#[test]
fn a_database_from_a_newer_build_is_refused_untouched() {
    let db = PgDatabase::new();
    drop(open(&db));
    let newer = schema::VERSION + 1;
    db.client()
        .execute("INSERT INTO cada_schema (version) VALUES ($1)", &[&newer])
        .unwrap();
    let err = PgStore::open(&db.url, "test", StoreConfig::default()).unwrap_err();
    assert_eq!(err.code(), "store_schema_too_new");
    let count: i64 = db
        .client()
        .query_one("SELECT count(*) FROM cada_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, schema::VERSION + 1);
}

#[test]
fn the_connection_comes_back_after_the_server_drops_it() {
    let db = PgDatabase::new();
    let mut store = open(&db);
    store.log_case(case("chatcmpl-1", unit(1), &["x"])).unwrap();
    db.client()
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap();
    // The first call after the drop fails (it cannot know whether a write landed); the next
    // reconnects.
    let mut results = Vec::new();
    for i in 2..5 {
        results.push(store.log_case(case(&format!("chatcmpl-{i}"), unit(i), &["x"])));
    }
    assert!(results[1..].iter().all(Result::is_ok), "{results:?}");
    assert!(store.counts().unwrap().pending >= 3);
}

#[test]
fn a_lock_held_too_long_is_busy_not_a_hang() {
    let db = PgDatabase::new();
    let config = StoreConfig {
        busy_timeout_ms: 200,
        ..StoreConfig::default()
    };
    let mut store = PgStore::open(&db.url, "test", config).unwrap();
    let mut other = db.client();
    let mut tx = other.transaction().unwrap();
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_CASES])
        .unwrap();
    let started = std::time::Instant::now();
    let err = store
        .log_case(case("chatcmpl-1", unit(1), &["x"]))
        .unwrap_err();
    assert_eq!(err, StoreError::Busy);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    tx.rollback().unwrap();
    assert!(store.log_case(case("chatcmpl-1", unit(1), &["x"])).is_ok());
}

#[test]
fn nul_is_stored_as_the_replacement_character() {
    let db = PgDatabase::new();
    let mut store = open(&db);
    let mut c = case("chatcmpl-\u{0}", unit(2), &["x"]);
    c.request = "a\u{0}b".into();
    let id = store.log_case(c).unwrap().id().to_owned();
    let got = store.get_case(&id).unwrap();
    assert_eq!(got.request, "a\u{FFFD}b");
    assert_eq!(got.response_id, "chatcmpl-\u{FFFD}");
}

#[test]
fn errors_never_show_the_password() {
    let db = PgDatabase::new();
    let url = db
        .url
        .replacen("://cada_test:cada_test@", "://cada_test:wrong-s3cret@", 1);
    let location = StoreLocation::parse(&url).unwrap();
    let err = CaseStore::open(location.clone(), StoreConfig::default()).unwrap_err();
    let shown = format!("{err} {err:?} {location}");
    assert!(!shown.contains("wrong-s3cret"), "{shown}");
    assert_eq!(err.code(), "store_io_error");
    let garbage = StoreLocation::parse("postgres://u:p4ss@host:notaport/db").unwrap();
    let err = CaseStore::open(garbage, StoreConfig::default()).unwrap_err();
    assert!(!err.to_string().contains("p4ss"), "{err}");
}

/// The near-duplicate search caches embeddings per connection, but the pending set always
/// comes from the database: a case another replica logged is found, and one it labelled is
/// no longer merged into.
#[test]
fn replicas_see_each_others_cases_through_the_database() {
    let db = PgDatabase::new();
    let (mut a, mut b) = (open(&db), open(&db));
    let x = a.log_case(case("chatcmpl-a1", unit(1), &["x"])).unwrap();
    let y = b.log_case(case("chatcmpl-b1", unit(2), &["x"])).unwrap();
    // a has never seen y: it merges into it all the same.
    assert_eq!(
        a.log_case(case("chatcmpl-a2", unit(2), &["x"])).unwrap(),
        Logged::Merged {
            id: y.id().to_owned(),
            occurrences: 2
        }
    );
    // b labels x, which a has cached: a opens a new case instead of merging.
    b.label_case(x.id(), Label::Allow, None, None).unwrap();
    let again = a.log_case(case("chatcmpl-a3", unit(1), &["x"])).unwrap();
    assert!(
        matches!(&again, Logged::Inserted { id } if id != x.id()),
        "{again:?}"
    );
    assert_eq!(
        b.log_case(case("chatcmpl-b2", unit(1), &["x"]))
            .unwrap()
            .id(),
        again.id()
    );
}
