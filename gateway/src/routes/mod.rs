//! Routing: one file per endpoint group, all answering through the same error mapping.

pub mod adapter;
pub mod admin;
pub mod chat;
pub mod completions;
pub mod feedback;
pub mod health;
pub mod models;
pub mod moderations;

use std::sync::{Arc, Mutex};

use hyper::header::HeaderValue;
use hyper::http::request::Parts;
use hyper::{Method, Request};

use crate::auth::{Access, Principal, RateHeaders};
use crate::cache::{CacheStatus, KeyBuilder, Lookup};
use crate::error::ApiError;
use crate::generate::Settle;
use crate::server::{Incoming, Response};
use crate::state::AppState;

/// What an endpoint needs: health, readiness and metrics are open, `/admin/` needs an admin key,
/// everything else a user key.
pub fn access_for(path: &str) -> Access {
    match path {
        "/healthz" | "/readyz" | "/metrics" => Access::Open,
        p if p == "/admin" || p.starts_with("/admin/") => Access::Admin,
        _ => Access::User,
    }
}

/// The caller's rate-limit state, shared with the handler (which charges tokens) so the
/// response reports it.
#[derive(Debug, Clone, Default)]
pub struct RateNote(Arc<Mutex<RateHeaders>>);

impl RateNote {
    pub fn update(&self, f: impl FnOnce(&mut RateHeaders)) {
        if let Ok(mut h) = self.0.lock() {
            f(&mut h);
        }
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        self.0.lock().map(|h| h.pairs()).unwrap_or_default()
    }
}

/// The authenticated caller of a request and its rate note (request extensions).
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Arc<Principal>,
    pub rate: RateNote,
}

/// The mode a request is served with and whether its verdict is enforced, by the caller's
/// safety policy (a mode it may not choose is a 403) and the server's `[safety] enforce`.
pub fn safety_for(
    state: &AppState,
    caller: Option<&Caller>,
    requested: Option<crate::safety::Mode>,
    model: &str,
) -> Result<(crate::safety::Mode, bool), ApiError> {
    let policy = state.keys.safety_policy(caller.map(|c| &*c.principal));
    let mode = policy.mode(requested, state.config.safety.mode_for(model))?;
    Ok((mode, policy.enforce && state.config.safety.enforce))
}

/// Charges `prompt_tokens` (counted by `count`, only when the caller's tokens are budgeted) to
/// the caller's token budget; returns the charge to settle when the response ends.
pub fn admit_tokens(
    caller: Option<&Caller>,
    count: impl FnOnce() -> Result<usize, ApiError>,
) -> Result<Option<Settle>, ApiError> {
    let Some(c) = caller.filter(|c| c.principal.limiter.limits_tokens()) else {
        return Ok(None);
    };
    let prompt_tokens = count()?;
    let mut admitted = Ok(());
    c.rate.update(|h| {
        admitted = c
            .principal
            .limiter
            .admit_tokens(u32::try_from(prompt_tokens).unwrap_or(u32::MAX), h);
    });
    admitted?;
    Ok(Some(Settle {
        principal: Arc::clone(&c.principal),
        charged: prompt_tokens,
    }))
}

/// Looks a request up in the response cache and counts the outcome; on a hit, marks the
/// request as served from the cache (its tokens are not counted as model work).
pub fn look_up(
    state: &AppState,
    caller: Option<&Caller>,
    endpoint: &str,
    params: &cada_core::GenerationParams,
    key: impl FnOnce(KeyBuilder) -> KeyBuilder,
) -> Lookup {
    let name = caller.map(|c| c.principal.name.as_str());
    let lookup = Lookup::of(state.cache.as_ref(), name, endpoint, params, key);
    match lookup.status() {
        CacheStatus::Hit => {
            state.metrics.cache_hit();
            crate::metrics::served_from_cache();
        }
        CacheStatus::Miss => state.metrics.cache_miss(),
        CacheStatus::Bypass => {}
    }
    lookup
}

/// Serves a cache hit: charges the caller for the entry's prompt tokens (completion tokens are
/// settled when the replay ends, as for a live answer) and replays it.
pub fn replay_hit(
    caller: Option<&Caller>,
    entry: &crate::cache::Entry,
) -> Result<(crate::events::Source, Option<Settle>), ApiError> {
    let settle = admit_tokens(caller, || Ok(entry.usage.prompt_tokens))?;
    Ok((entry.replay(), settle))
}

