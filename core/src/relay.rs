//! Relays: two connections joined by the reactor, bytes flowing both ways (Twisted's
//! `portforward.Proxy` pair, each transport the other's producer).
//!
//! A protocol that has decided where its client goes (a port forwarder at once, a SOCKS
//! server after reading the request) calls [`Transport::connect_relay`]: reading from the
//! client stops, the reactor resolves the host on a worker thread, connects with a timeout,
//! and joins the two connections; the protocol hears [`Protocol::relay_connected`] (it may
//! still write its reply to the client, which goes before anything from the destination) or
//! [`Protocol::relay_connection_failed`]. On a TLS connection whose handshake has not ended,
//! the connect waits for its end (nginx's order, not twistd's): a client that never completes
//! a handshake never reaches the destination. [`crate::Handle::join`] joins two connections
//! that are already open (a SOCKS BIND).
//!
//! Once joined, the bytes no longer pass through the protocols: the reactor reads one side
//! straight into the other's output, sending at once what the socket takes (no copy when
//! nothing is queued). Backpressure is Twisted's producer/consumer: each side is the other's
//! streaming producer, so when one side's unsent output passes the high-water mark the other
//! side is no longer read, and it is read again below the low-water mark: a pair holds at most
//! about the high-water mark plus one read per direction, however fast one end sends and
//! however slowly the other reads. A FIN is carried through as a half-close (the reply still
//! flows back); a clean close of one side closes the other once its output has left; a reset on
//! one side resets the other; an error or a timeout aborts it. On a graceful stop a relay is not asked
//! to close: it finishes by itself, or the shutdown deadline closes it. When both sides have
//! closed, `on_end` hears the bytes carried each way.

use std::any::Any;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use crate::address::Address;
use crate::client::{ConnectError, Destination};
use crate::connection::{After, Conn, Driver};
use crate::error::Reason;
use crate::output::Socket;
use crate::protocol::Protocol;
use crate::reactor::Handle;
use crate::timer::Tick;
use crate::transport::{ConnId, ConnState, Flag, Phase, Producer, Transport};

/// The default connect timeout, Twisted's `connectTCP` default.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which side of a relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The connection that asked for the relay (the client of a forwarder or proxy).
    Client,
    /// The outgoing connection (the destination).
    Dest,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Dest,
            Side::Dest => Side::Client,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Dest => "destination",
        })
    }
}

/// What ended a relay, so that its end line blames the right party: a side that closed, or
/// the server (its idle timeout, its stop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `ended_by` closed first by itself (its peer closed, cleanly or not, or its socket
    /// failed); `reason` says how.
    Closed,
    /// The idle timeout passed with nothing carried either way; it was this long.
    Idle(Duration),
    /// The server closed it as it stopped: the shutdown deadline passed, or a second stop
    /// signal came (the main log says which, just before).
    Stopped,
    /// The server aborted `ended_by`'s connection (a protocol or `Handle::abort_connection`).
    Aborted,
}

impl Ending {
    /// What ended a relay whose first side to close, `st`, closed for `reason`.
    fn of(st: &ConnState, reason: &Reason) -> Ending {
        match reason {
            Reason::Done | Reason::Io(_) => Ending::Closed,
            Reason::Shutdown => Ending::Stopped,
            Reason::Aborted if st.timed_out() => Ending::Idle(st.idle().unwrap_or_default()),
            Reason::Aborted => Ending::Aborted,
        }
    }
}

/// What a relay carried, given to `on_end` once both sides have closed.
#[derive(Debug, Clone)]
pub struct RelayEnd {
    /// The client connection's log system (`Transport::system`), so an `on_end` need not
    /// keep a copy for the relay's life.
    pub system: String,
    /// The client's address.
    pub client: Address,
    /// The destination's address (the peer of the outgoing connection).
    pub dest: Address,
    /// Bytes that reached the destination's socket.
    pub to_dest: u64,
    /// Bytes that reached the client's socket.
    pub to_client: u64,
    /// From the join to the second close.
    pub duration: Duration,
    /// The side that closed first.
    pub ended_by: Side,
    /// Why it closed (a `Reason`'s text).
    pub reason: String,
    /// True if the side that closed first closed cleanly (both directions finished, or a
    /// close after the flush); false for a reset, an error, a timeout or the shutdown deadline.
    pub clean: bool,
    /// False for a join that could not be made (a side had gone first): the relay never
    /// carried anything, and its end is a failure to report as one, not a relay that ran.
    pub joined: bool,
    /// Who ended it: `ended_by` by itself, or the server.
    pub ending: Ending,
}

