//! The per-process budget for message data held in memory (`--max-data-memory`).
//!
//! Every SMTP session holds its message in memory from DATA until the message is on disk: with
//! 1,000 sessions of 10 MiB that is 10 GiB, an out-of-memory kill. Each session's DATA takes its
//! buffer's octets (its capacity, not just what it has read) from one [`DataMemory`] as it grows,
//! through a [`Reservation`]; a message that would take the total past the limit is read to its end
//! and refused with 452 (as postfix's "Insufficient system storage"), and the client retries later.
//! The reservation travels with the message into the delivery (`Job`), and gives its octets back
//! when it is dropped, which is when the buffer is freed, on whatever path: delivered, failed,
//! refused, the session closed or timed out, the process stopping. Atomic, because a `Job` is
//! dropped on the delivery thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The budget of one process: a limit and the octets in use.
#[derive(Debug)]
pub struct DataMemory {
    limit: usize,
    used: AtomicUsize,
}

impl DataMemory {
    pub fn new(limit: usize) -> Arc<DataMemory> {
        Arc::new(DataMemory {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// The octets held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Octets taken from a [`DataMemory`], given back when dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    /// None: counted nowhere (tests, and messages built outside a session).
    pool: Option<Arc<DataMemory>>,
    bytes: usize,
}

impl Reservation {
    /// An empty reservation on `pool`.
    pub fn new(pool: &Arc<DataMemory>) -> Reservation {
        Reservation {
            pool: Some(pool.clone()),
            bytes: 0,
        }
    }

    /// Takes `n` more octets if the total stays within the limit; false (and nothing taken)
    /// if it would not.
    pub fn try_grow(&mut self, n: usize) -> bool {
        let Some(pool) = &self.pool else {
            self.bytes += n;
            return true;
        };
        let limit = pool.limit;
        let ok = pool
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= limit)
            })
            .is_ok();
        if ok {
            self.bytes += n;
        }
        ok
    }

    /// Takes `n` more octets whatever the limit (a few octets of header on a message already
    /// admitted).
    pub fn grow(&mut self, n: usize) {
        if let Some(pool) = &self.pool {
            pool.used.fetch_add(n, Ordering::AcqRel);
        }
        self.bytes += n;
    }

    /// Gives every octet back; the reservation stays usable.
    pub fn release(&mut self) {
        if let Some(pool) = &self.pool {
            pool.used.fetch_sub(self.bytes, Ordering::AcqRel);
        }
        self.bytes = 0;
    }

    /// The limit of its budget (None: counted nowhere).
    pub fn limit(&self) -> Option<usize> {
        self.pool.as_ref().map(|p| p.limit)
    }

    /// The octets this reservation holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_limit_and_give_back_when_dropped() {
        let pool = DataMemory::new(100);
        let mut a = Reservation::new(&pool);
        let mut b = Reservation::new(&pool);
        assert!(a.try_grow(60));
        assert!(!b.try_grow(41), "60 + 41 is past 100");
        assert_eq!(b.bytes(), 0, "a refusal takes nothing");
        assert!(b.try_grow(40));
        assert_eq!(pool.used(), 100);
        b.grow(5);
        assert_eq!(pool.used(), 105, "forced past the limit");
        drop(a);
        assert_eq!(pool.used(), 45);
        b.release();
        assert_eq!(pool.used(), 0);
        assert!(b.try_grow(100));
        drop(b);
        assert_eq!(pool.used(), 0);
        let mut free = Reservation::default();
        assert!(free.try_grow(usize::MAX));
    }
}
