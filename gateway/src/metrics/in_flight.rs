//! The end of a request's measurement: [`InFlight`] counts the request once, when its response
//! body ends or is dropped, so a streamed response's duration covers the stream.

use std::sync::Arc;

use super::{RequestMetrics, CLIENT_CLOSED};
use crate::server::Response;

/// Counts a request once, when dropped: by `server::handle` if the response never started,
/// else by the response body (see [`InFlight::respond`]) once it has been sent or abandoned.
#[derive(Debug)]
pub struct InFlight {
    pub(super) request: Arc<RequestMetrics>,
    pub(super) status: Option<u16>,
}

impl InFlight {
    /// The request failed with this error code.
    pub fn error(&self, code: &'static str) {
        self.request.error(code);
    }

    /// Wraps the response body so the request is counted when the body ends.
    pub fn respond(mut self, resp: Response) -> Response {
        self.status = Some(resp.status().as_u16());
        crate::body_guard::hold(resp, self)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let r = &self.request;
        let m = &r.metrics;
        let total = r.started.elapsed();
        let endpoint = r.endpoint.as_str();
        let status = self.status.unwrap_or(CLIENT_CLOSED).to_string();
        m.in_flight.dec();
        m.requests
            .with_label_values(&[endpoint, status.as_str()])
            .inc();
        m.duration
            .with_label_values(&[endpoint])
            .observe(total.as_secs_f64());
        if let Some(code) = r.error_type.get() {
            m.errors.with_label_values(&[code]).inc();
        }
        m.overhead
            .observe(total.saturating_sub(r.model_time()).as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use hyper::body::Body as _;
    use hyper::StatusCode;

    use crate::metrics::tests::metrics;
    use crate::server::text_response;

    #[test]
    fn a_request_counts_when_its_body_ends_not_before() {
        let m = metrics();
        let (guard, _) = m.begin("/v1/chat/completions");
        let resp = guard.respond(text_response(StatusCode::OK, "hi".into()));
        assert_eq!(m.in_flight.get(), 1);
        assert_eq!(
            m.requests
                .with_label_values(&["chat_completions", "200"])
                .get(),
            0
        );
        assert_eq!(resp.body().size_hint().exact(), Some(2), "length kept");
        drop(resp);
        assert_eq!(m.in_flight.get(), 0);
        assert_eq!(
            m.requests
                .with_label_values(&["chat_completions", "200"])
                .get(),
            1
        );
    }
}