impl RelayEnd {
    /// Why the relay ended, for its end line: `the destination closed first: Connection was
    /// closed cleanly.`, `closed by the idle timeout: nothing carried either way for 60 s`,
    /// `closed as the server stopped`, `the server aborted the client's connection`.
    pub fn why(&self) -> String {
        match self.ending {
            // "the destination closed before the relay was joined" names its side already.
            Ending::Closed if !self.joined => self.reason.clone(),
            Ending::Closed => format!("the {} closed first: {}", self.ended_by, self.reason),
            Ending::Idle(d) => format!(
                "closed by the idle timeout: nothing carried either way for {} s",
                d.as_secs_f64()
            ),
            Ending::Stopped => "closed as the server stopped".to_string(),
            Ending::Aborted => format!("the server aborted the {}'s connection", self.ended_by),
        }
    }
}

/// Called once when both sides of a relay have closed.
pub enum OnEnd {
    /// A closure of this relay's own.
    Once(Box<dyn FnOnce(&RelayEnd)>),
    /// One closure shared by many relays (a service's): an idle relay keeps a reference to
    /// it, not an allocation of its own (issue 11).
    Shared(SharedOnEnd),
}

impl OnEnd {
    /// Runs it for `end`.
    pub fn call(self, end: &RelayEnd) {
        match self {
            OnEnd::Once(f) => f(end),
            OnEnd::Shared(f) => (f.0)(end),
        }
    }

    /// Does nothing (a closure without captures: no allocation).
    fn nothing() -> Self {
        OnEnd::Once(Box::new(|_| {}))
    }
}

/// An `on_end` closure for many relays, cheap to clone. A thin pointer, so an [`OnEnd`] is
/// 16 bytes either way.
#[derive(Clone)]
pub struct SharedOnEnd(Rc<EndFn>);

/// The closure a [`SharedOnEnd`] points to.
type EndFn = Box<dyn Fn(&RelayEnd)>;

impl SharedOnEnd {
    /// Wraps `f` once; each relay gets a clone of the pointer.
    pub fn new(f: impl Fn(&RelayEnd) + 'static) -> Self {
        SharedOnEnd(Rc::new(Box::new(f)))
    }
}

/// How a relay behaves once joined.
#[derive(Default)]
pub struct RelayOptions {
    /// The relay closes after this long with no progress on either side (bytes read or
    /// written by either, or leaving either's kernel socket buffer: a slow reader taking
    /// what was queued); `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Hears what the relay carried when both sides have closed (for the one log line).
    pub on_end: Option<OnEnd>,
    /// Runs once the two sides are joined, not for a join that cannot be made because a side
    /// is already gone (then only `on_end` runs, with `joined` false). A `Handle::join` is
    /// carried out after the call and has no `relay_connected`: what counts its relays
    /// counts here, not when it asks.
    pub on_join: Option<Box<dyn FnOnce()>>,
}

/// A relay to open: where to connect, with what timeout, and how it behaves once joined.
pub struct RelayRequest {
    /// Where to connect.
    pub dest: Destination,
    /// Resolving and connecting together must finish within this.
    pub connect_timeout: Duration,
    /// Sent to the destination before anything else: what the protocol read past its request
    /// (a SOCKS client that sent data right behind its CONNECT).
    pub forward: Vec<u8>,
    /// TLS to the destination (an `ssl:` client endpoint): the relay carries plaintext
    /// between the client and the TLS session.
    pub tls: Option<crate::tls::ClientTls>,
    /// How the relay behaves once joined.
    pub options: RelayOptions,
}

