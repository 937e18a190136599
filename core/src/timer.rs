//! Timers: a [`Clock`] read once per reactor turn, and cancellable, resettable [`DelayedCall`]s.
//!
//! A `DelayedCall` is a shared handle (Twisted's `IDelayedCall`): `cancel` and `reset` need no
//! reactor argument. The queue is a binary heap with lazy deletion: a reset pushes a fresh entry
//! and bumps the call's generation, so stale entries are skipped when they come up. Dead entries
//! (cancelled, or left behind by a reset) are counted, and once they are the majority the heap
//! is rebuilt without them, so it stays within twice the live timers however many are
//! cancelled or re-armed before their deadline.
//!
//! Idle timeouts, one per connection that has one, live in a second heap of plain
//! `(deadline, connection)` entries with no shared handle: an idle connection carries 16
//! bytes of timer instead of a 96-byte `DelayedCall` allocation plus its heap entry. The
//! connection keeps the deadline of its live entry; an entry it no longer keeps (it closed,
//! or its timeout changed) is abandoned, ignored when it comes up, and removed by the
//! reactor's `TimerQueue::compact_idle` once abandoned entries are the majority.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::num::NonZeroU64;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use crate::transport::ConnId;

/// The reactor's notion of now. Real reactors set it once per turn; tests move it by hand.
#[derive(Clone, Debug)]
pub struct Clock(Rc<ClockState>);

#[derive(Debug)]
struct ClockState {
    now: Cell<Instant>,
    /// When the clock was made: [`Tick`]s count from it.
    epoch: Instant,
}

/// An instant as nanoseconds since its clock was made, plus one (so `Option<Tick>` is 8
/// bytes too): 8 bytes where an `Instant` takes 16, for what every connection keeps (its
/// last activity, its idle deadline) and every idle-heap entry. Exact, unlike milliseconds:
/// nothing fires earlier or later than with `Instant`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Tick(NonZeroU64);

impl Tick {
    /// `d` after this tick.
    pub(crate) fn after(self, d: Duration) -> Tick {
        let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Tick(self.0.saturating_add(n))
    }

    /// The time from `earlier` to this tick (zero if `earlier` is later).
    pub(crate) fn since(self, earlier: Tick) -> Duration {
        Duration::from_nanos(self.0.get().saturating_sub(earlier.0.get()))
    }
}

impl Clock {
    /// A clock reading the current instant.
    pub fn new() -> Self {
        let now = Instant::now();
        Clock(Rc::new(ClockState {
            now: Cell::new(now),
            epoch: now,
        }))
    }

    /// The time as of the start of this reactor turn.
    pub fn now(&self) -> Instant {
        self.0.now.get()
    }

    /// Sets the time (the reactor does this each turn).
    pub fn set(&self, t: Instant) {
        self.0.now.set(t)
    }

    /// Moves the time forward (for tests with a manual clock).
    pub fn advance(&self, d: Duration) {
        self.0.now.set(self.0.now.get() + d)
    }

    /// `now` as a [`Tick`].
    pub(crate) fn tick(&self) -> Tick {
        self.tick_of(self.now())
    }

    /// `t` as a [`Tick`] (the clock's start for an earlier instant, which it never reads).
    pub(crate) fn tick_of(&self, t: Instant) -> Tick {
        let n = u64::try_from(t.saturating_duration_since(self.0.epoch).as_nanos())
            .unwrap_or(u64::MAX - 1);
        Tick(NonZeroU64::MIN.saturating_add(n))
    }

