//! The HTTP server: accepts connections, reads bodies within limits, dispatches to the routes,
//! stamps every response with a request id, and drains in-flight requests on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::error::ApiError;
use crate::routes;
use crate::state::AppState;
use crate::GatewayError;

pub type Incoming = hyper::body::Incoming;

/// The id stamped on a request and its response (`x-request-id`), for handlers that record it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);
pub type Body = BoxBody<Bytes, Infallible>;
pub type Response = hyper::Response<Body>;

/// A JSON response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A plain-text (or other text) response; callers set the content type.
pub fn text_response(status: StatusCode, text: String) -> Response {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(text)).boxed());
    *resp.status_mut() = status;
    resp
}

/// An SSE response around a streaming body.
pub fn sse_response(body: Body) -> Response {
    let mut resp = hyper::Response::new(body);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Bytes of an oversized body read and thrown away before answering 413, so that a client
/// still sending gets the error instead of a broken pipe. Beyond it the connection is closed.
const DISCARD_CAP: usize = 16 << 20;
const DISCARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a JSON body of at most `limits.max_body_bytes`, arriving within
/// `limits.body_timeout_secs` (a client trickling its body gets 408, not a held connection).
pub async fn read_json(
    req: Request<Incoming>,
    limits: &crate::config::Limits,
) -> Result<serde_json::Value, ApiError> {
    let (parts, body) = req.into_parts();
    read_body(&parts.headers, body, limits).await
}

/// [`read_json`] on a request already split into its head and body.
pub async fn read_body(
    headers: &hyper::HeaderMap,
    body: Incoming,
    limits: &crate::config::Limits,
) -> Result<serde_json::Value, ApiError> {
    let within = Duration::from_secs(limits.body_timeout_secs.max(1));
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    tokio::time::timeout(
        within,
        read_json_body(declared, body, limits.max_body_bytes),
    )
    .await
    .map_err(|_| ApiError::request_timeout(within))?
}

async fn read_json_body(
    declared: Option<u64>,
    mut body: Incoming,
    limit: usize,
) -> Result<serde_json::Value, ApiError> {
    if declared.is_some_and(|n| n > limit as u64) {
        if declared.is_some_and(|n| n <= DISCARD_CAP as u64) {
            discard(body).await;
        }
        return Err(ApiError::body_too_large(limit));
    }
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::invalid_json(format!("could not read the body: {e}")))?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > limit {
                discard(body).await;
                return Err(ApiError::body_too_large(limit));
            }
            bytes.extend_from_slice(data);
        }
    }
    serde_json::from_slice(&bytes).map_err(ApiError::invalid_json)
}

