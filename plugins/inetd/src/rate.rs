//! `nowait.max`: at most MAX children started in any minute (sans-IO).
//!
//! OpenBSD's inetd counts from the first start of a window and refuses once the count
//! reaches MAX, so it starts MAX - 1 per window. This is a sliding window that starts exactly
//! MAX in any 60 seconds, and says when the next start is allowed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The window of `.max`.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The starts of the last minute of one service.
#[derive(Clone, Debug)]
pub struct Rate {
    max: u32,
    starts: VecDeque<Instant>,
}

impl Rate {
    pub fn new(max: u32) -> Self {
        Rate {
            max: max.max(1),
            starts: VecDeque::new(),
        }
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    /// A new maximum (a reload); the starts already counted still count.
    pub fn set_max(&mut self, max: u32) {
        self.max = max.max(1);
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&t) = self.starts.front() {
            if now.saturating_duration_since(t) >= WINDOW {
                self.starts.pop_front();
            } else {
                break;
            }
        }
    }

    /// Counts a start at `now` if the last minute has room for it; false (and nothing
    /// counted) if it has not.
    pub fn try_start(&mut self, now: Instant) -> bool {
        self.expire(now);
        if self.starts.len() < self.max as usize {
            self.starts.push_back(now);
            true
        } else {
            false
        }
    }

    /// When the next start will be allowed (`now` if it is).
    pub fn next_start(&mut self, now: Instant) -> Instant {
        self.expire(now);
        if self.starts.len() < self.max as usize {
            now
        } else {
            self.starts
                .get(self.starts.len() - self.max as usize)
                .map_or(now, |t| *t + WINDOW)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_max_per_sliding_minute() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Rate::new(3);
        assert!(r.try_start(t0));
        assert!(r.try_start(t0 + s(10)));
        assert!(r.try_start(t0 + s(20)), "the third of three: no off-by-one");
        assert!(!r.try_start(t0 + s(30)));
        assert_eq!(r.next_start(t0 + s(30)), t0 + s(60));
        assert!(
            !r.try_start(t0 + s(59)),
            "a refusal is not counted, and 59 s is inside"
        );
        assert!(r.try_start(t0 + s(60)), "the first start left the window");
        assert!(!r.try_start(t0 + s(61)));
        assert_eq!(r.next_start(t0 + s(61)), t0 + s(70));
        assert!(r.try_start(t0 + s(70)));
        assert!(r.try_start(t0 + s(200)));
        assert_eq!(r.next_start(t0 + s(200)), t0 + s(200));
    }

    #[test]
    fn a_lower_maximum_counts_the_starts_already_made() {
        let t0 = Instant::now();
        let mut r = Rate::new(5);
        for i in 0..4 {
            assert!(r.try_start(t0 + Duration::from_secs(i)));
        }
        r.set_max(2);
        assert!(!r.try_start(t0 + Duration::from_secs(5)));
        assert_eq!(
            r.next_start(t0 + Duration::from_secs(5)),
            t0 + Duration::from_secs(62)
        );
        assert_eq!(Rate::new(0).max(), 1);
    }
}