    /// The instant of tick `t`.
    pub(crate) fn instant(&self, t: Tick) -> Instant {
        self.0.epoch + Duration::from_nanos(t.0.get() - 1)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// What a timer does when it fires.
pub(crate) enum Target {
    /// Run a closure on the reactor thread.
    Call(Box<dyn FnOnce()>),
    /// Tell a connection's protocol (`Protocol::timer_fired`) with a key it chose.
    Conn(ConnId, u64),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Pending,
    Called,
    Cancelled,
}

struct CallState {
    deadline: Cell<Instant>,
    generation: Cell<u64>,
    state: Cell<State>,
    target: RefCell<Option<Target>>,
    queue: Weak<TimerQueue>,
}

/// A scheduled call, as returned by `call_later` (Twisted's `DelayedCall`).
#[derive(Clone)]
pub struct DelayedCall(Rc<CallState>);

impl DelayedCall {
    /// Cancels the call; a no-op once it has run or was cancelled.
    pub fn cancel(&self) {
        if self.0.state.get() == State::Pending {
            self.0.state.set(State::Cancelled);
            self.0.target.borrow_mut().take();
            if let Some(q) = self.0.queue.upgrade() {
                q.entry_died();
            }
        }
    }

    /// Moves the deadline to `delay` from now; a no-op once it has run or was cancelled.
    pub fn reset(&self, delay: Duration) {
        if self.0.state.get() != State::Pending {
            return;
        }
        if let Some(q) = self.0.queue.upgrade() {
            let at = later(q.clock.now(), delay);
            self.0.deadline.set(at);
            self.0.generation.set(self.0.generation.get() + 1);
            q.push(&self.0);
            q.entry_died();
        }
    }

    /// True until the call has run or been cancelled.
    pub fn active(&self) -> bool {
        self.0.state.get() == State::Pending
    }

    /// When the call is due.
    pub fn deadline(&self) -> Instant {
        self.0.deadline.get()
    }
}

struct Entry {
    at: Instant,
    seq: u64,
    generation: u64,
    call: Rc<CallState>,
}

impl Entry {
    /// The call is pending and this is its current deadline.
    fn is_live(&self) -> bool {
        self.call.state.get() == State::Pending && self.generation == self.call.generation.get()
    }
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// An idle-timeout check of a connection (see the module's text), ordered by deadline.
#[derive(Clone, Copy)]
struct IdleEntry {
    at: Tick,
    id: ConnId,
}

impl PartialEq for IdleEntry {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at
    }
}
impl Eq for IdleEntry {}
impl PartialOrd for IdleEntry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for IdleEntry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.at.cmp(&o.at)
    }
}

/// The reactor's timer heap.
pub(crate) struct TimerQueue {
    clock: Clock,
    heap: RefCell<BinaryHeap<Reverse<Entry>>>,
    seq: Cell<u64>,
    /// Entries in the heap whose call was cancelled or re-armed since.
    dead: Cell<usize>,
    /// Connections' idle-timeout checks.
    idle: RefCell<BinaryHeap<Reverse<IdleEntry>>>,
    /// Idle entries abandoned since the last compaction (an upper bound: some may have come
    /// up and gone already).
    idle_dead: Cell<usize>,
}

/// Idle entries the idle heap has room for from the start (128 KiB of address space, which
/// takes memory only as it is used).
const RESERVED_IDLE: usize = 8192;

/// Below this many dead entries the heap is never rebuilt (rebuilding costs O(n)).
const COMPACT_MIN: usize = 64;

impl TimerQueue {
    pub(crate) fn new(clock: Clock) -> Rc<Self> {
        Rc::new(TimerQueue {
            clock,
            heap: RefCell::new(BinaryHeap::new()),
            seq: Cell::new(0),
            dead: Cell::new(0),
            // Reserved, not touched: growing through the small sizes would leave each
            // smaller copy behind in the heap, resident (issue 11).
            idle: RefCell::new(BinaryHeap::with_capacity(RESERVED_IDLE)),
            idle_dead: Cell::new(0),
        })
    }

    /// Checks connection `id`'s idle timeout at `at` (it comes up as
    /// `Target::Conn(id, IDLE_KEY)`); the connection keeps `at` to know its live entry.
    pub(crate) fn schedule_idle(&self, at: Tick, id: ConnId) {
        self.idle.borrow_mut().push(Reverse(IdleEntry { at, id }));
    }

