//! Compact relays (issue 11): once joined, a relay of two plain sockets whose protocols are
//! done ([`crate::Protocol::done_when_joined`]) leaves the two connection slots for one entry
//! of its own: both sockets, their states packed ([`PairState`]), one idle check and the
//! relay's record, in fewer bytes than one connection slot and a record took before.
//!
//! Its sockets' tokens (and its sides' ids) say which pair and which side. A step unpacks the
//! sides into whole states and runs the same connection code as a joined connection's, so a
//! compact relay does everything a relay does: backpressure, half-close, the close of one side
//! closing (or aborting) the other, the idle timeout, the lingering close. TLS relays, and
//! relays whose protocols still listen, stay two connections.

use std::time::Duration;

use mio::{Interest, Token};

use super::conn::{Connection, NetSocket, Stream};
use super::{Entry, Reactor};
use crate::connection::{After, Conn, Driver};
use crate::error::Reason;
use crate::protocol::Protocol;
use crate::relay::{self, Record};
use crate::transport::{ConnId, Flag, PairState, Phase};

/// The bit that marks a pair side's token (the side is the lowest bit, the pair's key the
/// ones above it).
const PAIR_TOKEN: usize = 1 << 40;
/// The bit that marks a pair side's `ConnId::key`, laid out the same way.
const PAIR_ID: u32 = 1 << 31;
/// `Pair::factory` of a pair whose client belongs to no factory.
const NO_FACTORY: u32 = u32::MAX;

/// The token of `side` (0: the client, 1: the destination) of pair `key`.
fn token(key: usize, side: usize) -> usize {
    PAIR_TOKEN | key << 1 | side
}

/// The pair and side of a token, if it is a pair's.
pub(crate) fn token_side(t: usize) -> Option<(usize, usize)> {
    (t & PAIR_TOKEN != 0 && t >> 41 == 0).then_some(((t & !PAIR_TOKEN) >> 1, t & 1))
}

/// The pair and side of a connection id, if it is a pair side's.
pub(crate) fn id_side(id: ConnId) -> Option<(usize, usize)> {
    (id.key & PAIR_ID != 0).then_some((((id.key & !PAIR_ID) >> 1) as usize, (id.key & 1) as usize))
}

/// A compact relay.
pub(crate) struct Pair {
    /// The client's and the destination's sockets; `None` once that side closed.
    socks: [Option<Stream>; 2],
    st: PairState,
    record: Record,
    /// The factory whose connection count the client holds, and its listener endpoint.
    factory: u32,
    origin: u32,
}

impl Pair {
    fn factory(&self) -> Option<u32> {
        (self.factory != NO_FACTORY).then_some(self.factory)
    }

    /// True if the idle check due `at` for `id` is the live one.
    pub(crate) fn idle_live(&self, id: ConnId, at: crate::timer::Tick) -> bool {
        id_side(id).is_some_and(|(_, side)| self.st.id(side) == id && self.st.idle_live(side, at))
    }

    /// The client's factory, listener endpoint, received and sent bytes, while it is open.
    pub(crate) fn client_counts(&self) -> Option<(u32, u32, u64, u64)> {
        let f = self.factory().filter(|_| self.socks[0].is_some())?;
        Some((f, self.origin, self.st.received(), self.st.sent(0)))
    }

    /// Sides still open.
    pub(crate) fn open_sides(&self) -> usize {
        self.socks.iter().flatten().count()
    }
}

/// `c` can be a side of a compact pair joined with `peer`.
fn fits(c: &Connection, id: ConnId, peer: ConnId) -> bool {
    let st = &c.conn.st;
    st.id == id
        && matches!(c.conn.socket, NetSocket::Plain(_))
        && st.link().peer() == Some(peer)
        && st.phase() != Phase::Closed
        && !st.has_pending_extra()
}

