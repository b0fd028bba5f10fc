//! Global admission control: at most `limits.max_in_flight` inference requests are handled at
//! once (a stream counts until its last event); past it a request gets a fast 503 `overloaded`
//! instead of waiting without bound. Behind it, `engine.max_queue` bounds what waits for a slot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::ApiError;

/// Counts admitted inference requests.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    current: Arc<AtomicUsize>,
}

/// One admitted request; dropping it (when the response body ends) frees its place.
#[derive(Debug)]
pub struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            current: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Admits a request, or refuses it when `max` are in flight.
    pub fn admit(&self) -> Result<Permit, ApiError> {
        let admitted = self
            .current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        match admitted {
            Ok(_) => Ok(Permit(Arc::clone(&self.current))),
            Err(n) => Err(ApiError::overloaded(format!(
                "The gateway is handling {n} requests, its limit (limits.max_in_flight); retry later."
            ))),
        }
    }

    /// Requests admitted now.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_on_drop() {
        let a = Admission::new(2);
        let first = a.admit().unwrap();
        let _second = a.admit().unwrap();
        let refused = a.admit().unwrap_err();
        assert_eq!((refused.status.as_u16(), refused.code), (503, "overloaded"));
        assert!(refused.headers.iter().any(|(n, _)| *n == "retry-after"));
        drop(first);
        assert_eq!(a.in_flight(), 1);
        let _third = a.admit().expect("a place was freed");
        assert_eq!(a.in_flight(), 2);
    }
}
