//! The keep-alive connections idle between requests, longest idle first: the ones a site at
//! `--max-connections` gives up for a newcomer (`Factory::make_room`), as nginx reuses its
//! idle keep-alive connections when it runs out of `worker_connections`.
//!
//! A connection is listed when it goes idle and unlisted when it is busy again or closes; the
//! order is a queue with lazy deletion, so each costs O(1) amortised and the protocol keeps no
//! state of its own for it (its memory is what the benchmarks measure).

use std::collections::{HashMap, VecDeque};

use twistrs_core::transport::ConnId;

/// Idle connections, by when they went idle.
#[derive(Debug, Default)]
pub struct IdleList {
    /// The listed connections, each with the number of its live entry in `order`.
    listed: HashMap<ConnId, u64>,
    /// Entries in the order they were made; one whose number is no longer its connection's
    /// in `listed` is stale, dropped when it reaches the front or at a compaction.
    order: VecDeque<(u64, ConnId)>,
    next: u64,
}

impl IdleList {
    /// `id` is idle from now on; a connection listed already keeps its place.
    pub fn list(&mut self, id: ConnId) {
        if let std::collections::hash_map::Entry::Vacant(v) = self.listed.entry(id) {
            v.insert(self.next);
            self.order.push_back((self.next, id));
            self.next += 1;
            // Stale entries are at most as many as live ones (plus a little): a connection
            // that goes idle and busy a million times leaves no million entries behind.
            if self.order.len() > 2 * self.listed.len() + 32 {
                let listed = &self.listed;
                self.order.retain(|(n, id)| listed.get(id) == Some(n));
            }
        }
    }

    /// `id` is busy again, or gone.
    pub fn unlist(&mut self, id: ConnId) {
        if self.listed.remove(&id).is_some() && self.listed.is_empty() {
            self.order.clear();
        }
    }

    /// The connection idle the longest, taken off the list.
    pub fn take_longest(&mut self) -> Option<ConnId> {
        while let Some((n, id)) = self.order.pop_front() {
            if self.listed.get(&id) == Some(&n) {
                self.listed.remove(&id);
                return Some(id);
            }
        }
        None
    }

    /// How many are listed.
    pub fn len(&self) -> usize {
        self.listed.len()
    }

    /// True if none is.
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ConnId {
        twistrs_core::testing::conn_id(n)
    }

    #[test]
    fn longest_idle_first_and_busy_ones_skipped() {
        let mut l = IdleList::default();
        for n in 1..=4 {
            l.list(id(n));
        }
        // 1 takes a request and goes idle again: now the most recent.
        l.unlist(id(1));
        l.list(id(1));
        // Listing an idle one again does not move it.
        l.list(id(2));
        // 3 is busy.
        l.unlist(id(3));
        assert_eq!(l.len(), 3);
        assert_eq!(l.take_longest(), Some(id(2)));
        assert_eq!(l.take_longest(), Some(id(4)));
        assert_eq!(l.take_longest(), Some(id(1)));
        assert_eq!(l.take_longest(), None);
        assert!(l.is_empty());
    }

    #[test]
    fn stale_entries_stay_bounded() {
        let mut l = IdleList::default();
        // One connection idle throughout at the front, another busy and idle again a
        // million times behind it.
        l.list(id(1));
        for _ in 0..1_000_000 {
            l.unlist(id(2));
            l.list(id(2));
        }
        assert!(l.order.len() <= 2 * l.len() + 33, "{}", l.order.len());
        assert_eq!(l.take_longest(), Some(id(1)));
        assert_eq!(l.take_longest(), Some(id(2)));
        assert_eq!(l.take_longest(), None);
    }
}
