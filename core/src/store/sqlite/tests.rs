//! Tests of the SQLite backend on real files in temporary directories.

use std::sync::Barrier;

use super::*;
use crate::store::testutil::{case, near, record, unit};
use crate::store::{export_jsonl, read_training_jsonl, CaseStatus, FeedbackLabel};

fn open(dir: &tempfile::TempDir) -> CaseStore {
    CaseStore::open(dir.path().join("cases.db"), StoreConfig::default()).unwrap()
}

fn feedback(response_id: &str, label: FeedbackLabel) -> NewFeedback {
    NewFeedback {
        response_id: response_id.into(),
        label,
        comment: Some("it refused a harmless question".into()),
    }
}

#[test]
fn a_logged_case_reads_back_field_for_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/cases.db");
    let mut store = CaseStore::open(&path, StoreConfig::default()).unwrap();
    assert!(path.is_file());
    let new = case(
        "chatcmpl-1",
        unit(3),
        &["low_confidence", "possible_over_refusal"],
    );
    let Logged::Inserted { id } = store.log_case(new.clone()).unwrap() else {
        panic!("an empty store merged");
    };
    assert!(id.starts_with("case_"), "{id}");
    let got = store.get_case(&id).unwrap();
    let want = StoredCase {
        id: id.clone(),
        created: new.created,
        last_seen: new.created,
        occurrences: 1,
        response_id: new.response_id,
        request_id: new.request_id,
        request: new.request,
        messages: new.messages,
        model: new.model,
        adapter: new.adapter,
        policy_version: new.policy_version,
        mode: new.mode,
        reasoning: new.reasoning,
        answer: new.answer,
        verdict: new.verdict,
        verdict_probability: new.verdict_probability,
        precedents: new.precedents,
        reasons: new.reasons,
        status: CaseStatus::Pending,
        label: None,
        reviewer_note: None,
        reviewer: None,
        labelled_at: None,
        feedback: Vec::new(),
    };
    assert_eq!(got, want);
    assert_eq!(
        store.list_cases(&CaseFilter::default()).unwrap(),
        vec![want]
    );
    let stored: Vec<u8> = store
        .conn
        .query_row("SELECT embedding FROM cases WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(embedding::decode(&stored).unwrap(), unit(3));
}

#[test]
fn a_response_record_reads_back_field_for_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let mut r = record("chatcmpl-r", now());
    r.adapter = None;
    r.reasoning = None;
    r.verdict = None;
    r.verdict_probability = None;
    store.record_response(&r).unwrap();
    let full = record("chatcmpl-full", now());
    store.record_response(&full).unwrap();
    let tx = store.conn.transaction().unwrap();
    assert_eq!(read_response(&tx, "chatcmpl-r").unwrap(), Some(r));
    assert_eq!(read_response(&tx, "chatcmpl-full").unwrap(), Some(full));
    assert_eq!(read_response(&tx, "chatcmpl-none").unwrap(), None);
}

#[test]
fn near_duplicates_merge_into_pending_cases_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let first = store.log_case(case("chatcmpl-1", unit(0), &["low_confidence"]));
    let Ok(Logged::Inserted { id }) = first else {
        panic!("{first:?}")
    };
    // Same request again, and a paraphrase (cosine 0.95 >= 0.92), a day later.
    let mut again = case("chatcmpl-2", unit(0), &["possible_over_refusal"]);
    again.created += 86_400;
    let merged = Logged::Merged {
        id: id.clone(),
        occurrences: 2,
    };
    assert_eq!(store.log_case(again).unwrap(), merged);
    let paraphrase = case("chatcmpl-3", near(0, 1, 0.95), &["low_confidence"]);
    assert!(matches!(
        store.log_case(paraphrase).unwrap(),
        Logged::Merged { occurrences: 3, .. }
    ));
    let c = store.get_case(&id).unwrap();
    assert_eq!(c.occurrences, 3);
    assert_eq!(c.reasons, ["low_confidence", "possible_over_refusal"]);
    assert_eq!(c.last_seen, c.created + 86_400);
    assert_eq!(c.response_id, "chatcmpl-1");
    // Orthogonal, and merely related (cosine 0.5), stay apart.
    let other = store.log_case(case("chatcmpl-4", unit(1), &["x"])).unwrap();
    assert!(matches!(other, Logged::Inserted { .. }));
    let related = store
        .log_case(case("chatcmpl-5", near(0, 2, 0.5), &["x"]))
        .unwrap();
    assert!(matches!(related, Logged::Inserted { .. }));
    // A labelled case is closed: the same request opens a new one.
    store.label_case(&id, Label::Allow, None, None).unwrap();
    let after = store.log_case(case("chatcmpl-6", unit(0), &["x"])).unwrap();
    assert!(matches!(&after, Logged::Inserted { id: new } if *new != id));
    assert_eq!(store.get_case(&id).unwrap().occurrences, 3);
    let counts = store.counts().unwrap();
    assert_eq!((counts.pending, counts.labelled), (3, 1));
}

