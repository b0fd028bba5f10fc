//! Per-key rate limits on `governor`'s GCRA: requests per minute, and tokens per minute with
//! prompt tokens charged when a request is admitted and the rest settled when it ends. What a
//! finished response still owes (governor cannot charge after the fact) is carried as a debt
//! and charged with the key's next request. Every response reports the state in OpenAI's
//! `x-ratelimit-*` headers.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::error::ApiError;

type Gcra = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// One per-minute budget.
#[derive(Debug)]
struct Budget {
    limit: u32,
    gcra: Gcra,
}

impl Budget {
    fn new(per_minute: u32) -> Option<Self> {
        let n = NonZeroU32::new(per_minute)?;
        Some(Self {
            limit: per_minute,
            gcra: RateLimiter::direct(Quota::per_minute(n)).with_middleware(),
        })
    }

    /// Time for one unit to come back.
    fn period(&self) -> Duration {
        Duration::from_secs(60) / self.limit
    }

    /// Takes `n` (at least 1) units now, or says how long to wait.
    fn take(&self, n: NonZeroU32) -> Result<u32, Wait> {
        match self.gcra.check_n(n) {
            Ok(Ok(snapshot)) => Ok(snapshot.remaining_burst_capacity()),
            Ok(Err(not_until)) => Err(Wait::For(
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            Err(_) => Err(Wait::Never),
        }
    }

    fn header(&self, remaining: u32) -> Window {
        Window {
            limit: self.limit,
            remaining,
            reset: self.period() * (self.limit - remaining.min(self.limit)),
        }
    }
}

enum Wait {
    For(Duration),
    /// More than a whole minute's budget at once.
    Never,
}

/// A budget's state as the `x-ratelimit-*` headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: u32,
    pub remaining: u32,
    /// Time until the budget is full again.
    pub reset: Duration,
}

/// What the rate-limit headers of one response say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
}

impl RateHeaders {
    /// OpenAI's header names and formats (`x-ratelimit-reset-requests: 1s`, `6m0s`, `20ms`).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(w) = self.requests {
            out.push(("x-ratelimit-limit-requests", w.limit.to_string()));
            out.push(("x-ratelimit-remaining-requests", w.remaining.to_string()));
            out.push(("x-ratelimit-reset-requests", format_reset(w.reset)));
        }
        if let Some(w) = self.tokens {
            out.push(("x-ratelimit-limit-tokens", w.limit.to_string()));
            out.push(("x-ratelimit-remaining-tokens", w.remaining.to_string()));
            out.push(("x-ratelimit-reset-tokens", format_reset(w.reset)));
        }
        out
    }
}

/// `20ms`, `1.5s`, `6m0s` (OpenAI's reset format).
pub fn format_reset(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        let s = format!("{secs:.3}");
        return format!("{}s", s.trim_end_matches('0').trim_end_matches('.'));
    }
    let whole = d.as_secs();
    format!("{}m{}s", whole / 60, whole % 60)
}

/// The budgets of one key.
#[derive(Debug)]
pub struct Limiter {
    requests: Option<Budget>,
    tokens: Option<Budget>,
    /// Tokens a finished response used beyond what it was charged, charged next.
    debt: AtomicU64,
    /// The latest token window, for headers of responses that charge no tokens.
    last_tokens: Mutex<Option<Window>>,
}

impl Limiter {
    /// 0 leaves a budget unlimited.
    pub fn new(requests_per_minute: u32, tokens_per_minute: u32) -> Self {
        Self {
            requests: Budget::new(requests_per_minute),
            tokens: Budget::new(tokens_per_minute),
            debt: AtomicU64::new(0),
            last_tokens: Mutex::new(None),
        }
    }

    /// Whether tokens are budgeted (worth counting a prompt's tokens up front).
    pub fn limits_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    pub fn is_unlimited(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none()
    }

    /// Admits one request (before its body is read).
    pub fn admit_request(&self, headers: &mut RateHeaders) -> Result<(), ApiError> {
        headers.tokens = self.token_window();
        let Some(b) = &self.requests else {
            return Ok(());
        };
        match b.take(NonZeroU32::MIN) {
            Ok(remaining) => {
                headers.requests = Some(b.header(remaining));
                Ok(())
            }
            Err(wait) => {
                headers.requests = Some(b.header(0));
                Err(limited("requests", b.limit, wait))
            }
        }
    }

    /// Admits one feedback report against a budget built with `Limiter::new(per_minute, 0)`.
    pub fn admit_feedback(&self) -> Result<(), ApiError> {
        let Some(b) = &self.requests else {
            return Ok(());
        };
        b.take(NonZeroU32::MIN)
            .map(|_| ())
            .map_err(|wait| limited("feedback reports", b.limit, wait))
    }

