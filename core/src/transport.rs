//! `Transport`: what a protocol uses to talk to its peer (Twisted's `ITransport`).
//!
//! `write` only appends to the connection's output buffer and never blocks; the reactor flushes
//! after each callback. `lose_connection` closes once the buffer is flushed; `abort_connection`
//! closes now. A connection's state is one `Phase` (open, half-closing, losing, lingering...)
//! changed in one place, plus the bits independent of it (reading paused, a producer). The same
//! `ConnState`, driven by the same code (`crate::connection`), backs a real socket in the
//! reactor and a string transport in [`crate::testing`], so protocols are unit-tested without
//! sockets and behave as they will on them.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::address::{Address, Addrs};
use crate::output::Output;
use crate::reactor::{Command, Handle};
use crate::relay::{ConnectRelay, Link, RelayRequest};
use crate::timer::{DelayedCall, Target, Tick, TimerQueue};

/// Identifies a connection for commands sent through a [`Handle`]; stale ids are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub(crate) key: u32,
    pub(crate) serial: u32,
}

impl ConnId {
    pub(crate) fn new(key: u32, serial: u32) -> Self {
        ConnId { key, serial }
    }
}

/// Where a connection is in its life. Every change goes through [`ConnState::set_phase`].
///
/// ```text
///  Open ──lose_write──▶ HalfClosing ──flushed──▶ HalfClosed ──peer EOF──▶ Closed
///   │ └────────────────────────┴──lose──┐            │
///   ├──lose──▶ Losing ◀─────────────────┘◀───lose────┘
///   │            └──flushed──▶ Lingering ──peer EOF, 2 s or 256 KiB──▶ Closed
///   │            └──flushed, the peer already sent EOF──────────────────▶ Closed
///   └──abort (from any phase)──▶ Aborted ──▶ Closed      (an I/O error: ──▶ Closed)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading and writing.
    Open,
    /// `lose_write_connection`: our side shuts down once the output is flushed.
    HalfClosing,
    /// Our sending side is shut down (TCP half-close); the peer may still send.
    HalfClosed,
    /// `lose_connection`: closes once the output is flushed.
    Losing,
    /// Closing: our side is shut down, the peer's last input is read and dropped until its
    /// EOF, so no reset destroys the response in flight (nginx's lingering close).
    Lingering,
    /// `abort_connection`: closes at the end of this step, dropping unsent output.
    Aborted,
    /// Gone; the protocol heard `connection_lost`.
    Closed,
}

/// A registered streaming producer's state (Twisted's `IPushProducer` on the transport).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Producer {
    None,
    Producing,
    /// Told to pause: the output passed the high-water mark.
    Paused,
}

/// Per-connection state that a [`Transport`] reads and writes.
pub struct ConnState {
    pub(crate) id: ConnId,
    phase: Phase,
    pub(crate) out: Output,
    /// Bytes read from the peer (after TLS) since the connection opened, for the metrics.
    pub(crate) received: u64,
    /// The [`Flag`]s set, one bit each.
    flags: u8,
    pub(crate) producer: Producer,
    /// What few connections need (a TLS upgrade, protocol timers), boxed from the first
    /// use: an idle connection carries 8 bytes for it.
    extra: Option<Box<Extra>>,
    /// Its relay's peer while joined (`Link::Joined`; the kind of link is in `flags`).
    link_peer: ConnId,
    /// Its relay's record, joined or widowed.
    link_relay: u32,
    /// The peer's and the local address, compactly.
    pub(crate) addrs: Addrs,
    /// The factory's name, as its index among the names interned (1 byte where a `&str`
    /// takes 16).
    name: u8,
    pub(crate) session: u32,
    /// The idle timeout in milliseconds (4 bytes where a `Duration` takes 16: every idle
    /// connection carries it).
    idle_ms: Option<NonZeroU32>,
    pub(crate) last_activity: Tick,
    /// When its idle-timeout check is due (its entry in the timer queue's idle heap; an
    /// entry due at another time is an abandoned one). When it fires early (there was
    /// activity), it is re-armed.
    pub(crate) idle_at: Option<Tick>,
}

/// The shortest a connection whose idle timeout came due with output in the kernel is
/// watched for that output to leave ([`ConnState::output_moving`]): a reader that pauses a
/// few seconds during a stop (whose grace is one second) still gets the rest.
pub(crate) const IDLE_PROBE: Duration = Duration::from_secs(5);

