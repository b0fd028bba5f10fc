//! Tests of the SQLite backend on real files in temporary directories: the shared conformance
//! checks, plus what only this backend has (the file, WAL mode, the blob encoding).

use super::*;
use crate::store::conformance::{conformance_tests, Fixture};
use crate::store::testing::{case, unit};

/// A fresh store file in a temporary directory.
struct Sqlite(tempfile::TempDir);

impl Sqlite {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }
}

impl Fixture for Sqlite {
    fn try_open(&self, config: StoreConfig) -> Result<crate::store::CaseStore> {
        crate::store::CaseStore::open(self.0.path().join("cases.db"), config)
    }
}

conformance_tests!(Sqlite::new());

#[test]
fn the_file_and_its_directories_are_made_and_embeddings_stored_as_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/cases.db");
    let mut store = SqliteStore::open(&path, StoreConfig::default()).unwrap();
    assert!(path.is_file());
    let id = store
        .log_case(case("chatcmpl-1", unit(3), &["x"]))
        .unwrap()
        .id()
        .to_owned();
    let stored: Vec<u8> = store
        .conn
        .query_row("SELECT embedding FROM cases WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(embedding::decode(&stored).unwrap(), unit(3));
}

#[test]
fn reopening_migrates_nothing_and_keeps_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.db");
    drop(SqliteStore::open(&path, StoreConfig::default()).unwrap());
    let store = SqliteStore::open(&path, StoreConfig::default()).unwrap();
    let version: i64 = store
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::VERSION);
    let mode: String = store
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}