#[test]
fn concurrent_writers_never_insert_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let start = Barrier::new(8);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (path, start) = (&path, &start);
            s.spawn(move || {
                start.wait();
                let config = StoreConfig {
                    busy_timeout_ms: 60_000,
                    ..StoreConfig::default()
                };
                let mut store = CaseStore::open(path, config).unwrap();
                for i in 0..50 {
                    let id = format!("chatcmpl-{t}-{i}");
                    store
                        .log_case(case(&id, unit((t * 7 + i) % 10), &["low_confidence"]))
                        .unwrap();
                }
            });
        }
    });
    let store = CaseStore::open(&path, StoreConfig::default()).unwrap();
    let cases = store
        .list_cases(&CaseFilter {
            limit: 100,
            ..CaseFilter::default()
        })
        .unwrap();
    assert_eq!(cases.len(), 10);
    assert_eq!(cases.iter().map(|c| c.occurrences).sum::<u32>(), 400);
    let links: i64 = store
        .conn
        .query_row("SELECT count(*) FROM case_responses", [], |r| r.get(0))
        .unwrap();
    assert_eq!(links, 400);
}

#[test]
fn feedback_on_an_unknown_response_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let err = store
        .feedback(feedback("chatcmpl-nope", FeedbackLabel::Harmful))
        .unwrap_err();
    assert_eq!(err.code(), "not_found");
    assert_eq!(store.counts().unwrap(), StoreCounts::default());
}

#[test]
fn feedback_lands_on_the_logged_case_or_makes_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let t = now();
    for id in ["chatcmpl-a", "chatcmpl-b", "chatcmpl-c"] {
        store.record_response(&record(id, t)).unwrap();
    }
    // a was logged, b merged into a's case, c only recorded.
    let logged = store.log_case(case("chatcmpl-a", unit(5), &["x"])).unwrap();
    let merged = store.log_case(case("chatcmpl-b", unit(5), &["y"])).unwrap();
    assert_eq!(merged.id(), logged.id());
    let on_a = store
        .feedback(feedback("chatcmpl-a", FeedbackLabel::OverRefusal))
        .unwrap();
    let on_b = store
        .feedback(feedback("chatcmpl-b", FeedbackLabel::Correct))
        .unwrap();
    assert_eq!(
        (on_a.case_id.as_str(), on_a.created_case),
        (logged.id(), false)
    );
    assert_eq!(
        (on_b.case_id.as_str(), on_b.created_case),
        (logged.id(), false)
    );
    let fb = store.get_case(logged.id()).unwrap().feedback;
    assert_eq!(fb.len(), 2);
    assert_eq!(fb[0].id, on_a.feedback_id);
    assert_eq!(fb[0].response_id, "chatcmpl-a");
    assert_eq!(fb[0].label, FeedbackLabel::OverRefusal);
    assert_eq!(
        fb[0].comment.as_deref(),
        Some("it refused a harmless question")
    );
    assert!(fb[0].created >= t);
    assert_eq!(fb[1].label, FeedbackLabel::Correct);

    let on_c = store
        .feedback(feedback("chatcmpl-c", FeedbackLabel::Harmful))
        .unwrap();
    assert!(on_c.created_case);
    let c = store.get_case(&on_c.case_id).unwrap();
    assert_eq!(c.reasons, ["feedback"]);
    assert_eq!(c.response_id, "chatcmpl-c");
    assert_eq!(c.request, record("chatcmpl-c", t).request);
    assert_eq!(c.precedents, record("chatcmpl-c", t).precedents);
    assert_eq!(c.feedback.len(), 1);
    let again = store
        .feedback(NewFeedback {
            comment: None,
            ..feedback("chatcmpl-c", FeedbackLabel::Harmful)
        })
        .unwrap();
    assert_eq!((again.case_id, again.created_case), (on_c.case_id, false));
    assert_eq!(store.counts().unwrap().pending, 2);
}