impl Reactor {
    /// Makes the joined `client` and `dest` a compact pair, with idle timeout `idle`, if they
    /// can be one: both plain, neither with anything of its own to come, the destination
    /// belonging to no factory (the caller has checked that the protocols are done). False
    /// if they stay connections.
    pub(crate) fn compact_pair(
        &mut self,
        client: ConnId,
        dest: ConnId,
        idle: Option<Duration>,
    ) -> bool {
        let (kc, kd) = (client.key as usize, dest.key as usize);
        let relay = match self.entries.get2_mut(kc, kd) {
            Some((Entry::Conn(c), Entry::Conn(d)))
                if fits(c, client, dest) && fits(d, dest, client) && d.factory().is_none() =>
            {
                c.conn.st.link().relay()
            }
            _ => return false,
        };
        let Some(mut record) = relay.and_then(|r| self.relays.try_remove(r as usize)) else {
            return false;
        };
        let take = |e: &mut Entry| match std::mem::replace(e, Entry::Closed) {
            Entry::Conn(c) => Some(c),
            other => {
                *e = other;
                None
            }
        };
        let (Some(c), Some(d)) = (take(&mut self.entries[kc]), take(&mut self.entries[kd])) else {
            return false; // Not reached: both were connections just above.
        };
        self.to_free.extend([kc, kd]);
        let (factory, origin) = (c.factory().unwrap_or(NO_FACTORY), c.origin);
        let (NetSocket::Plain(mut sc), NetSocket::Plain(mut sd)) = (c.conn.socket, d.conn.socket)
        else {
            return false; // Not reached: both were plain just above.
        };
        let key = self.pairs.vacant_key();
        let base = PAIR_ID | (key as u32) << 1;
        self.serial = self.serial.wrapping_add(1);
        let mut st = PairState::new(
            c.conn.st,
            d.conn.st,
            base,
            self.serial,
            self.handle.timers(),
        );
        record.set_client(st.id(0));
        st.arm_idle(idle, self.handle.timers());
        let registry = self.poll.registry();
        let rw = Interest::READABLE | Interest::WRITABLE;
        let registered = registry
            .reregister(sc.source(), Token(token(key, 0)), rw)
            .and_then(|()| registry.reregister(sd.source(), Token(token(key, 1)), rw));
        self.pairs.insert(Pair {
            socks: [Some(sc), Some(sd)],
            st,
            record,
            factory,
            origin,
        });
        match registered {
            // What came under the old tokens this turn is read (or sent) now.
            Ok(()) => self.redrive.extend([token(key, 0), token(key, 1)]),
            Err(e) => self.pair_close(key, 0, Reason::Io(e)),
        }
        true
    }

