//! A response body that holds a guard until the body ends or is dropped, so whatever the guard
//! releases on drop (a request's measurement, an admission permit) lasts as long as the
//! response, streams included. Frames pass through unchanged.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};

use crate::server::{Body, Response};

/// Wraps `resp`'s body so `guard` is dropped with it.
pub fn hold<G: std::fmt::Debug + Send + Sync + Unpin + 'static>(
    resp: Response,
    guard: G,
) -> Response {
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, Guarded { body, guard }.boxed())
}

struct Guarded<G> {
    body: Body,
    guard: G,
}

impl<G: Unpin> hyper::body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<G: std::fmt::Debug> std::fmt::Debug for Guarded<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}