    /// A connection no longer keeps its idle entry (closed, or re-armed elsewhere).
    pub(crate) fn idle_abandoned(&self) {
        self.idle_dead.set(self.idle_dead.get() + 1);
    }

    /// Once abandoned idle entries are the majority, keeps only those `live` says a
    /// connection still keeps (amortised O(1) per abandoned entry).
    pub(crate) fn compact_idle(&self, live: impl Fn(ConnId, Tick) -> bool) {
        let dead = self.idle_dead.get();
        let Ok(mut heap) = self.idle.try_borrow_mut() else {
            return;
        };
        if dead <= COMPACT_MIN || dead * 2 <= heap.len() {
            return;
        }
        let kept: Vec<Reverse<IdleEntry>> = std::mem::take(&mut *heap)
            .into_vec()
            .into_iter()
            .filter(|Reverse(e)| live(e.id, e.at))
            .collect();
        *heap = BinaryHeap::from(kept);
        self.idle_dead.set(0);
    }

    /// Idle entries in the heap, kept or abandoned.
    #[cfg(test)]
    pub(crate) fn idle_len(&self) -> usize {
        self.idle.borrow().len()
    }

    /// An entry went dead; rebuild the heap once dead entries are the majority, so its size
    /// stays proportional to the live timers (amortised O(1) per cancel or reset).
    fn entry_died(&self) {
        let dead = self.dead.get() + 1;
        self.dead.set(dead);
        let Ok(mut heap) = self.heap.try_borrow_mut() else {
            return;
        };
        if dead > COMPACT_MIN && dead * 2 > heap.len() {
            let live: Vec<Reverse<Entry>> = std::mem::take(&mut *heap)
                .into_vec()
                .into_iter()
                .filter(|Reverse(e)| e.is_live())
                .collect();
            *heap = BinaryHeap::from(live);
            self.dead.set(0);
        }
    }

    /// Timers in the heap, live or awaiting removal.
    pub(crate) fn len(&self) -> usize {
        self.heap.borrow().len()
    }

    fn push(&self, call: &Rc<CallState>) {
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        self.heap.borrow_mut().push(Reverse(Entry {
            at: call.deadline.get(),
            seq,
            generation: call.generation.get(),
            call: call.clone(),
        }));
    }

    /// Schedules `target` to run `delay` from now.
    pub(crate) fn schedule(self: &Rc<Self>, delay: Duration, target: Target) -> DelayedCall {
        let call = Rc::new(CallState {
            deadline: Cell::new(later(self.clock.now(), delay)),
            generation: Cell::new(0),
            state: Cell::new(State::Pending),
            target: RefCell::new(Some(target)),
            queue: Rc::downgrade(self),
        });
        self.push(&call);
        DelayedCall(call)
    }

    /// When the earliest idle check (kept or abandoned) is due.
    fn idle_next(&self) -> Option<Instant> {
        let idle = self.idle.borrow();
        idle.peek().map(|Reverse(e)| self.clock.instant(e.at))
    }

    /// The deadline of the earliest live timer, dropping dead entries on the way (an
    /// abandoned idle entry may make it early: the wake-up then finds nothing to do).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let idle = self.idle_next();
        let mut heap = self.heap.borrow_mut();
        while let Some(Reverse(e)) = heap.peek() {
            if e.is_live() {
                return Some(idle.map_or(e.at, |i| i.min(e.at)));
            }
            heap.pop();
            self.dead.set(self.dead.get().saturating_sub(1));
        }
        idle
    }

    /// Removes and returns the next timer due at or before `now`.
    pub(crate) fn pop_due(&self, now: Instant) -> Option<Target> {
        loop {
            let idle_at = self.idle_next();
            let main_at = self.heap.borrow().peek().map(|Reverse(e)| e.at);
            if let Some(at) = idle_at
                && at <= now
                && main_at.is_none_or(|m| at <= m)
            {
                let Reverse(e) = self.idle.borrow_mut().pop()?;
                return Some(Target::Conn(e.id, crate::transport::IDLE_KEY));
            }
            let mut heap = self.heap.borrow_mut();
            let due = matches!(heap.peek(), Some(Reverse(e)) if e.at <= now);
            if !due {
                return None;
            }
            let Reverse(e) = heap.pop()?;
            drop(heap);
            if !e.is_live() {
                self.dead.set(self.dead.get().saturating_sub(1));
                continue;
            }
            e.call.state.set(State::Called);
            if let Some(t) = e.call.target.borrow_mut().take() {
                return Some(t);
            }
        }
    }

    /// Drops every pending timer (their closures may hold handles: this breaks the cycle).
    pub(crate) fn clear(&self) {
        let entries = std::mem::take(&mut *self.heap.borrow_mut());
        self.dead.set(0);
        self.idle.borrow_mut().clear();
        self.idle_dead.set(0);
        for Reverse(e) in entries {
            e.call.target.borrow_mut().take();
        }
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.next_deadline().is_none()
    }
}