    /// Runs `step` on side `side` of pair `key`, joined with the other side while it is open,
    /// then does what it says.
    fn pair_step(
        &mut self,
        key: usize,
        side: usize,
        step: impl FnOnce(&mut Conn<Stream>, &mut dyn Protocol, &mut Driver<'_>) -> After,
    ) {
        let Some(p) = self.pairs.get_mut(key) else {
            return;
        };
        let Some(sock) = p.socks[side].take() else {
            return;
        };
        let other = 1 - side;
        let peer_sock = p.socks[other].take();
        let mut me = Conn::new(sock, p.st.unpack(side, true, peer_sock.is_some()));
        let mut peer = peer_sock.map(|s| Conn::new(s, p.st.unpack(other, false, true)));
        let mut d = Driver::new(&self.handle, &mut self.read_buf, &self.cfg);
        let mut proto = relay::Joined;
        let (after, peer_dirty) = match peer.as_mut() {
            Some(b) => relay::step_joined(&mut me, &mut proto, b, &mut d, step),
            None => (step(&mut me, &mut proto, &mut d), false),
        };
        p.st.pack(side, me.st, true);
        p.socks[side] = Some(me.socket);
        if let Some(b) = peer {
            p.st.pack(other, b.st, false);
            p.socks[other] = Some(b.socket);
        }
        if peer_dirty {
            self.redrive.push(token(key, other));
        }
        match after {
            After::Settled => {}
            After::Again => self.redrive.push(token(key, side)),
            After::Close(r) => self.pair_close(key, side, r),
        }
    }

    /// Readiness (or a re-drive, with all false) for the pair side of token `t`.
    pub(crate) fn pair_drive(&mut self, t: usize, readable: bool, writable: bool, hup: bool) {
        if let Some((key, side)) = token_side(t) {
            self.pair_step(key, side, |c, p, d| {
                if hup {
                    c.st.set(Flag::PeerClosed, true);
                }
                c.drive(p, d, readable, writable)
            });
        }
    }

    /// Timer `timer` aimed at pair side `id` came due.
    pub(crate) fn pair_timer(&mut self, id: ConnId, timer: u64) {
        let Some((key, side)) = id_side(id) else {
            return;
        };
        if self.pairs.get(key).is_some_and(|p| p.st.id(side) == id) {
            self.pair_step(key, side, |c, p, d| c.timer(p, d, timer));
        }
    }

    /// Closes side `side` of pair `key` for `reason`, as `close` does a connection: the
    /// record learns it (and `on_end` hears the relay's end after the second side), and the
    /// other side closes after its flush, or at once if this one did not close cleanly.
    pub(crate) fn pair_close(&mut self, key: usize, side: usize, reason: Reason) {
        let Some(p) = self.pairs.get_mut(key) else {
            return;
        };
        let Some(mut sock) = p.socks[side].take() else {
            return;
        };
        let _ = self.poll.registry().deregister(sock.source());
        let other = 1 - side;
        let peer_open = p.socks[other].is_some();
        let mut c = Conn::new(sock, p.st.unpack(side, true, peer_open));
        let mut d = Driver::new(&self.handle, &mut self.read_buf, &self.cfg);
        let fin_carried = c.st.half_closed();
        c.lost(&mut relay::Joined, &mut d, &reason);
        let factory = p.factory().filter(|_| side == 0);
        if let Some(f) = factory {
            let counts = &mut self.factories[f as usize].origins[p.origin as usize].counts;
            counts.closed_received += c.st.received;
            counts.closed_sent += c.st.out.sent;
        }
        let ended = p
            .record
            .closed(&c.st, &reason, self.handle.tick(), fin_carried);
        if matches!(reason, Reason::Aborted) && c.st.wants_reset() {
            c.socket.reset_on_close();
        }
        p.st.pack(side, c.st, true);
        // The socket closes here, after the record heard.
        drop(c.socket);
        self.live_conns -= 1;
        if let Some(f) = factory {
            self.connection_slot_freed(f as usize);
        }
        if ended || !peer_open {
            // Freed after the batch, so no token of it is reused within it.
            self.free_pairs.push(key);
            return;
        }
        let Some(p) = self.pairs.get_mut(key) else {
            return;
        };
        let mut st = p.st.unpack(other, false, false);
        let abort = relay::widow(&mut st, &reason);
        p.st.pack(other, st, false);
        if abort {
            self.pair_close(key, other, Reason::Aborted);
        } else {
            // The idle check goes to the side left, if it was this one's.
            p.st.arm_idle(None, self.handle.timers());
            self.redrive.push(token(key, other));
        }
    }

    /// Open sides of compact pairs (each is one of `live_conns`).
    pub(crate) fn pair_sides_open(&self) -> usize {
        self.pairs.iter().map(|(_, p)| p.open_sides()).sum()
    }

    /// Closes every side of every pair (the shutdown deadline passed).
    pub(crate) fn close_pairs(&mut self) {
        let open: Vec<(usize, usize)> = self
            .pairs
            .iter()
            .flat_map(|(k, p)| {
                (0..2)
                    .filter(|s| p.socks[*s].is_some())
                    .map(move |s| (k, s))
            })
            .collect();
        for (k, s) in open {
            self.pair_close(k, s, Reason::Shutdown);
        }
    }

    /// Drops the pairs whose sides have both closed (at the end of a batch).
    pub(crate) fn free_closed_pairs(&mut self) {
        for k in std::mem::take(&mut self.free_pairs) {
            if self.pairs.get(k).is_some_and(|p| p.open_sides() == 0) {
                self.pairs.remove(k);
            }
        }
    }
}
