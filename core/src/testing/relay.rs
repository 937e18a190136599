//! [`RelayHarness`]: a protocol that asks for a relay, its client and its destination, all
//! on string transports and a manual clock, driven by the same code as in the reactor.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use super::MemorySocket;
use crate::address::Address;
use crate::client::{ConnectError, Destination, Host};
use crate::connection::{After, Conn, Driver};
use crate::error::Reason;
use crate::protocol::Protocol;
use crate::reactor::{Command, Handle, ReactorConfig};
use crate::relay::{self, Link, OnEnd, Outbound, Outgoing, Record, RelayEnd, RelayRequest, Side};
use crate::timer::{Clock, Target};
use crate::transport::{ConnId, ConnState, Flag, Phase};

/// One connection whose protocol may ask for a relay, on a string transport (as
/// [`super::Harness`]); once the test answers the request with [`RelayHarness::connected`],
/// a second string transport plays the destination and the two are driven as the reactor
/// drives a relay: bytes, backpressure, half-closes, closes and `on_end`.
///
/// Each peer reads nothing until the test takes its output (`take_output`,
/// `dest_take_output`), so output piles up and reading stops as against a peer that does not
/// read.
pub struct RelayHarness<P: Protocol + 'static> {
    /// The client side's protocol, open for inspection.
    pub proto: P,
    client: Conn<MemorySocket>,
    dest: Option<Conn<MemorySocket>>,
    outbound: Outbound,
    record: Option<Record>,
    request: Option<RelayRequest>,
    handle: Handle,
    buf: Vec<u8>,
    lost: Option<Reason>,
    dest_lost: Option<Reason>,
    ended: Rc<RefCell<Option<RelayEnd>>>,
}

/// What a relay step left to do.
struct Work(VecDeque<Side>);

const CLIENT_ID: ConnId = ConnId { key: 0, serial: 1 };
const DEST_ID: ConnId = ConnId { key: 1, serial: 2 };

