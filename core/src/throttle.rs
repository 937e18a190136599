//! A log line said at most once an interval: a condition that recurs at the rate of
//! connections (a listener pausing at its limit, web closing idle connections for room) is
//! logged once a minute, not once per connection; the metrics count every occurrence.

use std::time::{Duration, Instant};

/// Whether a recurring log line may be written now: the first time, and then once `every`
/// has passed since it last was. The caller gives the time (the reactor's clock, or
/// `Instant::now()`), so the throttle follows the clock its caller runs on and is tested
/// without sleeping.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    every: Duration,
    last: Option<Instant>,
}

impl LogThrottle {
    /// A throttle that has not logged yet: its first [`allow`](Self::allow) is true.
    pub const fn new(every: Duration) -> Self {
        LogThrottle { every, last: None }
    }

    /// True if the line may be logged at `now`, which then counts as when it last was.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_an_interval_from_the_last_line_logged() {
        let every = Duration::from_secs(60);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut t = LogThrottle::new(every);
        assert!(t.allow(t0), "the first time");
        assert!(!t.allow(t0));
        assert!(!t.allow(at(59)));
        assert!(t.allow(at(60)), "once the interval has passed");
        // The interval runs from the line logged at 60, not from the refusals before it.
        assert!(!t.allow(at(119)));
        assert!(t.allow(at(120)));
        // A time before the last line (a caller's clock read earlier) is not logged.
        assert!(!t.allow(at(100)));
        assert!(!t.allow(at(179)));
        assert!(t.allow(at(500)), "after a long quiet, at once");
    }
}
