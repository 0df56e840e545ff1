//! Time, injected. The pool and every cooldown rule take `now` as a number of Unix milliseconds
//! read from a [`Clock`], so tests move time by hand instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds.
pub type Millis = u64;

pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> Millis;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn at(ms: Millis) -> Self {
        Self(AtomicU64::new(ms))
    }
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(
            u64::try_from(by.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// The last instant RFC 3339 can write (9999-12-31T23:59:59.999Z). API keys "expire" at
/// `Number.MAX_SAFE_INTEGER` ms, far beyond it.
const MAX_RFC3339_MS: Millis = 253_402_300_799_999;

/// RFC 3339 text for a Unix-ms instant, for JSON that people read (clamped to year 9999).
pub fn rfc3339(ms: Millis) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.min(MAX_RFC3339_MS)))
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_clamps_far_future_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            super::rfc3339(9_007_199_254_740_991),
            "9999-12-31T23:59:59.999Z"
        );
    }
}
