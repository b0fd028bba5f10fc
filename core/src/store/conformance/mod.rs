//! Behaviour every backend must show, written once: each backend's tests instantiate these with
//! [`conformance_tests!`] and a [`Fixture`] that opens a fresh, empty store of that backend.

use std::sync::Barrier;

use super::codec::now;
use super::testing::{case, near, record, unit};
use super::{
    export_jsonl, read_training_jsonl, CaseFilter, CaseStatus, CaseStore, ExportFilter,
    FeedbackLabel, Logged, StoreConfig, StoreCounts, StoreError, StoredCase, TrainingSource,
};
use crate::policy::Label;

/// A fresh store of one backend; every `open` reaches the same store.
pub(super) trait Fixture: Sync {
    fn try_open(&self, config: StoreConfig) -> Result<CaseStore, StoreError>;

    fn open_with(&self, config: StoreConfig) -> CaseStore {
        self.try_open(config).unwrap()
    }

    fn open(&self) -> CaseStore {
        self.open_with(StoreConfig::default())
    }
}

/// One `#[test]` per conformance check, each on its own fresh store from `$fixture`.
macro_rules! conformance_tests {
    ($fixture:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::store::conformance::$name(&$fixture);
            }
        )*
    };
    ($fixture:expr) => {
        $crate::store::conformance::conformance_tests!($fixture;
            a_logged_case_reads_back_field_for_field,
            a_response_record_reads_back_field_for_field,
            near_duplicates_merge_into_pending_cases_only,
            concurrent_writers_never_insert_a_duplicate,
            feedback_on_an_unknown_response_is_not_found,
            feedback_lands_on_the_logged_case_or_makes_one,
            a_case_from_a_record_without_embedding_never_merges,
            labelled_cases_export_through_jsonl,
            export_adds_cases_whose_feedback_agrees,
            one_key_cannot_turn_its_refusal_into_an_allow_case,
            old_and_excess_response_records_are_dropped,
            pending_cases_are_capped_and_stale_ones_expire,
            reopening_finds_everything,
            listing_pages_newest_first,
            bad_input_is_refused_before_it_is_stored,
            user_text_of_any_kind_reads_back,
        );
    };
}
pub(super) use conformance_tests;
pub(super) use feedback::{
    export_adds_cases_whose_feedback_agrees, feedback_lands_on_the_logged_case_or_makes_one,
    feedback_on_an_unknown_response_is_not_found,
    one_key_cannot_turn_its_refusal_into_an_allow_case,
};

mod feedback;
use feedback::feedback;

pub(super) fn a_logged_case_reads_back_field_for_field(fx: &dyn Fixture) {
    let mut store = fx.open();
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
}

pub(super) fn a_response_record_reads_back_field_for_field(fx: &dyn Fixture) {
    let mut store = fx.open();
    let mut r = record("chatcmpl-r", now());
    r.adapter = None;
    r.reasoning = None;
    r.verdict = None;
    r.verdict_probability = None;
    r.embedding = None;
    store.record_response(&r).unwrap();
    let full = record("chatcmpl-full", now());
    store.record_response(&full).unwrap();
    assert_eq!(store.response("chatcmpl-r").unwrap(), Some(r));
    assert_eq!(store.response("chatcmpl-full").unwrap(), Some(full.clone()));
    assert_eq!(store.response("chatcmpl-none").unwrap(), None);
    // The same id again replaces the record.
    let mut again = full;
    again.answer = "Use `kill -9 <pid>`.".into();
    store.record_response(&again).unwrap();
    assert_eq!(store.response("chatcmpl-full").unwrap(), Some(again));
    assert_eq!(store.counts().unwrap().responses, 2);
}

pub(super) fn near_duplicates_merge_into_pending_cases_only(fx: &dyn Fixture) {
    let mut store = fx.open();
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
    // The nearest pending case wins: closer to unit(1) than to unit(0).
    let nearer = store
        .log_case(case("chatcmpl-7", near(1, 0, 0.99), &["x"]))
        .unwrap();
    assert_eq!(nearer.id(), other.id());
    // A labelled case is closed: the same request opens a new one.
    store.label_case(&id, Label::Allow, None, None).unwrap();
    let after = store.log_case(case("chatcmpl-6", unit(0), &["x"])).unwrap();
    assert!(matches!(&after, Logged::Inserted { id: new } if *new != id));
    assert_eq!(store.get_case(&id).unwrap().occurrences, 3);
    let counts = store.counts().unwrap();
    assert_eq!((counts.pending, counts.labelled), (3, 1));
}