impl RelayRequest {
    /// A relay to `dest` with the default connect timeout, no idle timeout, nothing to
    /// forward and no `on_end`.
    pub fn new(dest: Destination) -> Self {
        RelayRequest {
            dest,
            connect_timeout: CONNECT_TIMEOUT,
            forward: Vec::new(),
            tls: None,
            options: RelayOptions::default(),
        }
    }

    /// Sets [`RelayRequest::connect_timeout`].
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Sets [`RelayOptions::idle_timeout`].
    pub fn idle_timeout(mut self, d: Option<Duration>) -> Self {
        self.options.idle_timeout = d;
        self
    }

    /// Sets [`RelayRequest::tls`].
    pub fn tls(mut self, tls: Option<crate::tls::ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Sets [`RelayRequest::forward`].
    pub fn forward(mut self, data: Vec<u8>) -> Self {
        self.forward = data;
        self
    }

    /// Sets [`RelayOptions::on_end`]: `f` hears the relay's totals once both sides closed.
    pub fn on_end(mut self, f: impl FnOnce(&RelayEnd) + 'static) -> Self {
        self.options.on_end = Some(OnEnd::Once(Box::new(f)));
        self
    }

    /// `on_end` with a closure shared by many relays (no allocation per relay).
    pub fn on_end_shared(mut self, f: SharedOnEnd) -> Self {
        self.options.on_end = Some(OnEnd::Shared(f));
        self
    }
}

/// The outgoing connection of a relay that is now joined, for `relay_connected`.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The destination's address.
    pub peer: Address,
    /// The local address the connection was made from (SOCKS5's BND.ADDR and BND.PORT).
    pub host: Address,
}

/// Where a connection stands with respect to relays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Link {
    #[default]
    None,
    /// Its relay's outgoing connection is on its way; reading is paused.
    Pending,
    /// Joined with `peer`; `relay` is the reactor's record of the pair.
    Joined { peer: ConnId, relay: u32 },
    /// It was joined, and its peer has closed: it closes too, its bytes going nowhere.
    Widowed { relay: u32 },
}

impl Link {
    /// The other side, while joined.
    pub(crate) fn peer(self) -> Option<ConnId> {
        match self {
            Link::Joined { peer, .. } => Some(peer),
            _ => None,
        }
    }

    /// The relay's record, joined or widowed.
    pub(crate) fn relay(self) -> Option<u32> {
        match self {
            Link::Joined { relay, .. } | Link::Widowed { relay } => Some(relay),
            _ => None,
        }
    }
}

/// Hands the protocol's request to the reactor (`Transport::connect_relay`).
pub(crate) struct ConnectRelay {
    pub(crate) from: ConnId,
    pub(crate) request: RelayRequest,
}

/// Joins `client` and `dest`: each becomes the other's producer, reading resumes on both
/// (what waited is read at once), and the idle timeout is armed on both.
pub(crate) fn join(
    client: &mut ConnState,
    dest: &mut ConnState,
    relay: u32,
    idle: Option<Duration>,
    handle: &Handle,
) {
    let (cid, did) = (client.id, dest.id);
    for (me, peer) in [(client, did), (dest, cid)] {
        me.set_link(Link::Joined { peer, relay });
        me.producer = Producer::Producing;
        me.set(Flag::ReadPaused, false);
        me.set(Flag::ReadPending, true);
        if idle.is_some() {
            Transport::new(me, handle).set_timeout(idle);
        }
    }
}

/// What the side still open does when its peer has closed for `reason`: a clean close lets
/// its output leave first; anything else (reset, error, timeout, shutdown) aborts it. A peer
/// that reset its connection is passed on as a reset, as dante does: a FIN would tell the
/// other end that the stream ended where it was cut (a reply cut short would look whole to a
/// client that reads to the end). But a peer whose FIN came first had sent all it had: its
/// failure after that (a reset for bytes sent to it after its close: a server that answered
/// an upload early, and closed) cuts nothing of what it sent, which still leaves first, whole.
pub(crate) fn widow(st: &mut ConnState, reason: &Reason) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    if let Some(relay) = st.link().relay() {
        st.set_link(Link::Widowed { relay });
    }
    match reason {
        Reason::Done => {
            st.lose();
            false
        }
        Reason::Io(_) if st.half_closed() => {
            st.lose();
            false
        }
        Reason::Io(e) => {
            if matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe) {
                st.set_reset();
            }
            true
        }
        Reason::Aborted | Reason::Shutdown => true,
    }
}

