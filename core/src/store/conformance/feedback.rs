//! The conformance checks of feedback: where it lands, and when it becomes a training label.

use super::Fixture;
use crate::policy::Label;
use crate::store::codec::now;
use crate::store::testing::{case, record, unit};
use crate::store::{
    CaseStore, ExportFilter, FeedbackLabel, NewFeedback, StoreCounts, TrainingSource,
    DEFAULT_FEEDBACK_QUORUM,
};

pub(in crate::store) fn feedback(response_id: &str, label: FeedbackLabel) -> NewFeedback {
    NewFeedback {
        response_id: response_id.into(),
        label,
        comment: Some("it refused a harmless question".into()),
        caller: None,
    }
}

/// Feedback sent with the key named `key`.
fn from(key: &str, response_id: &str, label: FeedbackLabel) -> NewFeedback {
    NewFeedback {
        caller: Some(key.into()),
        ..feedback(response_id, label)
    }
}

pub(in crate::store) fn feedback_on_an_unknown_response_is_not_found(fx: &dyn Fixture) {
    let mut store = fx.open();
    let err = store
        .feedback(feedback("chatcmpl-nope", FeedbackLabel::Harmful))
        .unwrap_err();
    assert_eq!(err.code(), "not_found");
    assert_eq!(store.counts().unwrap(), StoreCounts::default());
}

pub(in crate::store) fn feedback_lands_on_the_logged_case_or_makes_one(fx: &dyn Fixture) {
    let mut store = fx.open();
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

pub(in crate::store) fn export_adds_cases_whose_feedback_agrees(fx: &dyn Fixture) {
    let mut store = fx.open();
    for id in [
        "chatcmpl-agree",
        "chatcmpl-split",
        "chatcmpl-none",
        "chatcmpl-done",
    ] {
        store.record_response(&record(id, now())).unwrap();
    }
    let fb = |store: &mut CaseStore, id: &str, label, key: &str| {
        store.feedback(from(key, id, label)).unwrap().case_id
    };
    let agree = fb(
        &mut store,
        "chatcmpl-agree",
        FeedbackLabel::OverRefusal,
        "alice",
    );
    fb(
        &mut store,
        "chatcmpl-agree",
        FeedbackLabel::OverRefusal,
        "bob",
    );
    // The verdict was refuse: `correct` votes refuse, and one each is no majority.
    fb(
        &mut store,
        "chatcmpl-split",
        FeedbackLabel::OverRefusal,
        "alice",
    );
    fb(&mut store, "chatcmpl-split", FeedbackLabel::Correct, "bob");
    store
        .log_case(case("chatcmpl-none", unit(9), &["x"]))
        .unwrap();
    let done = fb(&mut store, "chatcmpl-done", FeedbackLabel::Harmful, "alice");
    store
        .label_case(&done, Label::SafeComplete, None, None)
        .unwrap();

    let review_only = store.export(&ExportFilter::default()).unwrap();
    assert_eq!(review_only.len(), 1);
    let with_feedback = ExportFilter {
        include_feedback: true,
        ..ExportFilter::default()
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
        ..ExportFilter::default()
    };
    assert!(store.export(&later).unwrap().is_empty());
}

pub(in crate::store) fn one_key_cannot_turn_its_refusal_into_an_allow_case(fx: &dyn Fixture) {
    let mut store = fx.open();
    // Mallory's harmful request was refused (the record's verdict is `refuse`); one response
    // only recorded, one logged as a case, so both ways feedback finds its case are covered.
    let mut refused = record("chatcmpl-mallory", now());
    refused.caller = Some("mallory".into());
    store.record_response(&refused).unwrap();
    let mut logged = case("chatcmpl-logged", unit(3), &["low_confidence"]);
    logged.caller = Some("mallory".into());
    store.log_case(logged).unwrap();
    let export = |store: &mut CaseStore, quorum: u32| {
        store
            .export(&ExportFilter {
                include_feedback: true,
                feedback_quorum: quorum,
                since: None,
            })
            .unwrap()
    };
    for response in ["chatcmpl-mallory", "chatcmpl-logged"] {
        for _ in 0..5 {
            store
                .feedback(from("mallory", response, FeedbackLabel::OverRefusal))
                .unwrap();
        }
        // Anonymous reports cannot be told apart from the requester's.
        store
            .feedback(feedback(response, FeedbackLabel::OverRefusal))
            .unwrap();
    }
    assert!(
        export(&mut store, 1).is_empty(),
        "the requester's own feedback voted"
    );
    let case_id = store
        .feedback(from(
            "alice",
            "chatcmpl-mallory",
            FeedbackLabel::OverRefusal,
        ))
        .unwrap()
        .case_id;
    let stored = store.get_case(&case_id).unwrap();
    let who: Vec<_> = stored
        .feedback
        .iter()
        .map(|f| (f.caller.as_deref(), f.from_requester))
        .collect();
    assert_eq!(who[0], (Some("mallory"), true));
    assert_eq!(who[5], (None, false));
    assert_eq!(who[6], (Some("alice"), false));
    // One independent key: enough for a quorum of 1, not for the default of 2.
    assert_eq!(export(&mut store, 1).len(), 1);
    assert!(export(&mut store, DEFAULT_FEEDBACK_QUORUM).is_empty());
    store
        .feedback(from("bob", "chatcmpl-mallory", FeedbackLabel::OverRefusal))
        .unwrap();
    let agreed = export(&mut store, DEFAULT_FEEDBACK_QUORUM);
    let got: Vec<_> = agreed.iter().map(|t| (t.id.as_str(), t.label)).collect();
    assert_eq!(got, [(case_id.as_str(), Label::Allow)]);
}