/// Eight writers with their own connections log 400 cases over 10 distinct requests at once.
pub(super) fn concurrent_writers_never_insert_a_duplicate(fx: &dyn Fixture) {
    let start = Barrier::new(8);
    std::thread::scope(|s| {
        for t in 0..8 {
            let start = &start;
            s.spawn(move || {
                let config = StoreConfig {
                    busy_timeout_ms: 60_000,
                    ..StoreConfig::default()
                };
                start.wait();
                let mut store = fx.open_with(config);
                for i in 0..50 {
                    let id = format!("chatcmpl-{t}-{i}");
                    store
                        .log_case(case(&id, unit((t * 7 + i) % 10), &["low_confidence"]))
                        .unwrap();
                }
            });
        }
    });
    let mut store = fx.open();
    let cases = store
        .list_cases(&CaseFilter {
            limit: 100,
            ..CaseFilter::default()
        })
        .unwrap();
    assert_eq!(cases.len(), 10);
    assert_eq!(cases.iter().map(|c| c.occurrences).sum::<u32>(), 400);
    // Every response is linked to its case exactly once: feedback on any of them lands.
    for t in 0..8 {
        for i in [0, 49] {
            let id = format!("chatcmpl-{t}-{i}");
            let out = store
                .feedback(feedback(&id, FeedbackLabel::Correct))
                .unwrap();
            assert!(!out.created_case, "{id} was not linked to its case");
        }
    }
}