/// The rarely used part of a connection's state.
#[derive(Default)]
struct Extra {
    /// `start_tls` was asked for: once the output has left, the connection becomes TLS with
    /// this config (reading stops meanwhile: what follows is the client's handshake).
    upgrade: Option<Arc<rustls::ServerConfig>>,
    /// Other timers aimed at this connection (protocol timers, the lingering close, the TLS
    /// handshake's deadline), all cancelled when it closes so none outlives it in the timer
    /// heap.
    timers: Vec<DelayedCall>,
    /// `Transport::reset_connection`: the close is a TCP reset.
    reset: bool,
    /// The idle timeout fired (`Protocol::timeout_connection` was called): a relay's end
    /// line says so, not that a side closed.
    timed_out: bool,
    /// A relay asked for before the TLS handshake ended: its connect waits for the end, so a
    /// client that never completes a handshake never reaches the destination (nginx's order,
    /// not twistd's).
    relay_after_handshake: Option<Box<ConnectRelay>>,
    /// The idle timeout came due with output still in the kernel: the bytes it held then,
    /// and the last activity they were counted after ([`ConnState::output_moving`]).
    idle_probe: Option<(Tick, u32)>,
}

/// A connection's yes-or-no states, one bit each of `ConnState::flags` (a byte where six
/// `bool`s take six, which with the rest would pad the state by 8 bytes).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Flag {
    /// The peer's EOF arrived: nothing more to read.
    EofReceived = 1,
    /// The protocol paused reading (`Transport::pause_producing`).
    ReadPaused = 2,
    /// Reading stopped early (high-water mark, pause, budget): data may be waiting, and no
    /// readiness edge will say so again.
    ReadPending = 4,
    /// epoll reported the peer's FIN (or an error): read until EOF, a short read is not the
    /// end.
    PeerClosed = 8,
    /// `stop_requested` was delivered.
    Stopping = 16,
    /// The connection is TLS (accepted on a TLS endpoint, or upgraded).
    Secure = 32,
    // Bits 6 and 7 are the link's kind (`LINK_SHIFT`).
}

thread_local! {
    /// The factory names connections were given, each once (there are a few).
    static NAMES: std::cell::RefCell<Vec<&'static str>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `name`'s index among the names interned. Factory names are a few fixed strings; were
/// there ever more than 256, the later ones would share the last index and be logged as
/// `?`.
fn intern(name: &'static str) -> u8 {
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        let i = match names.iter().position(|n| *n == name) {
            Some(i) => i,
            None => {
                if names.len() < usize::from(u8::MAX) {
                    names.push(name);
                } else if names.len() == usize::from(u8::MAX) {
                    names.push("?");
                }
                names.len() - 1
            }
        };
        u8::try_from(i).unwrap_or(u8::MAX)
    })
}

/// Bits 6 and 7 of `ConnState::flags`: the kind of its `Link`.
const LINK_SHIFT: u8 = 6;

/// Key of the reactor's own idle-timeout timer entries.
pub(crate) const IDLE_KEY: u64 = u64::MAX;

impl ConnState {
    pub(crate) fn new(
        id: ConnId,
        peer: Address,
        host: Address,
        name: &'static str,
        session: u32,
        now: Tick,
    ) -> Self {
        ConnState {
            id,
            phase: Phase::Open,
            out: Output::default(),
            received: 0,
            flags: 0,
            producer: Producer::None,
            extra: None,
            link_peer: ConnId::new(0, 0),
            link_relay: 0,
            addrs: Addrs::new(peer, host),
            name: intern(name),
            session,
            idle_ms: None,
            last_activity: now,
            idle_at: None,
        }
    }

