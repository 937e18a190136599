//! The callbacks a plugin implements: `Protocol`, `Factory`, `ClientFactory`, `DatagramProtocol`.
//!
//! The names and contracts are Twisted's (`twisted.internet.protocol`), in Rust: the transport is
//! passed into each callback rather than stored, so there is no shared mutable state.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Instant;

use crate::address::Address;
use crate::client::ConnectError;
use crate::error::Reason;
use crate::reactor::Handle;
use crate::relay::Outgoing;
use crate::transport::{ConnId, DatagramTransport, Transport};

/// How long a connection must be idle before the default `stop_requested` closes it.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// How long before a hand-over drain's deadline the connections that served on through it
/// are asked to stop ([`Protocol::serves_through_handover`]): time for a message in flight to
/// finish before the deadline cuts it. Half the drain when the drain is shorter than twice
/// this.
pub const HANDOVER_MARGIN: std::time::Duration = std::time::Duration::from_secs(3);

/// One connection's protocol, built by a [`Factory`] per accepted connection.
pub trait Protocol {
    /// The connection is up; the transport can be written to.
    fn connection_made(&mut self, _t: &mut Transport<'_>) {}

    /// Bytes arrived. They may be any part of what the peer sent: one byte, or many messages.
    fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]);

    /// The peer shut down its sending side. The default closes once our output is flushed.
    fn read_eof(&mut self, t: &mut Transport<'_>) {
        t.lose_connection();
    }

    /// The connection is gone; no more callbacks follow. The transport is closed (writes are
    /// dropped) but still answers questions such as `bytes_sent`.
    fn connection_lost(&mut self, _t: &mut Transport<'_>, _reason: &Reason) {}

    /// (Producers) the output passed the high-water mark: stop producing.
    fn pause_producing(&mut self) {}

    /// (Producers) the output drained below the low-water mark: produce more.
    fn resume_producing(&mut self, _t: &mut Transport<'_>) {}

    /// The idle timeout set with `Transport::set_timeout` expired. The default aborts.
    fn timeout_connection(&mut self, t: &mut Transport<'_>) {
        t.abort_connection();
    }

    /// A timer from `Transport::call_later` fired.
    fn timer_fired(&mut self, _t: &mut Transport<'_>, _key: u64) {}

    /// A message sent with `Handle::notify` arrived (e.g. a worker thread's result).
    fn notified(&mut self, _t: &mut Transport<'_>, _msg: Box<dyn Any>) {}

    /// The relay asked for with `Transport::connect_relay` is joined with `out`: from now on
    /// the bytes flow between the two connections without this protocol. What it writes here
    /// (a SOCKS reply) reaches the client before anything from the destination.
    fn relay_connected(&mut self, _t: &mut Transport<'_>, _out: &Outgoing) {}

    /// The relay's outgoing connection could not be made (the name did not resolve, refused,
    /// unreachable, timed out). Reading stays paused. The default closes the connection.
    fn relay_connection_failed(&mut self, t: &mut Transport<'_>, _error: &ConnectError) {
        t.lose_connection();
    }

    /// The server is shutting down gracefully (a stop, or the old process of a restart):
    /// finish what is in flight, then close. The default closes the connection once it has
    /// been idle for [`STOP_GRACE`], so a request already on its way is still answered;
    /// protocols with message boundaries close between messages instead.
    fn stop_requested(&mut self, t: &mut Transport<'_>) {
        t.set_timeout(Some(STOP_GRACE));
    }

    /// True to serve on as usual when the server drains because it handed its work over to
    /// a successor (`twistrs restart`, or a `--workers` master's workers replaced by the new
    /// master's), not because it stops: the successor accepts the new connections already.
    /// The reactor then calls `stop_requested` later, [`HANDOVER_MARGIN`] before the drain's
    /// deadline (or at once if the service is stopped meanwhile), for a session still open
    /// then. For protocols whose clients keep one session for many exchanges (an MTA
    /// delivering a batch), so that a restart does not end them mid-way, as `postfix
    /// reload` does not. The default, false: `stop_requested` at once, as at a stop.
    fn serves_through_handover(&self) -> bool {
        false
    }

    /// True if, once its relay is joined, the protocol has nothing left to do: it keeps the
    /// defaults of `connection_lost`, `timeout_connection`, `timer_fired` and `notified`, and
    /// ignores `stop_requested`. The reactor then drops it after `relay_connected`, so an idle
    /// relay does not keep it (a port forwarder's, issue 11). A joined relay of two plain
    /// sockets then becomes a compact pair with ids of its own: a `Handle` command (notify,
    /// pause, lose) aimed at either side's old `ConnId` finds nothing and is dropped, so a
    /// protocol that still needs to be reached after the join must return false. It should
    /// also not call `lose_connection` in `relay_connected`: the destination it leaves gets
    /// no idle timeout.
    fn done_when_joined(&self) -> bool {
        false
    }
}

/// Builds protocols for a listening port; every listener of one service shares one factory.
pub trait Factory {
    /// The name in log lines: `Echo starting on 7`, `[Echo,3,127.0.0.1]`.
    fn name(&self) -> &'static str;

    /// A protocol for a new connection from `peer`, or `None` to refuse it.
    fn build_protocol(&mut self, peer: &Address) -> Option<Box<dyn Protocol>>;

    /// The first listener started (Twisted's `startFactory`).
    fn start_factory(&mut self, _handle: &Handle) {}

    /// The last listener stopped (Twisted's `stopFactory`).
    fn stop_factory(&mut self) {}

    /// At most this many connections at once; accepting pauses at the limit (unless
    /// [`Factory::make_room`] gives one up).
    fn max_connections(&self) -> Option<usize> {
        None
    }

    /// At the connection limit, before accepting pauses: a connection of this factory's to
    /// close so that the next client gets in, as nginx closes idle keep-alive connections
    /// when it runs out. For a service that must answer newcomers promptly even while other
    /// clients hold every slot doing nothing (one still waiting for a request, say); which
    /// connection is the factory's choice, never one busy with a request. The reactor aborts
    /// it (its protocol hears `connection_lost` with `Reason::Aborted`) once its accept has
    /// the client, counts it in the listener's `limit_closes`, and asks again at the limit;
    /// if another `--workers` worker took the client, it is left open (so a factory may be
    /// asked for room that is not taken). One that still holds bytes to send (in its buffer,
    /// its TLS records or the kernel) or input unread is left open (closing it would lose
    /// them), and the factory is asked again, a few times, then shortly after. The default
    /// gives none up: accepting pauses and the clients wait in the kernel's backlog. Before
    /// asking, the reactor closes by itself a connection of a TLS listener whose handshake
    /// has gone on for over a second (it has given the protocol nothing), so a factory need
    /// not name those.
    fn make_room(&mut self) -> Room {
        Room::Full
    }

    /// A connection [`Factory::make_room`] named was closed for a newcomer: the place to log
    /// it. Not said in `make_room` itself, which is asked for a client that another
    /// `--workers` worker may take (then nothing is closed here).
    fn room_made(&mut self) {}

    /// The protocols offered in TLS's ALPN on TLS endpoints (`http/1.1`), in order.
    fn alpn_protocols(&self) -> &[&'static [u8]] {
        &[]
    }
}

/// What a factory at its connection limit gives up for a newcomer ([`Factory::make_room`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Room {
    /// Nothing: accepting pauses until one of the factory's connections closes.
    Full,
    /// This connection (the factory's own; any other id is ignored, as `Full`): closed at
    /// once, and the next client accepted.
    Close(ConnId),
    /// Nothing yet, but a connection may be given up at this time: accepting pauses until
    /// then (or until a connection closes) and asks again.
    After(Instant),
}

/// Builds the protocol of an outgoing connection, or hears that it failed.
pub trait ClientFactory {
    /// The name in log lines.
    fn name(&self) -> &'static str;

    /// The connection to `peer` is up.
    fn build_protocol(&mut self, peer: &Address) -> Box<dyn Protocol>;

    /// The connection could not be made (refused, unreachable, timed out).
    fn client_connection_failed(&mut self, _reason: &Reason) {}
}

/// A UDP protocol (Twisted's `DatagramProtocol`).
pub trait DatagramProtocol {
    /// The name in log lines.
    fn name(&self) -> &'static str;

    /// The port is listening.
    fn start_protocol(&mut self, _handle: &Handle) {}

    /// One datagram arrived from `from`.
    fn datagram_received(&mut self, t: &mut DatagramTransport<'_>, data: &[u8], from: SocketAddr);

    /// (Client ports, `Handle::open_udp`) the socket is bound: a first datagram can go out.
    fn port_opened(&mut self, _t: &mut DatagramTransport<'_>) {}

    /// (Client ports) the socket could not be made; no other callback follows.
    fn open_failed(&mut self, _error: &std::io::Error) {}

    /// A datagram sent with `Handle::send_datagram` could not leave: no route to `to`, an
    /// address the host cannot reach from this port (IPv6 switched off). A resolver moves on
    /// to its next server at once rather than waiting out a try that never went. A full
    /// socket buffer is not reported: that datagram is lost, as the network loses one.
    fn send_failed(&mut self, _to: SocketAddr, _error: &std::io::Error) {}

    /// The port stopped.
    fn stop_protocol(&mut self) {}
}

/// A factory that builds each protocol with a closure (Twisted's `Factory.forProtocol`).
pub struct ProtocolFactory<F: FnMut() -> Box<dyn Protocol>> {
    name: &'static str,
    build: F,
    max: Option<usize>,
}

impl<F: FnMut() -> Box<dyn Protocol>> ProtocolFactory<F> {
    /// A factory named `name` (the log name) building protocols with `build`.
    pub fn for_protocol(name: &'static str, build: F) -> Self {
        ProtocolFactory {
            name,
            build,
            max: None,
        }
    }

    /// Limits concurrent connections.
    pub fn max_connections(mut self, max: Option<usize>) -> Self {
        self.max = max;
        self
    }
}

impl<F: FnMut() -> Box<dyn Protocol>> Factory for ProtocolFactory<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        Some((self.build)())
    }

    fn max_connections(&self) -> Option<usize> {
        self.max
    }
}