async fn discard(mut body: Incoming) {
    let drain = async {
        let mut seen = 0;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > DISCARD_CAP {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIMEOUT, drain).await;
}

async fn handle(state: Arc<AppState>, mut req: Request<Incoming>) -> Result<Response, Infallible> {
    let started = Instant::now();
    let request_id = format!("req_{}", uuid::Uuid::new_v4().simple());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // Counts the request when its response body ends (or here, if it never starts).
    let (in_flight, measured) = state.metrics.begin(&path);
    let timing = Arc::clone(&measured);
    let mut resp = match crate::metrics::scope(measured, routes::route(state, req)).await {
        Ok(resp) => resp,
        Err(e) => {
            in_flight.error(e.code);
            tracing::info!(%request_id, %method, %path, status = e.status.as_u16(), code = e.code, "request refused");
            e.response()
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    // Up to the response head: a whole JSON response, a stream's first bytes.
    let (gateway, model) = timing.timing();
    let server_timing = format!(
        "gateway;dur={:.3}, model;dur={:.3}",
        gateway.as_secs_f64() * 1e3,
        model.as_secs_f64() * 1e3
    );
    if let Ok(v) = HeaderValue::from_str(&server_timing) {
        resp.headers_mut().insert("server-timing", v);
    }
    tracing::debug!(%request_id, %method, %path, status = resp.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64, "request handled");
    Ok(in_flight.respond(resp))
}

/// Serves the gateway on `listener` until `shutdown` completes, then drains in-flight requests
/// and the case store. The model loads in the background: `/readyz` says 503 until it is ready,
/// and a failed load ends `run` with the error. An engine that fails while serving (see
/// `cada_core::FailureKind`) turns health and readiness to 503 and ends `run` with its error
/// `engine.exit_after_failure_secs` later, drained the same way, so a supervisor restarts it.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    let grace = config.shutdown_grace();
    let header_timeout = Duration::from_secs(config.limits.header_timeout_secs.max(1));
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState::new(config)?);
    if !state.keys.enabled() && !addr.ip().is_loopback() && !state.config.insecure_no_auth {
        return Err(GatewayError::Internal(format!(
            "refusing to serve {addr} with no API key configured: anyone who can reach it could \
             use the model unguarded by keys. Set --api-key / --admin-key (or [auth] keys), listen \
             on a loopback address, or pass --insecure-no-auth"
        )));
    }
    if state.keys.enabled() {
        tracing::info!("{}", state.keys.describe());
    } else {
        tracing::warn!("{}", state.keys.describe());
    }
    if let Some(line) = state.keys.describe_anonymous() {
        tracing::warn!("{line}");
    }
    if !state.config.safety.enforce {
        tracing::warn!(
            "safety runs in shadow mode ([safety] enforce = false): verdicts are logged and \
             counted, every answer is the one `off` gives"
        );
    }
    let metrics_listener = match state.config.metrics_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr).await?;
            let addr = l.local_addr()?;
            tracing::info!(%addr, "metrics listening on http://{addr}/metrics");
            Some(l)
        }
        None => None,
    };
    let mut loader = {
        let state = Arc::clone(&state);
        tokio::task::spawn_blocking(move || state.load())
    };
    let mut loading = true;
    let mut watcher: Option<tokio::task::JoinHandle<()>> = None;
    // Whether the engine failed, checked a few times a second (the engine can be replaced by an
    // adapter swap, so the served one is read each time); the exit follows after a hold.
    let mut health_check = tokio::time::interval(Duration::from_millis(250));
    let mut failed: Option<cada_core::Failure> = None;
    let exit_after = Duration::from_secs(state.config.engine.exit_after_failure_secs);
    let exit = tokio::time::sleep(Duration::from_secs(u32::MAX.into()));
    tokio::pin!(exit);
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    tokio::pin!(shutdown);
    let connections = Arc::new(tokio::sync::Semaphore::new(
        state.config.limits.max_connections.max(1),
    ));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Usually fd exhaustion: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Past the cap the connection is closed unread: cheaper than any answer, and
                // what a flood of idle or trickling clients should get.
                let Ok(open) = Arc::clone(&connections).try_acquire_owned() else {
                    state.metrics.connection_refused();
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                let service = service_fn(move |req| handle(Arc::clone(&state), req));
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _open = open;
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            accepted = accept_metrics(metrics_listener.as_ref()) => {
                let Ok((stream, _peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let state = Arc::clone(&state);
                let service = service_fn(move |req| {
                    let resp = routes::metrics_port(&state, &req);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            loaded = &mut loader, if loading => {
                loading = false;
                match loaded {
                    Ok(Ok(())) => watcher = watch_adapters(&state),
                    Ok(Err(e)) => return Err(e),
                    Err(e) => return Err(GatewayError::Internal(format!("model loader panicked: {e}"))),
                }
            }
            _ = health_check.tick(), if failed.is_none() && !loading => {
                if let Some(f) = state.engine_failure() {
                    state.metrics.engine_failed(f.kind);
                    tracing::error!(
                        reason = f.kind.as_str(),
                        message = %f.message,
                        exit_after_secs = exit_after.as_secs(),
                        "the engine failed: /healthz, /readyz and inference answer 503; the gateway drains and exits"
                    );
                    exit.as_mut().reset(tokio::time::Instant::now() + exit_after);
                    failed = Some(f);
                }
            }
            () = &mut exit, if failed.is_some() => break,
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if let Some(w) = watcher {
        w.abort();
    }
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining in-flight requests"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
    // Everything the store acknowledged (response records, cases, feedback) is written before
    // `run` returns, whatever connections are left.
    if let Some(safety) = state.safety() {
        match tokio::time::timeout(grace.max(Duration::from_secs(1)), safety.store.flush()).await {
            Ok(Ok(())) => tracing::info!("case store drained"),
            Ok(Err(e)) => tracing::warn!(error = %e, "case store drain failed"),
            Err(_) => tracing::warn!("case store drain did not finish within the grace period"),
        }
    }
    match failed.or_else(|| state.engine_failure()) {
        Some(f) => Err(GatewayError::Engine(cada_core::EngineError::from(&f))),
        None => Ok(()),
    }
}

/// The next connection on the metrics listener; never, without one.
async fn accept_metrics(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// With `adapter = "promoted"`, checks the adapter registry every `adapter_poll_secs` and
/// switches to a newly promoted (or rolled back) version between requests.
fn watch_adapters(state: &Arc<AppState>) -> Option<tokio::task::JoinHandle<()>> {
    let every = state.config.adapter_poll_secs;
    if every == 0 || state.config.adapter != crate::config::AdapterChoice::Promoted {
        return None;
    }
    let state = Arc::clone(state);
    Some(tokio::spawn(async move {
        let mut last_error = String::new();
        loop {
            tokio::time::sleep(Duration::from_secs(every)).await;
            let s = Arc::clone(&state);
            match tokio::task::spawn_blocking(move || s.reload_adapter()).await {
                Ok(Ok(_)) => last_error.clear(),
                Ok(Err(e)) => {
                    // Logged once per distinct error, not every poll.
                    let e = e.to_string();
                    if e != last_error {
                        tracing::warn!(error = %e, "adapter registry check failed; serving the current adapter");
                        last_error = e;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "adapter reload task failed"),
            }
        }
    }))
}