    /// The factory's name (the log system's first part).
    pub(crate) fn name(&self) -> &'static str {
        NAMES.with(|names| {
            names
                .borrow()
                .get(usize::from(self.name))
                .copied()
                .unwrap_or("")
        })
    }

    /// Its relay, if any: waiting for the outgoing connection, or joined with a peer. Kept
    /// as two fields and two bits of `flags`, where a `Link` takes 16 bytes with padding.
    pub(crate) fn link(&self) -> Link {
        match self.flags >> LINK_SHIFT {
            0 => Link::None,
            1 => Link::Pending,
            2 => Link::Joined {
                peer: self.link_peer,
                relay: self.link_relay,
            },
            _ => Link::Widowed {
                relay: self.link_relay,
            },
        }
    }

    pub(crate) fn set_link(&mut self, link: Link) {
        let kind = match link {
            Link::None => 0,
            Link::Pending => 1,
            Link::Joined { peer, relay } => {
                (self.link_peer, self.link_relay) = (peer, relay);
                2
            }
            Link::Widowed { relay } => {
                self.link_relay = relay;
                3
            }
        };
        self.flags = (self.flags & !(3 << LINK_SHIFT)) | (kind << LINK_SHIFT);
    }

    /// True if `f` is set.
    pub(crate) fn is(&self, f: Flag) -> bool {
        self.flags & f as u8 != 0
    }

    /// Sets or clears `f`.
    pub(crate) fn set(&mut self, f: Flag, on: bool) {
        if on {
            self.flags |= f as u8;
        } else {
            self.flags &= !(f as u8);
        }
    }

    /// The TLS config `start_tls` asked for, until the upgrade happens.
    pub(crate) fn upgrade(&self) -> Option<&Arc<rustls::ServerConfig>> {
        self.extra.as_ref().and_then(|e| e.upgrade.as_ref())
    }

    /// Asks for the upgrade to TLS with `config` once the output has left.
    pub(crate) fn set_upgrade(&mut self, config: Arc<rustls::ServerConfig>) {
        self.extra.get_or_insert_with(Default::default).upgrade = Some(config);
    }

    /// Our sending side was shut down, or is being, with the input still open: a relay's
    /// peer's FIN carried to it.
    pub(crate) fn half_closed(&self) -> bool {
        matches!(self.phase(), Phase::HalfClosing | Phase::HalfClosed)
    }

    /// The idle timeout fired: what closes the connection now is that.
    pub(crate) fn mark_timed_out(&mut self) {
        self.extra.get_or_insert_with(Default::default).timed_out = true;
    }

    /// Whether the idle timeout fired.
    pub(crate) fn timed_out(&self) -> bool {
        self.extra.as_ref().is_some_and(|e| e.timed_out)
    }

    /// Whether `Transport::reset_connection` asked for the close to be a reset.
    pub(crate) fn wants_reset(&self) -> bool {
        self.extra.as_ref().is_some_and(|e| e.reset)
    }

    /// Makes the abort that follows a TCP reset (`Transport::reset_connection`'s flag).
    pub(crate) fn set_reset(&mut self) {
        self.extra.get_or_insert_with(Default::default).reset = true;
    }

    /// Keeps relay `r` until the TLS handshake ends.
    pub(crate) fn defer_relay(&mut self, r: Box<ConnectRelay>) {
        self.extra
            .get_or_insert_with(Default::default)
            .relay_after_handshake = Some(r);
    }

    /// Whether a relay waits for the TLS handshake to end.
    pub(crate) fn awaits_handshake(&self) -> bool {
        self.extra
            .as_ref()
            .is_some_and(|e| e.relay_after_handshake.is_some())
    }

    /// Plaintext that came with the end of the handshake goes to the destination first.
    pub(crate) fn keep_for_relay(&mut self, data: &[u8]) {
        if let Some(r) = self
            .extra
            .as_mut()
            .and_then(|e| e.relay_after_handshake.as_mut())
        {
            r.request.forward.extend_from_slice(data);
        }
    }

    /// The relay that waited for the handshake, now that it has ended.
    pub(crate) fn take_deferred_relay(&mut self) -> Option<Box<ConnectRelay>> {
        self.extra
            .as_mut()
            .and_then(|e| e.relay_after_handshake.take())
    }

    /// Takes the upgrade asked for (it is happening).
    pub(crate) fn take_upgrade(&mut self) -> Option<Arc<rustls::ServerConfig>> {
        self.extra.as_mut().and_then(|e| e.upgrade.take())
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// The one place the phase changes. A change the diagram does not allow is ignored (and
    /// a bug in debug builds); every change is traced.
    pub(crate) fn set_phase(&mut self, next: Phase) {
        use Phase::*;
        let allowed = match (self.phase, next) {
            (a, b) if a == b => return,
            (Closed, _) => false,
            (_, Closed | Aborted) => true,
            (Open, HalfClosing | Losing) => true,
            (HalfClosing, HalfClosed | Losing) => true,
            (HalfClosed, Losing) => true,
            (Losing, Lingering) => true,
            _ => false,
        };
        debug_assert!(allowed, "{:?}: {:?} => {next:?}", self.id, self.phase);
        if allowed {
            log::trace!(target: "twistrs.conn", "{:?}: {:?} => {next:?}", self.id, self.phase);
            self.phase = next;
        }
    }

    /// `lose_connection` or `abort_connection` was called, or the connection is gone.
    pub(crate) fn disconnecting(&self) -> bool {
        matches!(
            self.phase,
            Phase::Losing | Phase::Lingering | Phase::Aborted | Phase::Closed
        )
    }

    /// Written output is taken only while open.
    pub(crate) fn accepts_output(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Queues `data`; dropped once the connection is closing.
    pub(crate) fn write(&mut self, data: &[u8]) {
        if self.accepts_output() {
            self.out.write(data);
        }
    }

    /// Closes once the output has left (`lose_connection`).
    pub(crate) fn lose(&mut self) {
        if matches!(
            self.phase,
            Phase::Open | Phase::HalfClosing | Phase::HalfClosed
        ) {
            self.set_phase(Phase::Losing);
        }
    }

    /// Stops reading from the peer.
    pub(crate) fn pause_reading(&mut self) {
        self.set(Flag::ReadPaused, true);
    }

    /// Reads again; true if reading was paused (the connection must be driven: no readiness
    /// edge will come for what is waiting).
    pub(crate) fn resume_reading(&mut self) -> bool {
        let was = self.is(Flag::ReadPaused);
        self.set(Flag::ReadPaused, false);
        if was {
            self.set(Flag::ReadPending, true);
        }
        was
    }

    /// The peer is read only while the connection is not closing our side for good.
    pub(crate) fn reads(&self) -> bool {
        matches!(
            self.phase,
            Phase::Open | Phase::HalfClosing | Phase::HalfClosed
        ) && !self.is(Flag::EofReceived)
            && self.upgrade().is_none()
    }

    /// Keeps `call` to cancel it at close; forgets the ones that already ran.
    pub(crate) fn track_timer(&mut self, call: DelayedCall) {
        let timers = &mut self.extra.get_or_insert_with(Default::default).timers;
        timers.retain(DelayedCall::active);
        timers.push(call);
    }

    /// Cancels every timer aimed at this connection (it is closing).
    pub(crate) fn cancel_timers(&mut self, timers: &TimerQueue) {
        self.abandon_idle(timers);
        if let Some(e) = self.extra.as_mut() {
            for t in std::mem::take(&mut e.timers) {
                t.cancel();
            }
        }
    }

    /// The idle timer came due at `now`: true if the connection was idle for its whole
    /// timeout, else the timer is re-armed for what is left of it.
    /// An entry due later than `now` is an abandoned one (the live one is due at `idle_at`).
    pub(crate) fn idle_due(&mut self, now: Tick, timers: &TimerQueue) -> bool {
        match self.idle_at {
            Some(at) if at <= now => self.idle_at = None,
            _ => return false,
        }
        let Some(d) = self.idle() else {
            return false;
        };
        let due = self.last_activity.after(d);
        if now >= due {
            return true;
        }
        self.arm_idle(due, timers);
        false
    }

    /// The idle timeout came due at `now` (`idle_due`), and the kernel still holds `queued`
    /// bytes of output: whether they are leaving, which is activity the reactor does not
    /// see. A socket buffer of megabytes drained by a slow reader gives the reactor room to
    /// write only every few seconds, and a download moving steadily would be cut as idle (by
    /// a stop's one-second grace, above all). So the bytes are noted and looked at again
    /// after the timeout, [`IDLE_PROBE`] at least: other bytes then (the reader took some,
    /// perhaps more were written) are activity, and the watch goes on; the same bytes mean a
    /// reader that took nothing for that long: idle. Only the connections whose timeout comes
    /// due with output queued pay for it (a boxed note, an ioctl per window).
    pub(crate) fn output_moving(&mut self, queued: u32, now: Tick, timers: &TimerQueue) -> bool {
        let since = self.last_activity;
        let before = self
            .extra
            .as_mut()
            .and_then(|e| e.idle_probe.take())
            .filter(|(at, _)| *at == since)
            .map(|(_, q)| q);
        let Some(d) = self.idle() else {
            return false;
        };
        match before {
            _ if queued == 0 => return false,
            Some(q) if q == queued => return false,
            // Moved since the last look: activity now.
            Some(_) => self.last_activity = now,
            None => {}
        }
        self.extra.get_or_insert_with(Default::default).idle_probe =
            Some((self.last_activity, queued));
        self.arm_idle(now.after(d.max(IDLE_PROBE)), timers);
        true
    }

    /// Checks the idle timeout at `at`, the entry it keeps.
    fn arm_idle(&mut self, at: Tick, timers: &TimerQueue) {
        self.idle_at = Some(at);
        timers.schedule_idle(at, self.id);
    }

    /// Keeps no idle entry any more (it closes, or its timeout changes).
    fn abandon_idle(&mut self, timers: &TimerQueue) {
        if self.idle_at.take().is_some() {
            timers.idle_abandoned();
        }
    }

    /// The idle timeout, if any.
    pub(crate) fn idle(&self) -> Option<Duration> {
        self.idle_ms
            .map(|ms| Duration::from_millis(u64::from(ms.get())))
    }

    fn set_idle(&mut self, d: Option<Duration>) {
        self.idle_ms = idle_ms(d);
    }

    /// Bytes written by the protocol (files included) and not yet sent.
    pub(crate) fn buffered(&self) -> usize {
        self.out.buffered()
    }

    /// The connection's log system, Twisted's `logPrefix`: `Echo,3,127.0.0.1`.
    pub(crate) fn system(&self) -> String {
        crate::logsys::connection(self.name(), self.session, &self.addrs.peer())
    }
}

/// An idle timeout in milliseconds (at least one), as a connection keeps it.
fn idle_ms(d: Option<Duration>) -> Option<NonZeroU32> {
    d.map(|d| {
        let ms = u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        NonZeroU32::new(ms).unwrap_or(NonZeroU32::MIN)
    })
}

impl ConnState {
    /// True if it has timers of its own still to come, or a TLS upgrade asked for: it cannot
    /// become a side of a compact pair (whose ids are new).
    pub(crate) fn has_pending_extra(&self) -> bool {
        self.extra
            .as_ref()
            .is_some_and(|e| e.upgrade.is_some() || e.timers.iter().any(DelayedCall::active))
    }
}

/// The states of both sides of a joined relay of plain sockets, kept compactly by the
/// reactor (issue 11): what each side has of its own, once what the two share (the factory's
/// name and session, the idle timeout, the last activity and the one idle check), and what
/// only the client needs (its received bytes, which the metrics count). A side is unpacked
/// into a whole `ConnState` for one step, so the same connection code drives it.
pub(crate) struct PairState {
    /// Each side's own: its output, phase, flags and producer state (kept apart, so the
    /// small ones share the padding with the rest).
    outs: [Output; 2],
    phases: [Phase; 2],
    flags: [u8; 2],
    producers: [Producer; 2],
    /// The sides' rare state (the lingering close's timer), boxed from the first use.
    extras: Option<Box<[Option<Box<Extra>>; 2]>>,
    received: u64,
    /// The client's peer (as `peer`) and the destination's (as `host`); the local addresses
    /// are not kept (no protocol is left to ask).
    addrs: Addrs,
    /// `ConnId::key` of the client (the destination's has the low bit set).
    base: u32,
    serial: u32,
    name: u8,
    session: u32,
    idle_ms: Option<NonZeroU32>,
    /// Both sides' latest activity: the pair times out when neither side made progress.
    last_activity: Tick,
    /// The one idle check, aimed at the first side still open.
    idle_at: Option<Tick>,
}

impl PairState {
    /// Merges `client` and `dest` (joined with each other, with no timers of their own left)
    /// into a pair whose sides have ids `base` and `base | 1` with `serial`. Their idle checks
    /// are abandoned: the pair arms its own.
    pub(crate) fn new(
        client: ConnState,
        dest: ConnState,
        base: u32,
        serial: u32,
        timers: &TimerQueue,
    ) -> Self {
        for st in [&client, &dest] {
            if st.idle_at.is_some() {
                timers.idle_abandoned();
            }
        }
        PairState {
            phases: [client.phase, dest.phase],
            flags: [client.flags, dest.flags],
            producers: [client.producer, dest.producer],
            addrs: Addrs::new(client.addrs.peer(), dest.addrs.peer()),
            received: client.received,
            name: client.name,
            session: client.session,
            idle_ms: client.idle_ms,
            last_activity: client.last_activity.max(dest.last_activity),
            idle_at: None,
            extras: None,
            base,
            serial,
            outs: [client.out, dest.out],
        }
    }

    /// The id of side `side` (0: the client, 1: the destination).
    pub(crate) fn id(&self, side: usize) -> ConnId {
        ConnId::new(self.base | side as u32, self.serial)
    }

    /// The side the idle check is for: the client while it is open.
    fn idle_side(&self) -> usize {
        usize::from(self.phases[0] == Phase::Closed)
    }

    /// True if the idle check due `at` for `side` is the live one.
    pub(crate) fn idle_live(&self, side: usize, at: Tick) -> bool {
        side == self.idle_side() && self.idle_at == Some(at)
    }

    /// Arms the idle check (`d`, or the timeout the pair has) for the first side still
    /// open, if it has none.
    pub(crate) fn arm_idle(&mut self, d: Option<Duration>, timers: &TimerQueue) {
        if d.is_some() {
            self.idle_ms = idle_ms(d);
        }
        let side = self.idle_side();
        if let (None, Some(d), false) = (self.idle_at, self.idle(), self.is_closed(side)) {
            let at = self.last_activity.after(d);
            self.idle_at = Some(at);
            timers.schedule_idle(at, self.id(side));
        }
    }

    fn idle(&self) -> Option<Duration> {
        self.idle_ms
            .map(|ms| Duration::from_millis(u64::from(ms.get())))
    }

    fn is_closed(&self, side: usize) -> bool {
        self.phases[side] == Phase::Closed
    }

    /// Side `side` as a whole state, for one step; `own` says it is the one stepped (it gets
    /// the addresses), `peer_open` whether the other side is still there. Give it back with
    /// [`PairState::pack`].
    pub(crate) fn unpack(&mut self, side: usize, own: bool, peer_open: bool) -> ConnState {
        let idle_at = if side == self.idle_side() {
            self.idle_at
        } else {
            None
        };
        let addrs = if !own {
            Addrs::placeholder()
        } else if side == 0 {
            std::mem::replace(&mut self.addrs, Addrs::placeholder())
        } else {
            std::mem::replace(&mut self.addrs, Addrs::placeholder()).swapped()
        };
        let extra = self.extras.as_mut().and_then(|e| e[side].take());
        let peer = self.id(1 - side);
        let mut st = ConnState {
            id: self.id(side),
            phase: self.phases[side],
            out: std::mem::take(&mut self.outs[side]),
            received: if side == 0 { self.received } else { 0 },
            flags: self.flags[side],
            producer: self.producers[side],
            extra,
            link_peer: peer,
            link_relay: 0,
            addrs,
            name: self.name,
            session: self.session,
            idle_ms: self.idle_ms,
            last_activity: self.last_activity,
            idle_at,
        };
        st.set_link(if peer_open {
            Link::Joined { peer, relay: 0 }
        } else {
            Link::Widowed { relay: 0 }
        });
        st
    }

    /// Takes back side `side` after a step (`own` as it was unpacked).
    pub(crate) fn pack(&mut self, side: usize, st: ConnState, own: bool) {
        if side == self.idle_side() {
            self.idle_at = st.idle_at;
        }
        if own {
            self.addrs = if side == 0 {
                st.addrs
            } else {
                st.addrs.swapped()
            };
        }
        if side == 0 {
            self.received = st.received;
        }
        self.last_activity = self.last_activity.max(st.last_activity);
        match (st.extra, &mut self.extras) {
            (Some(e), Some(x)) => x[side] = Some(e),
            (Some(e), x) => {
                let mut b = Box::new([None, None]);
                b[side] = Some(e);
                *x = Some(b);
            }
            (None, x) => {
                if x.as_ref().is_some_and(|b| b.iter().all(Option::is_none)) {
                    *x = None;
                }
            }
        }
        self.outs[side] = st.out;
        self.phases[side] = st.phase;
        self.flags[side] = st.flags;
        self.producers[side] = st.producer;
    }

    /// The client's received bytes and the bytes each side sent, for the metrics.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    pub(crate) fn sent(&self, side: usize) -> u64 {
        self.outs[side].sent
    }
}