/// The longest wait a deadline is given: anything longer is "never" in practice.
pub const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `now + delay`, but at most a [`CENTURY`] away. `Instant + Duration` panics past what an
/// `Instant` holds, and a delay from an option can be anything (`--transfer-timeout
/// 18446744073709551615`, `--shutdown-timeout 1e300`): every deadline computed from a
/// configured duration goes through here, and one this far off simply never comes.
pub fn later(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay.min(CENTURY)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire_all(q: &TimerQueue, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(t) = q.pop_due(now) {
            match t {
                Target::Call(f) => f(),
                Target::Conn(_, k) => out.push(k),
            }
        }
        out
    }

    fn conn(key: u64) -> Target {
        Target::Conn(ConnId::new(0, 0), key)
    }

    #[test]
    fn fires_in_deadline_order_only_when_due() {
        let clock = Clock::new();
        let q = TimerQueue::new(clock.clone());
        q.schedule(Duration::from_secs(3), conn(3));
        q.schedule(Duration::from_secs(1), conn(1));
        q.schedule(Duration::from_secs(2), conn(2));
        assert!(fire_all(&q, clock.now()).is_empty());
        clock.advance(Duration::from_secs(2));
        assert_eq!(fire_all(&q, clock.now()), vec![1, 2]);
        clock.advance(Duration::from_secs(5));
        assert_eq!(fire_all(&q, clock.now()), vec![3]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_delay_past_any_instant_is_a_century_not_a_panic() {
        let clock = Clock::new();
        let q = TimerQueue::new(clock.clone());
        let a = q.schedule(Duration::MAX, conn(1));
        assert!(a.deadline() > clock.now() + Duration::from_secs(50 * 365 * 86_400));
        a.reset(Duration::MAX);
        clock.advance(Duration::from_secs(86_400));
        assert!(fire_all(&q, clock.now()).is_empty());
        // Capped, so arithmetic on the deadline (a margin added) cannot overflow either.
        let now = clock.now();
        assert_eq!(later(now, Duration::MAX), now + CENTURY);
        assert_eq!(later(now, Duration::from_secs(1 << 62)), now + CENTURY);
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }

    #[test]
    fn cancel_and_reset() {
        let clock = Clock::new();
        let q = TimerQueue::new(clock.clone());
        let a = q.schedule(Duration::from_secs(1), conn(1));
        let b = q.schedule(Duration::from_secs(1), conn(2));
        a.cancel();
        assert!(!a.active());
        b.reset(Duration::from_secs(10));
        clock.advance(Duration::from_secs(5));
        assert!(fire_all(&q, clock.now()).is_empty());
        assert_eq!(
            q.next_deadline(),
            Some(b.deadline()),
            "the stale entry of the reset call is gone"
        );
        clock.advance(Duration::from_secs(5));
        assert_eq!(fire_all(&q, clock.now()), vec![2]);
        assert!(!b.active());
        b.reset(Duration::from_secs(1));
        b.cancel();
        assert!(q.is_empty());
    }

    #[test]
    fn cancelled_and_rearmed_timers_do_not_pile_up() {
        let clock = Clock::new();
        let q = TimerQueue::new(clock.clone());
        let keep: Vec<DelayedCall> = (0..10)
            .map(|i| q.schedule(Duration::from_secs(100 + i), conn(i)))
            .collect();
        // A request rate times a timeout: each request arms a timer and cancels it.
        for i in 0..100_000 {
            q.schedule(Duration::from_secs(60), conn(i)).cancel();
            assert!(q.len() <= 2 * 10 + 2 * COMPACT_MIN, "{} entries", q.len());
        }
        // One timer re-armed over and over.
        for i in 0..100_000 {
            keep[0].reset(Duration::from_secs(200 + i));
            assert!(q.len() <= 2 * 10 + 2 * COMPACT_MIN, "{} entries", q.len());
        }
        clock.advance(Duration::from_secs(150));
        let fired = fire_all(&q, clock.now());
        assert_eq!(
            fired,
            (1..10).collect::<Vec<u64>>(),
            "the live ones still fire, in order"
        );
        assert!(keep[0].active(), "re-armed far ahead");
    }

    #[test]
    fn idle_checks_fire_in_order_with_the_other_timers() {
        let clock = Clock::new();
        let q = TimerQueue::new(clock.clone());
        let t0 = clock.now();
        q.schedule(Duration::from_secs(2), conn(2));
        let tick = |s| clock.tick().after(Duration::from_secs(s));
        q.schedule_idle(tick(3), ConnId::new(7, 7));
        q.schedule_idle(tick(1), ConnId::new(5, 5));
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(1)));
        clock.advance(Duration::from_secs(3));
        let mut got = Vec::new();
        while let Some(t) = q.pop_due(clock.now()) {
            if let Target::Conn(id, k) = t {
                got.push((id.key, k));
            }
        }
        let idle = crate::transport::IDLE_KEY;
        assert_eq!(got, vec![(5, idle), (0, 2), (7, idle)]);
        assert!(q.is_empty());
    }

    #[test]
    fn abandoned_idle_checks_are_compacted_away() {
        let clock = Clock::new();
        let q = TimerQueue::new(clock.clone());
        let at = clock.tick().after(Duration::from_secs(60));
        // Ten connections keep theirs; a stream of short connections each abandons one.
        for k in 0..10 {
            q.schedule_idle(at, ConnId::new(k, k));
        }
        for i in 0..100_000u32 {
            q.schedule_idle(at, ConnId::new(100, i));
            q.idle_abandoned();
            q.compact_idle(|id, _| id.key < 10);
            assert!(q.idle_len() <= 2 * 10 + 2 * COMPACT_MIN, "{}", q.idle_len());
        }
        q.compact_idle(|_, _| true);
        assert!(q.idle_len() >= 10, "the kept ones stay");
    }

    #[test]
    fn ticks_are_exact_instants() {
        let clock = Clock::new();
        let t0 = clock.now();
        assert_eq!(clock.instant(clock.tick()), t0);
        clock.advance(Duration::from_nanos(1_500_000_001));
        let t = clock.tick();
        assert_eq!(clock.instant(t), t0 + Duration::from_nanos(1_500_000_001));
        assert_eq!(
            t.since(clock.tick_of(t0)),
            Duration::from_nanos(1_500_000_001)
        );
        assert!(clock.tick_of(t0) < t);
        assert_eq!(std::mem::size_of::<Option<Tick>>(), 8);
    }

    #[test]
    fn closures_run_once() {
        let clock = Clock::new();
        let q = TimerQueue::new(clock.clone());
        let hits = Rc::new(Cell::new(0));
        let h = hits.clone();
        let dc = q.schedule(
            Duration::ZERO,
            Target::Call(Box::new(move || h.set(h.get() + 1))),
        );
        fire_all(&q, clock.now());
        fire_all(&q, clock.now());
        assert_eq!(hits.get(), 1);
        assert!(!dc.active());
    }
}