    /// Charges a request's prompt tokens (and what earlier responses still owe).
    pub fn admit_tokens(
        &self,
        prompt_tokens: u32,
        headers: &mut RateHeaders,
    ) -> Result<(), ApiError> {
        let Some(b) = &self.tokens else {
            return Ok(());
        };
        if prompt_tokens > b.limit {
            headers.tokens = Some(b.header(0));
            return Err(limited("tokens", b.limit, Wait::Never));
        }
        let debt = self.debt.swap(0, Ordering::SeqCst);
        let owed = u32::try_from(debt).unwrap_or(u32::MAX);
        let Some(n) = NonZeroU32::new(prompt_tokens.saturating_add(owed).min(b.limit)) else {
            headers.tokens = self.token_window();
            return Ok(());
        };
        match b.take(n) {
            Ok(remaining) => {
                let w = b.header(remaining);
                headers.tokens = Some(w);
                self.remember(w);
                Ok(())
            }
            Err(wait) => {
                self.debt.fetch_add(debt, Ordering::SeqCst);
                headers.tokens = Some(b.header(0));
                Err(limited("tokens", b.limit, wait))
            }
        }
    }

    /// Charges the tokens a response used beyond its admission (completion tokens, and prompt
    /// tokens the deliberation added); what the budget cannot take now becomes debt.
    pub fn settle(&self, tokens: u32) {
        let Some(b) = &self.tokens else {
            return;
        };
        let Some(n) = NonZeroU32::new(tokens.min(b.limit)) else {
            return;
        };
        match b.take(n) {
            Ok(remaining) => self.remember(b.header(remaining)),
            Err(_) => {
                self.debt.fetch_add(u64::from(tokens), Ordering::SeqCst);
                self.remember(b.header(0));
            }
        }
    }

    fn remember(&self, w: Window) {
        if let Ok(mut last) = self.last_tokens.lock() {
            *last = Some(w);
        }
    }

    fn token_window(&self) -> Option<Window> {
        let b = self.tokens.as_ref()?;
        let last = self.last_tokens.lock().ok().and_then(|l| *l);
        Some(last.unwrap_or_else(|| b.header(b.limit)))
    }
}

fn limited(what: &'static str, limit: u32, wait: Wait) -> ApiError {
    match wait {
        Wait::For(d) => ApiError::rate_limited(
            what,
            format!(
                "Rate limit reached: {limit} {what} per minute for this key. Try again in {}.",
                format_reset(d)
            ),
            d,
        ),
        Wait::Never => ApiError::rate_limited(
            what,
            format!("This request needs more {what} than this key may use in a minute ({limit})."),
            Duration::from_secs(60),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_times_read_like_openai() {
        assert_eq!(format_reset(Duration::from_millis(20)), "20ms");
        assert_eq!(format_reset(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_reset(Duration::from_secs(1)), "1s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
    }

    #[test]
    fn requests_beyond_the_budget_are_refused_with_a_wait() {
        let l = Limiter::new(3, 0);
        let mut h = RateHeaders::default();
        for left in [2, 1, 0] {
            l.admit_request(&mut h).expect("within budget");
            assert_eq!(h.requests.map(|w| w.remaining), Some(left));
        }
        let e = l.admit_request(&mut h).expect_err("over");
        assert_eq!(e.status.as_u16(), 429);
        assert_eq!(e.code, "rate_limit_exceeded");
        let retry: u64 = e
            .headers
            .iter()
            .find(|(k, _)| *k == "retry-after")
            .and_then(|(_, v)| v.parse().ok())
            .expect("retry after");
        assert!((1..=20).contains(&retry), "{retry}");
        let pairs = h.pairs();
        assert!(pairs.contains(&("x-ratelimit-limit-requests", "3".into())));
        assert!(pairs.contains(&("x-ratelimit-remaining-requests", "0".into())));
        assert!(h.tokens.is_none());
    }

    #[test]
    fn completion_tokens_are_settled_and_carried_as_debt() {
        let l = Limiter::new(0, 100);
        let mut h = RateHeaders::default();
        l.admit_tokens(30, &mut h).expect("30 of 100");
        assert_eq!(h.tokens.map(|w| w.remaining), Some(70));
        // The response used 90 more: only 70 are left, so all 90 become debt.
        l.settle(90);
        let e = l
            .admit_tokens(1, &mut h)
            .expect_err("the debt is due first");
        assert_eq!(e.code, "rate_limit_exceeded");
        // A prompt larger than the whole budget can never be served.
        let never = Limiter::new(0, 100)
            .admit_tokens(101, &mut h)
            .expect_err("too big");
        assert!(never.message.contains("more tokens"), "{}", never.message);
        // Unlimited budgets admit anything and report nothing.
        let free = Limiter::new(0, 0);
        let mut h = RateHeaders::default();
        free.admit_request(&mut h).expect("free");
        free.admit_tokens(1_000_000, &mut h).expect("free");
        assert!(free.is_unlimited() && h.pairs().is_empty());
    }
}