/// A protocol's handle on its connection, valid for the duration of one callback.
pub struct Transport<'a> {
    pub(crate) st: &'a mut ConnState,
    pub(crate) handle: &'a Handle,
}

impl<'a> Transport<'a> {
    pub(crate) fn new(st: &'a mut ConnState, handle: &'a Handle) -> Self {
        Transport { st, handle }
    }

    /// Queues `data` for the peer. Never blocks; dropped after `lose_connection`/`abort`.
    pub fn write(&mut self, data: &[u8]) {
        self.st.write(data);
    }

    /// Queues `len` bytes of `file` from `offset`, sent with sendfile(2): no copy through user
    /// space, so memory stays flat however large the file. Output written after it follows it.
    pub fn send_file(&mut self, file: Rc<File>, offset: u64, len: u64) {
        if self.st.accepts_output() {
            self.st.out.send_file(file, offset, len);
        }
    }

    /// Queues several buffers (Twisted's `writeSequence`).
    pub fn write_sequence(&mut self, parts: &[&[u8]]) {
        for p in parts {
            self.write(p);
        }
    }

    /// Closes the connection once everything written so far has been sent.
    pub fn lose_connection(&mut self) {
        self.st.lose();
    }

    /// Closes the connection now, dropping unsent output.
    pub fn abort_connection(&mut self) {
        if self.st.phase() != Phase::Closed {
            self.st.set_phase(Phase::Aborted);
        }
    }