pub(super) fn a_case_from_a_record_without_embedding_never_merges(fx: &dyn Fixture) {
    let mut store = fx.open();
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

pub(super) fn labelled_cases_export_through_jsonl(fx: &dyn Fixture) {
    let mut store = fx.open();
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

pub(super) fn pending_cases_are_capped_and_stale_ones_expire(fx: &dyn Fixture) {
    let mut store = fx.open_with(StoreConfig {
        pending_max: 3,
        pending_max_age_secs: 3600,
        ..StoreConfig::default()
    });
    let t = now();
    let ids: Vec<String> = (1..=3)
        .map(|i| {
            let c = case(&format!("chatcmpl-{i}"), unit(i), &["x"]);
            store.log_case(c).unwrap().id().to_owned()
        })
        .collect();
    // Full: a new case is refused, a near-duplicate still merges.
    let err = store
        .log_case(case("chatcmpl-4", unit(4), &["x"]))
        .unwrap_err();
    assert_eq!(err, StoreError::Full { pending_max: 3 });
    assert_eq!(err.code(), "store_full");
    let merged = store
        .log_case(case("chatcmpl-1b", unit(1), &["y"]))
        .unwrap();
    assert_eq!(merged.id(), ids[0]);
    // Feedback that would make a case is refused too, and nothing of it is stored.
    store.record_response(&record("chatcmpl-r", t)).unwrap();
    let err = store
        .feedback(feedback::feedback("chatcmpl-r", FeedbackLabel::Harmful))
        .unwrap_err();
    assert_eq!(err.code(), "store_full");
    assert_eq!(store.counts().unwrap().pending, 3);
    // Feedback on a case already logged still lands.
    store
        .feedback(feedback::feedback("chatcmpl-2", FeedbackLabel::Harmful))
        .unwrap();
    // Review makes room.
    store.label_case(&ids[0], Label::Allow, None, None).unwrap();
    let fourth = store.log_case(case("chatcmpl-4", unit(4), &["x"])).unwrap();
    assert!(matches!(fourth, Logged::Inserted { .. }));

    // Pending cases not seen for the maximum age go when a new one needs room, unless they
    // have feedback; reviewed cases stay.
    store
        .label_case(&ids[2], Label::Refuse, None, None)
        .unwrap();
    let stale = |id: &str, e| {
        let mut c = case(id, unit(e), &["x"]);
        c.created = t - 7200;
        c
    };
    let old_fb = store.log_case(stale("chatcmpl-old-fb", 8)).unwrap();
    store
        .feedback(feedback::feedback(
            "chatcmpl-old-fb",
            FeedbackLabel::OverRefusal,
        ))
        .unwrap();
    store
        .label_case(fourth.id(), Label::Allow, None, None)
        .unwrap();
    let old = store.log_case(stale("chatcmpl-old", 7)).unwrap();
    assert_eq!(store.counts().unwrap().pending, 3);
    let newer = store.log_case(case("chatcmpl-5", unit(5), &["x"])).unwrap();
    assert!(matches!(newer, Logged::Inserted { .. }));
    assert_eq!(
        store.get_case(old.id()).unwrap_err().code(),
        "not_found",
        "a stale pending case without feedback stayed"
    );
    let kept = store.get_case(old_fb.id()).unwrap();
    assert_eq!(kept.status, CaseStatus::Pending);
    assert_eq!(kept.feedback.len(), 1);
    assert_eq!(store.get_case(&ids[1]).unwrap().feedback.len(), 1);
    let counts = store.counts().unwrap();
    assert_eq!((counts.pending, counts.labelled), (3, 3));
}

pub(super) fn old_and_excess_response_records_are_dropped(fx: &dyn Fixture) {
    let config = StoreConfig {
        response_retention: 5,
        response_max_age_secs: 3600,
        ..StoreConfig::default()
    };
    let mut store = fx.open_with(config);
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

pub(super) fn reopening_finds_everything(fx: &dyn Fixture) {
    let (id, counts) = {
        let mut store = fx.open();
        store.record_response(&record("chatcmpl-1", now())).unwrap();
        let id = store
            .feedback(feedback("chatcmpl-1", FeedbackLabel::OverRefusal))
            .unwrap()
            .case_id;
        store.log_case(case("chatcmpl-2", unit(7), &["x"])).unwrap();
        (id, store.counts().unwrap())
    };
    let before = fx.open().get_case(&id).unwrap();
    let mut store = fx.open();
    assert_eq!(store.get_case(&id).unwrap(), before);
    assert_eq!(before.feedback.len(), 1);
    assert_eq!(store.counts().unwrap(), counts);
}

pub(super) fn listing_pages_newest_first(fx: &dyn Fixture) {
    let mut store = fx.open();
    let mut ids = Vec::new();
    // Recent enough that `pending_max_age_secs` keeps them.
    let t0 = now() - 1_000;
    for i in 0..5 {
        let mut c = case(&format!("chatcmpl-{i}"), unit(i), &["x"]);
        c.created = t0 + i as i64;
        ids.push(store.log_case(c).unwrap().id().to_owned());
    }
    ids.reverse();
    let mut list = |filter: CaseFilter| -> Vec<String> {
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
        since: Some(t0 + 1),
        until: Some(t0 + 3),
        ..CaseFilter::default()
    };
    assert_eq!(list(window), ids[2..4]);
    let pending = CaseFilter {
        status: Some(CaseStatus::Pending),
        limit: 3,
        ..CaseFilter::default()
    };
    assert_eq!(list(pending), ids[..3]);
    let huge = CaseFilter {
        limit: 1_000_000,
        ..CaseFilter::default()
    };
    assert_eq!(list(huge).len(), 5);
    let unknown = store.list_cases(&page(Some(&"case_nope".to_owned()), 0));
    assert_eq!(unknown.unwrap_err().code(), "not_found");
    assert_eq!(store.get_case("case_nope").unwrap_err().code(), "not_found");
}

pub(super) fn bad_input_is_refused_before_it_is_stored(fx: &dyn Fixture) {
    let mut store = fx.open();
    let empty = store.log_case(case("chatcmpl-1", Vec::new(), &["x"]));
    assert_eq!(empty.unwrap_err().code(), "invalid_input");
    let mut nan = case("chatcmpl-2", unit(0), &["x"]);
    nan.precedents[0].similarity = f32::NAN;
    assert_eq!(store.log_case(nan).unwrap_err().code(), "invalid_input");
    let mut inf = case("chatcmpl-3", unit(0), &["x"]);
    inf.embedding[1] = f32::INFINITY;
    assert_eq!(store.log_case(inf).unwrap_err().code(), "invalid_input");
    assert_eq!(store.counts().unwrap(), StoreCounts::default());
    let bad = StoreConfig {
        merge_threshold: f32::NAN,
        ..StoreConfig::default()
    };
    assert_eq!(fx.try_open(bad).unwrap_err().code(), "invalid_input");
}

/// Requests are user text: quotes, SQL, control characters, NUL and non-Latin scripts all
/// survive the round trip (NUL as U+FFFD where the backend cannot hold it).
pub(super) fn user_text_of_any_kind_reads_back(fx: &dyn Fixture) {
    let mut store = fx.open();
    let nasty = "Robert'); DROP TABLE cases;-- \"quoted\" \\ \u{7} tab\t 日本語 👋 $1 ?";
    let mut c = case("chatcmpl-nasty", unit(4), &["x"]);
    c.request = nasty.into();
    c.answer = format!("{nasty}\nline two");
    c.messages = serde_json::json!([{"role": "user", "content": format!("{nasty}\u{0}")}]);
    let logged = store.log_case(c.clone()).unwrap();
    let got = store.get_case(logged.id()).unwrap();
    assert_eq!(got.request, nasty);
    assert_eq!(got.answer, c.answer);
    assert_eq!(got.messages, c.messages, "JSON escapes NUL, so it survives");
    let mut with_nul = case("chatcmpl-nul", unit(5), &["x"]);
    with_nul.request = "before\u{0}after".into();
    let id = store.log_case(with_nul).unwrap().id().to_owned();
    let request = store.get_case(&id).unwrap().request;
    assert!(
        request == "before\u{0}after" || request == "before\u{FFFD}after",
        "{request:?}"
    );
    let listed = store.list_cases(&CaseFilter::default()).unwrap();
    assert_eq!(listed.len(), 2);
}