/// Authenticates, admits the request against the key's request budget, dispatches it, and
/// stamps the key's rate-limit state on the response, errors included.
pub async fn route(state: Arc<AppState>, mut req: Request<Incoming>) -> Result<Response, ApiError> {
    let access = access_for(req.uri().path());
    let principal = state.keys.authenticate(req.headers(), access)?;
    let Some(principal) = principal else {
        if access == Access::Open {
            return dispatch(state, req).await;
        }
        return anonymous(state, req).await;
    };
    let rate = RateNote::default();
    let mut admitted = Ok(());
    rate.update(|h| admitted = principal.limiter.admit_request(h));
    if let Err(mut e) = admitted {
        tracing::info!(key = %principal.name, "request rate limit reached");
        state.metrics.rate_limited(e.kind);
        e.headers.extend(rate.pairs());
        return Err(e);
    }
    req.extensions_mut().insert(Caller {
        principal: Arc::clone(&principal),
        rate: rate.clone(),
    });
    match dispatch(Arc::clone(&state), req).await {
        Ok(mut resp) => {
            for (name, value) in rate.pairs() {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    resp.headers_mut().insert(name, v);
                }
            }
            Ok(resp)
        }
        Err(mut e) => {
            if e.code == "rate_limit_exceeded" {
                tracing::info!(key = %principal.name, "token rate limit reached");
                state.metrics.rate_limited(e.kind);
            }
            e.headers.extend(rate.pairs());
            Err(e)
        }
    }
}

/// A call without a key to an open user endpoint: within the request budget every anonymous
/// caller shares (`[auth.anonymous]`), stamped on the response like a key's.
async fn anonymous(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response, ApiError> {
    let limiter = &state.keys.anonymous_limiter;
    if limiter.is_unlimited() {
        return dispatch(state, req).await;
    }
    let mut headers = RateHeaders::default();
    if let Err(mut e) = limiter.admit_request(&mut headers) {
        tracing::info!("anonymous request rate limit reached");
        state.metrics.rate_limited(e.kind);
        e.headers.extend(headers.pairs());
        return Err(e);
    }
    let mut resp = dispatch(state, req).await;
    let pairs = headers.pairs();
    match &mut resp {
        Ok(r) => {
            for (name, value) in pairs {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    r.headers_mut().insert(name, v);
                }
            }
        }
        Err(e) => e.headers.extend(pairs),
    }
    resp
}

/// Runs an inference handler within global admission control: refused at once when the gateway
/// is full, else holding its place until the response body ends. The body is read first
/// (within `limits.body_timeout_secs`): a client trickling its body holds its connection, which
/// `limits.max_connections` bounds, never one of the places the engine's callers need.
async fn admitted<'a, Fut>(
    state: &'a AppState,
    req: Request<Incoming>,
    handler: impl FnOnce(&'a AppState, Parts, serde_json::Value) -> Fut,
) -> Result<Response, ApiError>
where
    Fut: std::future::Future<Output = Result<Response, ApiError>> + 'a,
{
    let (parts, body) = req.into_parts();
    let body = crate::server::read_body(&parts.headers, body, &state.config.limits).await?;
    let permit = state.admission.admit()?;
    let resp = handler(state, parts, body).await?;
    Ok(crate::body_guard::hold(resp, permit))
}

/// The metrics listener (`metrics_listen`): `GET /metrics` and `GET /healthz`, nothing else.
pub fn metrics_port(state: &AppState, req: &Request<Incoming>) -> Response {
    let answer = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => Ok(state.metrics.scrape(state)),
        (&Method::GET, "/healthz") => Ok(health::live(state)),
        (m, p @ ("/metrics" | "/healthz")) => Err(ApiError::method_not_allowed(m, p)),
        (m, p) => Err(ApiError::unknown_url(m, p)),
    };
    answer.unwrap_or_else(|e| e.response())
}

/// Sends a request to its handler.
async fn dispatch(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response, ApiError> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match (method.clone(), path.as_str()) {
        (Method::GET, "/healthz") => Ok(health::live(&state)),
        (Method::GET, "/readyz") => Ok(health::ready(&state)),
        (_, "/metrics") if state.config.metrics_listen.is_some() => {
            Err(ApiError::unknown_url(&method, &path))
        }
        (Method::GET, "/metrics") => Ok(state.metrics.scrape(&state)),
        (Method::GET, "/v1/models") => Ok(models::list(&state)),
        (Method::GET, p) if p.starts_with("/v1/models/") => {
            models::get(&state, &p["/v1/models/".len()..])
        }
        (Method::POST, "/v1/chat/completions") => admitted(&state, req, chat::handle).await,
        (Method::POST, "/v1/completions") => admitted(&state, req, completions::handle).await,
        (Method::POST, "/v1/moderations") => admitted(&state, req, moderations::handle).await,
        (Method::POST, "/v1/feedback") => feedback::handle(&state, req).await,
        (_, p) if p == "/admin/cases" || p.starts_with("/admin/cases/") => {
            admin::route(&state, req).await
        }
        (_, p) if p == "/admin/adapter" || p.starts_with("/admin/adapter/") => {
            adapter::route(state, req).await
        }
        (
            _,
            "/healthz"
            | "/readyz"
            | "/metrics"
            | "/v1/models"
            | "/v1/chat/completions"
            | "/v1/completions"
            | "/v1/feedback",
        ) => Err(ApiError::method_not_allowed(&method, &path)),
        _ => Err(ApiError::unknown_url(&method, &path)),
    }
}