    /// Aborts with a TCP reset (SO_LINGER 0): what the kernel still holds to send is dropped
    /// too. For a peer that reads too slowly to be let keep a large reply queued (up to the
    /// socket's send buffer, megabytes) after the abort; an ordinary abort lets the kernel go
    /// on sending what it holds, then ends with a FIN.
    pub fn reset_connection(&mut self) {
        if self.st.phase() != Phase::Closed {
            self.st.extra.get_or_insert_with(Default::default).reset = true;
            self.st.set_phase(Phase::Aborted);
        }
    }

    /// Shuts down our sending side once flushed; the peer may keep sending (half-close).
    pub fn lose_write_connection(&mut self) {
        if self.st.phase() == Phase::Open {
            self.st.set_phase(Phase::HalfClosing);
        }
    }

    /// Stops reading from the peer until `resume_producing` (Twisted's `pauseProducing`).
    pub fn pause_producing(&mut self) {
        self.st.pause_reading();
    }

    /// Starts reading from the peer again.
    pub fn resume_producing(&mut self) {
        self.st.resume_reading();
    }

    /// Registers the protocol as a streaming producer: the reactor calls its
    /// `pause_producing` when the output passes the high-water mark and `resume_producing`
    /// when it drains below the low-water mark.
    pub fn register_producer(&mut self) {
        if self.st.producer == Producer::None {
            self.st.producer = Producer::Producing;
        }
    }

