//! Liveness (`/healthz`: the process answers and its engine has not failed) and readiness
//! (`/readyz`: the model and the safety layer are loaded and the engine serves), with slot,
//! queue and case-store counters. A failed engine (a panic, a llama.cpp abort, a hung step)
//! turns both to 503 with the reason, so orchestrators restart the process.

use std::sync::atomic::Ordering;

use hyper::StatusCode;
use serde_json::json;

use crate::server::{json_response, Response};
use crate::state::AppState;

pub fn live(state: &AppState) -> Response {
    match state.engine_failure() {
        Some(f) => failed(&f),
        None => json_response(StatusCode::OK, &json!({"status": "ok"})),
    }
}

/// The answer of both endpoints once the engine has failed.
fn failed(f: &cada_core::Failure) -> Response {
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({"status": "failed", "reason": f.kind.as_str(), "message": f.message}),
    )
}

pub fn ready(state: &AppState) -> Response {
    if let Some(f) = state.engine_failure() {
        return failed(&f);
    }
    match state.served() {
        Some(s) => {
            let stats = s.engine.stats();
            let store = state.safety().map(|safety| {
                let st = safety.store.stats();
                json!({
                    "cases_logged": st.logged.load(Ordering::Relaxed),
                    "cases_merged": st.merged.load(Ordering::Relaxed),
                    "responses_recorded": st.recorded.load(Ordering::Relaxed),
                    "errors": st.errors.load(Ordering::Relaxed),
                    "dropped": st.dropped.load(Ordering::Relaxed),
                })
            });
            json_response(
                StatusCode::OK,
                &json!({
                    "status": "ready",
                    "model": s.name,
                    "adapter": s.adapter,
                    "slots": s.engine.config().n_slots,
                    "slots_active": stats.active.load(Ordering::Relaxed),
                    "queued": stats.queued.load(Ordering::Relaxed),
                    "policy_version": state.safety().map(|s| s.policy.version.as_str()),
                    "store": store,
                }),
            )
        }
        None => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "loading"}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn not_ready_until_the_model_is_loaded() {
        let state = AppState::new(Config::default()).expect("state");
        assert_eq!(ready(&state).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(live(&state).status(), StatusCode::OK);
        assert_eq!(
            state.engine_for("m").expect_err("loading").code,
            "model_not_ready"
        );
    }
}