#[test]
fn a_case_from_a_record_without_embedding_never_merges() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let mut r = record("chatcmpl-plain", now());
    r.embedding = None;
    store.record_response(&r).unwrap();
    let out = store
        .feedback(feedback("chatcmpl-plain", FeedbackLabel::OverRefusal))
        .unwrap();
    assert!(out.created_case);
    let later = store.log_case(case("chatcmpl-x", unit(0), &["x"])).unwrap();
    assert_ne!(later.id(), out.case_id);
}

#[test]
fn labelled_cases_export_through_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let a = store.log_case(case("chatcmpl-a", unit(0), &["x"])).unwrap();
    let b = store.log_case(case("chatcmpl-b", unit(1), &["x"])).unwrap();
    let labelled = store
        .label_case(
            a.id(),
            Label::Allow,
            Some("killing a process is routine".into()),
            Some("reviewer@example.org".into()),
        )
        .unwrap();
    assert_eq!(labelled.status, CaseStatus::Labelled);
    assert_eq!(labelled.label, Some(Label::Allow));
    assert_eq!(labelled.reviewer.as_deref(), Some("reviewer@example.org"));
    assert!(labelled.labelled_at.is_some_and(|t| t >= labelled.created));
    let err = store.label_case("case_nope", Label::Refuse, None, None);
    assert_eq!(err.unwrap_err().code(), "not_found");

    let exported = store.export(&ExportFilter::default()).unwrap();
    assert_eq!(exported.len(), 1);
    let t = &exported[0];
    assert_eq!(t.id, a.id());
    assert_eq!((t.label, t.source), (Label::Allow, TrainingSource::Review));
    assert_eq!(t.note.as_deref(), Some("killing a process is routine"));
    assert_eq!(t.request, labelled.request);
    assert_eq!(t.messages, labelled.messages);
    assert_eq!(t.policy_version, labelled.policy_version);
    assert_eq!(t.created, labelled.created);
    assert_eq!(
        read_training_jsonl(&export_jsonl(&exported)).unwrap(),
        exported
    );

    let pending = CaseFilter {
        status: Some(CaseStatus::Pending),
        ..CaseFilter::default()
    };
    let listed = store.list_cases(&pending).unwrap();
    assert_eq!(
        listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [b.id()]
    );
    let later = ExportFilter {
        since: Some(now() + 3600),
        ..ExportFilter::default()
    };
    assert!(store.export(&later).unwrap().is_empty());
}

#[test]
fn export_adds_cases_whose_feedback_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    for id in [
        "chatcmpl-agree",
        "chatcmpl-split",
        "chatcmpl-none",
        "chatcmpl-done",
    ] {
        store.record_response(&record(id, now())).unwrap();
    }
    let fb = |store: &mut CaseStore, id: &str, label| {
        store.feedback(feedback(id, label)).unwrap().case_id
    };
    let agree = fb(&mut store, "chatcmpl-agree", FeedbackLabel::OverRefusal);
    fb(&mut store, "chatcmpl-agree", FeedbackLabel::OverRefusal);
    // The verdict was refuse: `correct` votes refuse, and one each is no majority.
    fb(&mut store, "chatcmpl-split", FeedbackLabel::OverRefusal);
    fb(&mut store, "chatcmpl-split", FeedbackLabel::Correct);
    store
        .log_case(case("chatcmpl-none", unit(9), &["x"]))
        .unwrap();
    let done = fb(&mut store, "chatcmpl-done", FeedbackLabel::Harmful);
    store
        .label_case(&done, Label::SafeComplete, None, None)
        .unwrap();

    let review_only = store.export(&ExportFilter::default()).unwrap();
    assert_eq!(review_only.len(), 1);
    let with_feedback = ExportFilter {
        include_feedback: true,
        since: None,
    };
    let all = store.export(&with_feedback).unwrap();
    let got: Vec<_> = all
        .iter()
        .map(|t| (t.id.as_str(), t.label, t.source))
        .collect();
    assert_eq!(
        got,
        [
            (done.as_str(), Label::SafeComplete, TrainingSource::Review),
            (agree.as_str(), Label::Allow, TrainingSource::Feedback),
        ]
    );
    let later = ExportFilter {
        include_feedback: true,
        since: Some(now() + 3600),
    };
    assert!(store.export(&later).unwrap().is_empty());
}