    /// Stops producer callbacks.
    pub fn unregister_producer(&mut self) {
        self.st.producer = Producer::None;
    }

    /// True if the connection is TLS (a TLS endpoint, or after `start_tls`).
    pub fn is_secure(&self) -> bool {
        self.st.is(Flag::Secure) || self.st.upgrade().is_some()
    }

    /// Upgrades the connection to TLS in place (STARTTLS, STLS): what was written before is
    /// sent in plaintext first, then the handshake begins; nothing more is read as plaintext.
    /// Input the protocol already holds from before is its to throw away (RFC 3207 says so).
    pub fn start_tls(&mut self, tls: &crate::tls::TlsContext) {
        if !self.is_secure() {
            self.st.set_upgrade(tls.config());
        }
    }

    /// Bytes written but not yet sent.
    pub fn buffered(&self) -> usize {
        self.st.buffered()
    }

    /// True if nothing written waits in the transport's buffer: what a protocol checks
    /// before offering itself to be closed when idle ([`crate::protocol::Factory::make_room`]).
    /// The reactor itself still keeps open, when asked to close it for room, a connection
    /// whose TLS records or kernel buffers hold bytes to send, or that has input unread.
    pub fn all_sent(&self) -> bool {
        self.st.buffered() == 0
    }

    /// Bytes (files included) that have left for the peer since the connection opened: a
    /// response written at total `n` is on the wire once `bytes_sent() >= n`.
    pub fn bytes_sent(&self) -> u64 {
        self.st.out.sent
    }