impl<P: Protocol + 'static> RelayHarness<P> {
    /// A harness whose client is 127.0.0.1:54321 and host 127.0.0.1:1080.
    pub fn new(proto: P) -> Self {
        let clock = Clock::new();
        let handle = Handle::detached(clock.clone());
        let peer = Address::Tcp(SocketAddr::from(([127, 0, 0, 1], 54321)));
        let host = Address::Tcp(SocketAddr::from(([127, 0, 0, 1], 1080)));
        let st = ConnState::new(CLIENT_ID, peer, host, "Test", 0, clock.tick());
        RelayHarness {
            proto,
            client: Conn::new(MemorySocket::default(), st),
            dest: None,
            outbound: Outbound,
            record: None,
            request: None,
            handle,
            buf: vec![0; ReactorConfig::default().read_buffer],
            lost: None,
            dest_lost: None,
            ended: Rc::new(RefCell::new(None)),
        }
    }

    /// The connection of `side`; the destination's only once connected.
    fn conn_of(&mut self, side: Side) -> Option<&mut Conn<MemorySocket>> {
        match side {
            Side::Client => Some(&mut self.client),
            Side::Dest => self.dest.as_mut(),
        }
    }

    fn lost_of(&self, side: Side) -> bool {
        match side {
            Side::Client => self.lost.is_some(),
            Side::Dest => self.dest_lost.is_some() || self.dest.is_none(),
        }
    }

    /// Runs `step` on `side`, with its peer when joined, then what follows (re-drives, the
    /// peer's drive, closes), as the reactor's turn would. Bounded.
    fn run(
        &mut self,
        side: Side,
        step: impl FnOnce(&mut Conn<MemorySocket>, &mut dyn Protocol, &mut Driver<'_>) -> After,
    ) {
        let mut work = Work(VecDeque::new());
        self.step_side(side, step, &mut work);
        for _ in 0..10_000 {
            let Some(s) = work.0.pop_front() else {
                return;
            };
            self.step_side(s, |c, p, d| c.drive(p, d, false, false), &mut work);
        }
        panic!("still re-driven after 10,000 drives: the relay spins");
    }

    fn step_side(
        &mut self,
        side: Side,
        step: impl FnOnce(&mut Conn<MemorySocket>, &mut dyn Protocol, &mut Driver<'_>) -> After,
        work: &mut Work,
    ) {
        if self.lost_of(side) {
            return;
        }
        let peer_open = !self.lost_of(other(side));
        let cfg = ReactorConfig::default();
        let mut d = Driver::new(&self.handle, &mut self.buf, &cfg);
        let (me, proto, peer): (_, &mut dyn Protocol, _) = match (side, self.dest.as_mut()) {
            (Side::Client, dest) => (&mut self.client, &mut self.proto, dest),
            (Side::Dest, Some(dest)) => (dest, &mut self.outbound, Some(&mut self.client)),
            (Side::Dest, None) => return,
        };
        let joined = me.st.link().peer().is_some() && peer_open;
        let (after, dirty) = match peer {
            Some(peer) if joined => relay::step_joined(me, proto, peer, &mut d, step),
            _ => (step(me, proto, &mut d), false),
        };
        if dirty {
            work.0.push_back(other(side));
        }
        match after {
            After::Settled => {}
            After::Again => work.0.push_back(side),
            After::Close(r) => self.close(side, r, work),
        }
    }

    /// Side `side` closes for `r`: its protocol hears, the relay's record learns it, and
    /// the other side follows as in the reactor.
    fn close(&mut self, side: Side, r: Reason, work: &mut Work) {
        let cfg = ReactorConfig::default();
        let mut d = Driver::new(&self.handle, &mut self.buf, &cfg);
        let (me, proto): (_, &mut dyn Protocol) = match side {
            Side::Client => (&mut self.client, &mut self.proto),
            Side::Dest => match self.dest.as_mut() {
                Some(dest) => (dest, &mut self.outbound),
                None => return,
            },
        };
        let fin_carried = me.st.half_closed();
        me.lost(proto, &mut d, &r);
        let link = me.st.link();
        if link.relay().is_some()
            && let Some(rec) = &mut self.record
            && rec.closed(&me.st, &r, self.handle.tick(), fin_carried)
        {
            self.record = None;
        }
        match side {
            Side::Client => self.lost = Some(r),
            Side::Dest => self.dest_lost = Some(r),
        }
        let r = match side {
            Side::Client => self.lost.as_ref(),
            Side::Dest => self.dest_lost.as_ref(),
        };
        if link.peer().is_none() || self.lost_of(other(side)) {
            return;
        }
        let peer = match other(side) {
            Side::Client => &mut self.client,
            Side::Dest => match self.dest.as_mut() {
                Some(d) => d,
                None => return,
            },
        };
        if r.is_some_and(|r| relay::widow(&mut peer.st, r)) {
            self.close(other(side), Reason::Aborted, work);
        } else {
            work.0.push_back(other(side));
        }
    }

    /// `connection_made`.
    pub fn connect(&mut self) -> &mut Self {
        self.run(Side::Client, |c, p, d| {
            c.callback(p, d, |p, t| p.connection_made(t))
        });
        self
    }

    /// The client sends `data` in one piece.
    pub fn feed(&mut self, data: &[u8]) -> &mut Self {
        self.client.socket.input.extend(data);
        self.run(Side::Client, |c, p, d| c.drive(p, d, true, false));
        self
    }

    /// The client sends `data` in `chunk`-byte pieces.
    pub fn feed_chunked(&mut self, data: &[u8], chunk: usize) -> &mut Self {
        for piece in data.chunks(chunk.max(1)) {
            self.feed(piece);
        }
        self
    }

    /// The client half-closes.
    pub fn eof(&mut self) -> &mut Self {
        self.client.socket.input_eof = true;
        self.run(Side::Client, |c, p, d| c.drive(p, d, true, false));
        self
    }

    /// The client's connection is reset: its next read fails.
    pub fn reset(&mut self) -> &mut Self {
        self.client.socket.error = Some(io::ErrorKind::ConnectionReset);
        self.run(Side::Client, |c, p, d| c.drive(p, d, true, false));
        self
    }

    /// The relay the protocol asked for with `connect_relay`, if it did (other commands it
    /// queued are dropped).
    pub fn relay_request(&mut self) -> Option<&RelayRequest> {
        while let Some(cmd) = self.handle.pop_command() {
            if let Command::ConnectRelay(r) = cmd {
                self.request = Some(r.request);
            }
        }
        self.request.as_ref()
    }

    /// The outgoing connection is up: joins it with the client as the reactor does (what the
    /// request forwards goes first) and tells the protocol `relay_connected`. The destination
    /// is the request's address (127.0.0.1 for a name), connected from 127.0.0.1:40000.
    pub fn connected(&mut self) -> &mut Self {
        self.relay_request();
        let Some(mut req) = self.request.take() else {
            panic!("the protocol asked for no relay");
        };
        if self.client.st.link() != Link::Pending || self.lost.is_some() {
            return self;
        }
        let peer = match &req.dest {
            Destination::Tcp {
                host: Host::Ip(ip),
                port,
            } => Address::Tcp(SocketAddr::new(*ip, *port)),
            Destination::Tcp { port, .. } => {
                Address::Tcp(SocketAddr::from(([127, 0, 0, 1], *port)))
            }
            Destination::Unix(p) => Address::Unix(Some(p.clone())),
        };
        // The local address has the peer's family, as a real connection's has.
        let host = match &peer {
            Address::Tcp(SocketAddr::V6(_)) => {
                Address::Tcp(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 40000)))
            }
            _ => Address::Tcp(SocketAddr::from(([127, 0, 0, 1], 40000))),
        };
        let now = self.handle.tick();
        let mut st = ConnState::new(DEST_ID, peer.clone(), host.clone(), "Test", 0, now);
        st.set(Flag::ReadPaused, true);
        let mut dest = Conn::new(MemorySocket::default(), st);
        let ended = self.ended.clone();
        let on_end = req.options.on_end.take();
        let record = Record::new(
            &self.client.st,
            Some(OnEnd::Once(Box::new(move |e: &RelayEnd| {
                *ended.borrow_mut() = Some(e.clone());
                if let Some(f) = on_end {
                    f.call(e);
                }
            }))),
            now,
        );
        relay::join(
            &mut self.client.st,
            &mut dest.st,
            0,
            req.options.idle_timeout,
            &self.handle,
        );
        dest.st.write(&req.forward);
        self.dest = Some(dest);
        self.record = Some(record);
        let out = Outgoing { peer, host };
        self.run(Side::Client, |c, p, d| {
            c.callback(p, d, |p, t| p.relay_connected(t, &out))
        });
        self.run(Side::Dest, |c, p, d| c.drive(p, d, false, false));
        self
    }

    /// The outgoing connection could not be made: the protocol hears
    /// `relay_connection_failed`.
    pub fn connect_failed(&mut self, error: ConnectError) -> &mut Self {
        self.relay_request();
        self.request = None;
        if self.client.st.link() == Link::Pending {
            self.client.st.set_link(Link::None);
        }
        self.run(Side::Client, |c, p, d| {
            c.callback(p, d, |p, t| p.relay_connection_failed(t, &error))
        });
        self
    }

    /// The destination sends `data`.
    pub fn dest_feed(&mut self, data: &[u8]) -> &mut Self {
        if let Some(d) = self.dest.as_mut() {
            d.socket.input.extend(data);
        }
        self.run(Side::Dest, |c, p, d| c.drive(p, d, true, false));
        self
    }

    /// The destination half-closes.
    pub fn dest_eof(&mut self) -> &mut Self {
        if let Some(d) = self.dest.as_mut() {
            d.socket.input_eof = true;
        }
        self.run(Side::Dest, |c, p, d| c.drive(p, d, true, false));
        self
    }

    /// The destination's connection is reset.
    pub fn dest_reset(&mut self) -> &mut Self {
        if let Some(d) = self.dest.as_mut() {
            d.socket.error = Some(io::ErrorKind::ConnectionReset);
        }
        self.run(Side::Dest, |c, p, d| c.drive(p, d, true, false));
        self
    }

    /// Takes everything sent to `side` so far, as a peer reading all of it would, until
    /// nothing more comes (what the other side then reads and passes on included).
    fn take(&mut self, side: Side) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..100_000 {
            let Some(conn) = self.conn_of(side) else {
                return out;
            };
            conn.socket.room = conn.st.buffered();
            let before = out.len();
            self.run(side, |c, p, d| c.drive(p, d, false, true));
            let Some(conn) = self.conn_of(side) else {
                return out;
            };
            out.append(&mut conn.socket.received);
            conn.socket.room = 0;
            if out.len() == before && conn.st.buffered() == 0 {
                break;
            }
        }
        self.finish_linger(side);
        out
    }

    /// A lingering side's peer, having read everything, closes too.
    fn finish_linger(&mut self, side: Side) {
        let Some(conn) = self.conn_of(side) else {
            return;
        };
        if conn.st.phase() == Phase::Lingering {
            conn.socket.input_eof = true;
            self.run(side, |c, p, d| c.drive(p, d, true, false));
        }
    }

    /// What the client received and had not taken yet.
    pub fn take_output(&mut self) -> Vec<u8> {
        self.take(Side::Client)
    }

    /// What the destination received and had not taken yet.
    pub fn dest_take_output(&mut self) -> Vec<u8> {
        self.take(Side::Dest)
    }

    /// Says that the kernel holds `bytes` still to send to `side`'s peer (what a slow reader
    /// has not taken yet), as the idle check sees it.
    #[cfg(test)]
    pub(crate) fn set_kernel_queue(&mut self, side: Side, bytes: u32) -> &mut Self {
        if let Some(c) = self.conn_of(side) {
            c.socket.kernel = bytes;
        }
        self
    }

    /// Whether `side` is being read.
    #[cfg(test)]
    pub(crate) fn read_paused(&mut self, side: Side) -> bool {
        self.conn_of(side)
            .is_some_and(|c| c.st.is(Flag::ReadPaused))
    }

    /// Moves the clock and fires what came due: protocol timers and idle timeouts.
    pub fn advance(&mut self, by: Duration) -> &mut Self {
        self.handle.clock().advance(by);
        let now = self.handle.now();
        let timers = self.handle.timers().clone();
        while let Some(t) = timers.pop_due(now) {
            match t {
                Target::Call(f) => f(),
                Target::Conn(id, key) => {
                    let side = if id == CLIENT_ID {
                        Side::Client
                    } else {
                        Side::Dest
                    };
                    self.run(side, |c, p, d| c.timer(p, d, key));
                }
            }
        }
        self
    }

    /// The server is stopping gracefully: both sides hear it, as in the reactor's drain.
    pub fn stop_requested(&mut self) -> &mut Self {
        self.run(Side::Client, |c, p, d| c.stop_requested(p, d));
        self.run(Side::Dest, |c, p, d| c.stop_requested(p, d));
        self
    }

    /// Why the client's connection was lost, once it was.
    pub fn lost(&self) -> Option<&Reason> {
        self.lost.as_ref()
    }

    /// Why the destination's connection was lost, once it was.
    pub fn dest_lost(&self) -> Option<&Reason> {
        self.dest_lost.as_ref()
    }

    /// What the relay carried, once both sides closed.
    pub fn ended(&self) -> Option<RelayEnd> {
        self.ended.borrow().clone()
    }

    /// The client is not being read.
    pub fn reading_paused(&self) -> bool {
        self.client.st.is(Flag::ReadPaused)
    }

    /// The destination is not being read.
    pub fn dest_reading_paused(&self) -> bool {
        self.dest
            .as_ref()
            .is_some_and(|d| d.st.is(Flag::ReadPaused))
    }

    /// Bytes queued for the client, unsent.
    pub fn buffered(&self) -> usize {
        self.client.st.buffered()
    }

    /// Bytes queued for the destination, unsent.
    pub fn dest_buffered(&self) -> usize {
        self.dest.as_ref().map_or(0, |d| d.st.buffered())
    }

    /// Bytes the client sent that have not been read yet.
    pub fn unread(&self) -> usize {
        self.client.socket.input.len()
    }

    /// Bytes the destination sent that have not been read yet.
    pub fn dest_unread(&self) -> usize {
        self.dest.as_ref().map_or(0, |d| d.socket.input.len())
    }

    /// The client has received our FIN: a half-close, or the close.
    pub fn write_closed(&self) -> bool {
        self.client.socket.write_shut || self.lost.is_some()
    }

    /// The destination has received our FIN: a half-close, or the close.
    pub fn dest_write_closed(&self) -> bool {
        self.dest.as_ref().is_some_and(|d| d.socket.write_shut) || self.dest_lost.is_some()
    }

    /// The reactor handle of the harness.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Client => Side::Dest,
        Side::Dest => Side::Client,
    }
}