/// The reactor's record of one relay, from the join until both sides have closed. Small
/// while both are open (an idle relay carries it): what the closes tell is boxed, from the
/// first close on.
pub(crate) struct Record {
    client: ConnId,
    started: Tick,
    /// `OnEnd::nothing()` when there is none, or once it ran (an `Option` would take 8 bytes
    /// more).
    on_end: OnEnd,
    closing: Option<Box<Closing>>,
}

/// What the closes of a relay's sides told so far.
#[derive(Default)]
struct Closing {
    /// Each side's peer address and the bytes that left its socket, once it closed.
    client: Option<(Address, u64)>,
    dest: Option<(Address, u64)>,
    first: Option<(Side, String, bool, Ending)>,
    /// The client's log system.
    system: String,
}

impl Record {
    pub(crate) fn new(client: &ConnState, on_end: Option<OnEnd>, now: Tick) -> Self {
        Record {
            client: client.id,
            started: now,
            on_end: on_end.unwrap_or_else(OnEnd::nothing),
            closing: None,
        }
    }

    /// The client has a new id (its relay became a compact pair).
    pub(crate) fn set_client(&mut self, id: ConnId) {
        self.client = id;
    }

    /// Side `st` closed for `reason`; true once both have (`on_end` has run: drop the record).
    /// `fin_carried`: its peer's FIN had been carried to it (it was half-closed) before it
    /// closed.
    pub(crate) fn closed(
        &mut self,
        st: &ConnState,
        reason: &Reason,
        now: Tick,
        fin_carried: bool,
    ) -> bool {
        let side = if st.id == self.client {
            Side::Client
        } else {
            Side::Dest
        };
        // Both closed cleanly, each with a FIN: the side whose FIN came last closes its
        // connection first (the other waits for that FIN to be carried to it), so the one that
        // closed first, for the end line, is its peer.
        let first = if fin_carried && matches!(reason, Reason::Done) {
            side.other()
        } else {
            side
        };
        let c = self.closing.get_or_insert_with(Default::default);
        let this = Some((st.addrs.peer(), st.out.sent));
        match side {
            Side::Client => {
                c.client = this;
                c.system = st.system();
            }
            Side::Dest => c.dest = this,
        }
        if c.first.is_none() {
            c.first = Some((
                first,
                reason.to_string(),
                reason.is_clean(),
                Ending::of(st, reason),
            ));
        }
        if c.client.is_none() || c.dest.is_none() {
            return false;
        }
        let (Some((client, to_client)), Some((dest, to_dest))) = (c.client.take(), c.dest.take())
        else {
            return false;
        };
        if let Some((ended_by, reason, clean, ending)) = c.first.take() {
            let f = std::mem::replace(&mut self.on_end, OnEnd::nothing());
            f.call(&RelayEnd {
                system: std::mem::take(&mut c.system),
                client,
                dest,
                to_dest,
                to_client,
                duration: now.since(self.started),
                ended_by,
                reason,
                clean,
                joined: true,
                ending,
            });
        }
        true
    }
}

/// One side of a relay as the connection code drives it: the bytes go to the peer, the other
/// callbacks (timers, notifications, the close) to the side's own protocol.
pub(crate) struct Spliced<'a, S: Socket> {
    proto: &'a mut dyn Protocol,
    peer: &'a mut Conn<S>,
    high: usize,
    /// The peer needs a drive: output left queued, a half-close asked for, reading resumed.
    pub(crate) peer_dirty: bool,
}