    /// Bytes (files included) written since the connection opened, sent or not.
    pub fn bytes_written(&self) -> u64 {
        self.st.out.sent + self.st.buffered() as u64
    }

    /// True once `lose_connection` or `abort_connection` was called.
    pub fn disconnecting(&self) -> bool {
        self.st.disconnecting()
    }

    /// The remote address.
    pub fn peer(&self) -> Address {
        self.st.addrs.peer()
    }

    /// The local address.
    pub fn host(&self) -> Address {
        self.st.addrs.host()
    }

    /// This connection's id, for commands sent through a [`Handle`] from elsewhere.
    pub fn id(&self) -> ConnId {
        self.st.id
    }

    /// The per-connection log system, Twisted's `logPrefix`: `Echo,3,127.0.0.1`.
    pub fn system(&self) -> String {
        self.st.system()
    }

    /// Closes the connection after `timeout` without input or output progress
    /// (Twisted's `TimeoutMixin.setTimeout`); `None` turns it off.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        if self.st.is(Flag::Stopping)
            && let (Some(old), Some(new)) = (self.st.idle(), timeout)
            && old < new
        {
            // While stopping, a protocol may shorten its idle timeout but not lengthen it.
            return;
        }
        self.st.set_idle(timeout);
        self.st.last_activity = self.handle.tick();
        let timers = self.handle.timers();
        let Some(d) = timeout else {
            return self.st.abandon_idle(timers);
        };
        let want = self.st.last_activity.after(d);
        // A later deadline is found when the check fires early and re-arms.
        if self.st.idle_at.is_some_and(|at| at <= want) {
            return;
        }
        self.st.abandon_idle(timers);
        self.st.arm_idle(want, timers);
    }

    /// Counts as activity for the idle timeout (Twisted's `resetTimeout`).
    pub fn reset_timeout(&mut self) {
        self.st.last_activity = self.handle.tick();
    }

    /// Calls this protocol's `timer_fired(key)` after `delay`.
    /// The call is cancelled if the connection closes first. Keys from `u64::MAX - 2` up are
    /// the reactor's own (idle, linger, handshake): a timer there would never reach the
    /// protocol.
    pub fn call_later(&mut self, delay: Duration, key: u64) -> DelayedCall {
        debug_assert!(
            key < crate::connection::HANDSHAKE_KEY,
            "timer key {key} is reserved"
        );
        let call = self
            .handle
            .timers()
            .schedule(delay, Target::Conn(self.st.id, key));
        self.st.track_timer(call.clone());
        call
    }

    /// Runs blocking `f` on a worker thread (file and disk work) and delivers its outcome,
    /// a `Result<T, Failure>`, to this protocol's `notified` on the reactor thread; nothing
    /// is delivered if the connection closed first.
    pub fn call_in_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, crate::error::Failure> + Send + 'static,
    ) {
        let (h, id) = (self.handle.clone(), self.st.id);
        self.handle
            .defer_to_thread(f)
            .consume(move |r| h.notify(id, Box::new(r)));
    }

    /// As [`Transport::call_in_thread`], for work a process that exits need not wait for (a
    /// name lookup): see [`crate::Handle::defer_to_thread_abandonable`].
    pub fn call_in_thread_abandonable<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, crate::error::Failure> + Send + 'static,
    ) {
        let (h, id) = (self.handle.clone(), self.st.id);
        self.handle
            .defer_to_thread_abandonable(f)
            .consume(move |r| h.notify(id, Box::new(r)));
    }

    /// Connects out to `request.dest` and joins this connection with the new one into a
    /// relay ([`crate::relay`]). Reading from this connection stops at once; the protocol then
    /// hears `relay_connected` (joined: the bytes flow without it from then on) or
    /// `relay_connection_failed` (reading stays paused; the default closes). Ignored if the
    /// connection is closing or already has a relay. On a TLS connection whose handshake has
    /// not ended (a forwarder asking in `connection_made`), the connect waits for the end:
    /// plaintext, a failed handshake or one never finished opens nothing to the destination.
    pub fn connect_relay(&mut self, request: RelayRequest) {
        if self.st.link() != Link::None || !self.st.accepts_output() {
            return;
        }
        self.st.pause_reading();
        self.st.set_link(Link::Pending);
        self.handle
            .push(Command::ConnectRelay(Box::new(ConnectRelay {
                from: self.st.id,
                request,
            })));
    }

    /// The reactor, for timers, threads and commands to other connections.
    pub fn handle(&self) -> &Handle {
        self.handle
    }
}