#[test]
fn old_and_excess_response_records_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        response_retention: 5,
        response_max_age_secs: 3600,
        ..StoreConfig::default()
    };
    let mut store = CaseStore::open(dir.path().join("r.db"), config).unwrap();
    let t = now();
    for i in 0..20 {
        store
            .record_response(&record(&format!("chatcmpl-{i}"), t))
            .unwrap();
    }
    assert_eq!(store.counts().unwrap().responses, 5);
    let gone = store.feedback(feedback("chatcmpl-14", FeedbackLabel::Harmful));
    assert_eq!(gone.unwrap_err().code(), "not_found");
    assert!(store
        .feedback(feedback("chatcmpl-15", FeedbackLabel::Harmful))
        .is_ok());
    // Older than the maximum age: dropped at once, and it takes nothing newer with it.
    store
        .record_response(&record("chatcmpl-old", t - 7200))
        .unwrap();
    assert_eq!(store.counts().unwrap().responses, 4);
    let old = store.feedback(feedback("chatcmpl-old", FeedbackLabel::Harmful));
    assert_eq!(old.unwrap_err().code(), "not_found");
    // A logged case keeps taking feedback after its response record is gone.
    store
        .log_case(case("chatcmpl-logged", unit(1), &["x"]))
        .unwrap();
    for i in 20..30 {
        store
            .record_response(&record(&format!("chatcmpl-{i}"), t))
            .unwrap();
    }
    assert!(store
        .feedback(feedback("chatcmpl-logged", FeedbackLabel::Correct))
        .is_ok());
}

#[test]
fn reopening_finds_everything_and_migrates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (id, counts) = {
        let mut store = open(&dir);
        store.record_response(&record("chatcmpl-1", now())).unwrap();
        let id = store
            .feedback(feedback("chatcmpl-1", FeedbackLabel::OverRefusal))
            .unwrap()
            .case_id;
        store.log_case(case("chatcmpl-2", unit(7), &["x"])).unwrap();
        (id, store.counts().unwrap())
    };
    let before = open(&dir).get_case(&id).unwrap();
    let store = open(&dir);
    assert_eq!(store.get_case(&id).unwrap(), before);
    assert_eq!(before.feedback.len(), 1);
    assert_eq!(store.counts().unwrap(), counts);
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

#[test]
fn listing_pages_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut c = case(&format!("chatcmpl-{i}"), unit(i), &["x"]);
        c.created = 1_000 + i as i64;
        ids.push(store.log_case(c).unwrap().id().to_owned());
    }
    ids.reverse();
    let list = |filter: CaseFilter| -> Vec<String> {
        let cases = store.list_cases(&filter).unwrap();
        cases.into_iter().map(|c| c.id).collect()
    };
    let page = |before_id: Option<&String>, offset| CaseFilter {
        limit: 2,
        before_id: before_id.cloned(),
        offset,
        ..CaseFilter::default()
    };
    assert_eq!(list(CaseFilter::default()), ids);
    assert_eq!(list(page(None, 0)), ids[..2]);
    assert_eq!(list(page(Some(&ids[1]), 0)), ids[2..4]);
    assert_eq!(list(page(Some(&ids[3]), 0)), ids[4..]);
    assert_eq!(list(page(None, 2)), ids[2..4]);
    let window = CaseFilter {
        since: Some(1_001),
        until: Some(1_003),
        ..CaseFilter::default()
    };
    assert_eq!(list(window), ids[2..4]);
    let huge = CaseFilter {
        limit: 1_000_000,
        ..CaseFilter::default()
    };
    assert_eq!(list(huge).len(), 5);
    let unknown = store.list_cases(&page(Some(&"case_nope".to_owned()), 0));
    assert_eq!(unknown.unwrap_err().code(), "not_found");
    assert_eq!(store.get_case("case_nope").unwrap_err().code(), "not_found");
}

#[test]
fn bad_input_is_refused_before_it_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let empty = store.log_case(case("chatcmpl-1", Vec::new(), &["x"]));
    assert_eq!(empty.unwrap_err().code(), "invalid_input");
    let mut nan = case("chatcmpl-2", unit(0), &["x"]);
    nan.precedents[0].similarity = f32::NAN;
    assert_eq!(store.log_case(nan).unwrap_err().code(), "invalid_input");
    assert_eq!(store.counts().unwrap(), StoreCounts::default());
    let bad = StoreConfig {
        merge_threshold: f32::NAN,
        ..StoreConfig::default()
    };
    let err = CaseStore::open(dir.path().join("x.db"), bad).unwrap_err();
    assert_eq!(err.code(), "invalid_input");
}