impl<'a, S: Socket> Spliced<'a, S> {
    pub(crate) fn new(proto: &'a mut dyn Protocol, peer: &'a mut Conn<S>, high: usize) -> Self {
        Spliced {
            proto,
            peer,
            high,
            peer_dirty: false,
        }
    }
}

impl<S: Socket> Protocol for Spliced<'_, S> {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        self.proto.connection_made(t);
    }

    /// Straight into the peer's socket, what it does not take into its output; past the
    /// high-water mark this side stops being read until the peer drains.
    fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
        self.peer.write_through(data, t.handle().tick());
        let queued = self.peer.st.buffered();
        if queued > 0 {
            self.peer_dirty = true;
            if queued >= self.high {
                t.pause_producing();
            }
        }
    }

    /// A FIN is carried through as a half-close; the other direction goes on.
    fn read_eof(&mut self, _t: &mut Transport<'_>) {
        if self.peer.st.phase() == Phase::Open {
            self.peer.st.set_phase(Phase::HalfClosing);
            self.peer_dirty = true;
        }
    }

    fn connection_lost(&mut self, t: &mut Transport<'_>, reason: &Reason) {
        self.proto.connection_lost(t, reason);
    }

    fn relay_connected(&mut self, t: &mut Transport<'_>, out: &Outgoing) {
        self.proto.relay_connected(t, out);
    }

    fn relay_connection_failed(&mut self, t: &mut Transport<'_>, error: &ConnectError) {
        self.proto.relay_connection_failed(t, error);
    }

    /// This side's output (the peer's bytes) passed the high-water mark: stop reading the peer.
    fn pause_producing(&mut self) {
        self.peer.st.pause_reading();
    }

    /// This side's output drained below the low-water mark: read the peer again.
    fn resume_producing(&mut self, _t: &mut Transport<'_>) {
        if self.peer.st.resume_reading() {
            self.peer_dirty = true;
        }
    }

    fn timeout_connection(&mut self, t: &mut Transport<'_>) {
        self.proto.timeout_connection(t);
    }

    fn timer_fired(&mut self, t: &mut Transport<'_>, key: u64) {
        self.proto.timer_fired(t, key);
    }

    fn notified(&mut self, t: &mut Transport<'_>, msg: Box<dyn Any>) {
        self.proto.notified(t, msg);
    }

    /// A relay is not asked to close on a graceful stop: it finishes by itself, or the
    /// shutdown deadline closes it.
    fn stop_requested(&mut self, _t: &mut Transport<'_>) {}
}

/// Runs `step` on `side`, joined with `peer`; returns what `side` must do and whether `peer`
/// needs a drive.
pub(crate) fn step_joined<S: Socket>(
    side: &mut Conn<S>,
    proto: &mut dyn Protocol,
    peer: &mut Conn<S>,
    d: &mut Driver<'_>,
    step: impl FnOnce(&mut Conn<S>, &mut dyn Protocol, &mut Driver<'_>) -> After,
) -> (After, bool) {
    let high = d.high;
    // Only when the side's idle check is due (its deadline is now or past): the peer's
    // progress counts for it.
    let now = d.handle.tick();
    d.relay_peer = side
        .st
        .idle_at
        .filter(|at| *at <= now)
        .map(|_| (peer.st.last_activity, peer.socket.queued_out()));
    let mut sp = Spliced::new(proto, peer, high);
    let after = step(side, &mut sp, d);
    d.relay_peer = None;
    (after, sp.peer_dirty)
}

/// The placeholder protocol of a relay's outgoing connection: once joined, its bytes go to
/// the client; it has nothing of its own to do.
pub(crate) struct Outbound;

impl Protocol for Outbound {
    fn data_received(&mut self, _t: &mut Transport<'_>, _data: &[u8]) {}
}

/// What stands in for a protocol that is done once its relay is joined
/// ([`Protocol::done_when_joined`]): the defaults, and `stop_requested` ignored.
pub(crate) struct Joined;

impl Protocol for Joined {
    fn data_received(&mut self, _t: &mut Transport<'_>, _data: &[u8]) {}

    fn stop_requested(&mut self, _t: &mut Transport<'_>) {}
}

#[cfg(test)]
mod tests;