/// Where a datagram transport sends to: a UDP socket, or a list in tests.
pub(crate) trait DatagramSink {
    fn send_to(&mut self, data: &[u8], to: SocketAddr) -> io::Result<usize>;
}

impl DatagramSink for mio::net::UdpSocket {
    fn send_to(&mut self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        mio::net::UdpSocket::send_to(self, data, to)
    }
}

impl DatagramSink for Vec<(Vec<u8>, SocketAddr)> {
    fn send_to(&mut self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.push((data.to_vec(), to));
        Ok(data.len())
    }
}

/// A datagram protocol's handle on its port (Twisted's UDP transport).
pub struct DatagramTransport<'a> {
    pub(crate) sink: &'a mut dyn DatagramSink,
    pub(crate) host: &'a Address,
    pub(crate) handle: &'a Handle,
    pub(crate) port: crate::reactor::PortId,
}

impl DatagramTransport<'_> {
    /// Sends one datagram. UDP is lossy: a full socket buffer drops it, as the network would.
    pub fn write(&mut self, data: &[u8], to: SocketAddr) {
        if let Err(e) = self.sink.send_to(data, to) {
            log::debug!(target: "twistrs.udp", "datagram to {to} dropped: {e}");
        }
    }

    /// The local address.
    pub fn host(&self) -> &Address {
        self.host
    }

    /// The reactor.
    pub fn handle(&self) -> &Handle {
        self.handle
    }

    /// This port's id, to write from it later with `Handle::send_datagram` (an answer that
    /// waits for another server's).
    pub fn port(&self) -> crate::reactor::PortId {
        self.port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(name: &'static str) -> ConnState {
        let a = Address::Tcp(SocketAddr::from(([127, 0, 0, 1], 7)));
        let clock = crate::timer::Clock::new();
        ConnState::new(ConnId::new(1, 2), a.clone(), a, name, 3, clock.tick())
    }

    #[test]
    fn the_link_and_the_flags_share_a_byte_without_touching_each_other() {
        let mut st = state("Test");
        st.set(Flag::ReadPaused, true);
        st.set(Flag::Secure, true);
        let links = [
            Link::Pending,
            Link::Joined {
                peer: ConnId::new(9, 8),
                relay: 7,
            },
            Link::Widowed { relay: 7 },
            Link::None,
        ];
        for link in links {
            st.set_link(link);
            assert_eq!(st.link(), link);
            assert!(st.is(Flag::ReadPaused) && st.is(Flag::Secure));
            assert!(!st.is(Flag::EofReceived) && !st.is(Flag::Stopping));
        }
        st.set(Flag::ReadPaused, false);
        st.set_link(Link::Widowed { relay: 5 });
        assert!(!st.is(Flag::ReadPaused) && st.is(Flag::Secure));
        assert_eq!(st.link(), Link::Widowed { relay: 5 });
    }

    #[test]
    fn output_leaving_the_kernel_counts_as_activity_until_it_stops_moving() {
        let clock = crate::timer::Clock::new();
        let timers = crate::timer::TimerQueue::new(clock.clone());
        let mut st = state("Test");
        st.set_idle(Some(Duration::from_secs(1)));
        let t0 = st.last_activity;
        let at = |s: u64| t0.after(Duration::from_secs(s));
        // Nothing in the kernel: idle at once.
        assert!(!st.output_moving(0, at(1), &timers));
        // Bytes queued: watched for IDLE_PROBE (longer than the timeout), no activity yet.
        assert!(st.output_moving(5000, at(1), &timers));
        assert_eq!(st.last_activity, t0);
        assert_eq!(st.idle_at, Some(at(1).after(IDLE_PROBE)));
        // Fewer bytes at the next look: the reader took some, which is activity now.
        assert!(st.output_moving(3000, at(6), &timers));
        assert_eq!(st.last_activity, at(6));
        // The same bytes a window later: a reader that took nothing for that long is idle.
        assert!(!st.output_moving(3000, at(11), &timers));
        // A note taken before other activity is not compared with what comes after it.
        assert!(st.output_moving(3000, at(12), &timers));
        st.last_activity = at(13);
        assert!(st.output_moving(3000, at(14), &timers), "a fresh watch");
    }

    #[test]
    fn each_name_is_kept_once_and_given_back() {
        let (a, b) = (state("Alpha"), state("Beta"));
        assert_eq!((a.name(), b.name()), ("Alpha", "Beta"));
        assert_eq!(state("Alpha").name, a.name);
        assert_eq!(a.system(), "Alpha,3,127.0.0.1");
    }
}
