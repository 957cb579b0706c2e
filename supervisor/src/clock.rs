//! Time, behind a trait so renewal, backoff and throttling can be tested by moving a clock.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in Unix seconds.
pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> i64;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        unix_now()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The system's clock plus an offset that can be moved forward (tests, and drills such as
/// "what would renew if it were 60 days later").
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset: AtomicI64,
}

impl OffsetClock {
    pub fn new() -> OffsetClock {
        OffsetClock::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.offset.fetch_add(secs, Ordering::SeqCst);
    }

    /// Sets the offset from the system clock (back to 0 for "now").
    pub fn set_offset(&self, secs: i64) {
        self.offset.store(secs, Ordering::SeqCst);
    }

    /// The current offset from the system clock, in seconds.
    pub fn offset(&self) -> i64 {
        self.offset.load(Ordering::SeqCst)
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> i64 {
        unix_now().saturating_add(self.offset.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_clock_moves() {
        let c = OffsetClock::new();
        let before = c.now();
        c.advance(Duration::from_secs(86_400));
        assert!(c.now() >= before + 86_400);
        assert_eq!(c.offset(), 86_400);
    }
}
