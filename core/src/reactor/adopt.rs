//! Sockets a service opened itself: datagram ports served by a protocol (Twisted's
//! `adoptDatagramPort`), and watched ports, which the reactor never reads or accepts on: it
//! only says when one is readable, so a child process can take the socket (inetd's `wait`
//! services), and watches again when asked.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use mio::unix::SourceFd;
use mio::{Interest, Token};

use super::listen::{ListenError, ListenerId};
use super::{Entry, Reactor};
use crate::address::Address;
use crate::endpoint::Endpoint;
use crate::protocol::DatagramProtocol;

/// Names a watched port ([`Reactor::adopt_watched_port`]) for
/// [`Handle::watch_again`](super::Handle::watch_again); it goes stale when the port closes,
/// and a stale id is ignored even if the slot is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchId {
    pub(crate) key: usize,
    pub(crate) serial: u32,
}

impl WatchId {
    /// The port, for `stop_listening` and `listener_address`.
    pub fn listener(&self) -> ListenerId {
        ListenerId(self.key)
    }
}

/// What a watched port calls when it is readable: its id, and the socket (a child gets a
/// copy of it). Watching stops until [`Handle::watch_again`](super::Handle::watch_again).
pub type OnReadable = Box<dyn FnMut(WatchId, BorrowedFd<'_>)>;

/// A socket the reactor watches for readability on a service's behalf.
pub(crate) struct Watched {
    fd: OwnedFd,
    serial: u32,
    /// In the poll: the next readiness calls `on_ready`.
    armed: bool,
    /// `TCP` or `UDP`, for the closing line.
    kind: &'static str,
    pub(crate) host: Address,
    /// The endpoint string, to match the socket up with a successor's port.
    pub(crate) endpoint: String,
    on_ready: OnReadable,
}

impl Watched {
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn err(ep: &Endpoint, error: io::Error) -> ListenError {
    ListenError {
        what: ep.to_string(),
        error,
    }
}

impl Reactor {
    /// Serves a bound UDP socket the caller opened with `proto` (Twisted's
    /// `adoptDatagramPort`). `ep` (a `udp:` endpoint) names it, as for
    /// [`Reactor::adopt_stream_port`].
    pub fn adopt_datagram_port(
        &mut self,
        fd: OwnedFd,
        ep: &Endpoint,
        proto: Box<dyn DatagramProtocol>,
    ) -> Result<ListenerId, ListenError> {
        if !ep.is_datagram() {
            return Err(err(
                ep,
                io::Error::new(io::ErrorKind::InvalidInput, "not a datagram endpoint"),
            ));
        }
        // `listen_udp` takes a socket handed over under the endpoint's name before it binds:
        // this one goes first in that list.
        self.inherited.insert(0, (ep.to_string(), fd));
        self.listen_udp(ep, proto)
    }

    /// Watches a bound socket the caller opened (a listening TCP socket, or a UDP one) for
    /// readability, without ever reading it: the first readiness calls `on_ready`, then
    /// nothing until [`Handle::watch_again`](super::Handle::watch_again). The socket is put
    /// in blocking mode, for the child that will read it (the flag belongs to the open file,
    /// which a child shares). `ep` names it for the log and a restart's successor, as for
    /// [`Reactor::adopt_stream_port`]; `name` is the log's (`NAME starting on 53`).
    pub fn adopt_watched_port(
        &mut self,
        fd: OwnedFd,
        ep: &Endpoint,
        name: &str,
        on_ready: OnReadable,
    ) -> Result<WatchId, ListenError> {
        let sock = socket2::SockRef::from(&fd);
        sock.set_nonblocking(false).map_err(|e| err(ep, e))?;
        let _ = sock.set_cloexec(true);
        let local = sock
            .local_addr()
            .map_err(|e| err(ep, e))?
            .as_socket()
            .ok_or_else(|| {
                err(
                    ep,
                    io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"),
                )
            })?;
        let (kind, host) = if ep.is_datagram() {
            ("UDP", Address::Udp(local))
        } else {
            ("TCP", Address::Tcp(local))
        };
        let key = self.entries.vacant_key();
        self.poll
            .registry()
            .register(
                &mut SourceFd(&fd.as_raw_fd()),
                Token(key),
                Interest::READABLE,
            )
            .map_err(|e| err(ep, e))?;
        self.serial = self.serial.wrapping_add(1);
        let serial = self.serial;
        log::info!(target: crate::logsys::BARE, "{name} starting on {}", local.port());
        self.entries.insert(Entry::Watched(Watched {
            fd,
            serial,
            armed: true,
            kind,
            host,
            endpoint: ep.to_string(),
            on_ready,
        }));
        Ok(WatchId { key, serial })
    }

    /// A watched socket is readable: out of the poll, and its callback.
    pub(crate) fn watch_ready(&mut self, key: usize) {
        let Some(Entry::Watched(w)) = self.entries.get_mut(key) else {
            return;
        };
        if !w.armed {
            return;
        }
        w.armed = false;
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&w.fd.as_raw_fd()));
        let id = WatchId {
            key,
            serial: w.serial,
        };
        (w.on_ready)(id, w.fd.as_fd());
    }

    /// `Handle::watch_again`: back into the poll. epoll reports a socket that is readable
    /// already (a datagram that came meanwhile) as soon as it is added.
    pub(crate) fn watch_again(&mut self, id: WatchId) {
        let Some(Entry::Watched(w)) = self.entries.get_mut(id.key) else {
            return;
        };
        if w.serial != id.serial || w.armed {
            return;
        }
        match self.poll.registry().register(
            &mut SourceFd(&w.fd.as_raw_fd()),
            Token(id.key),
            Interest::READABLE,
        ) {
            Ok(()) => w.armed = true,
            Err(e) => log::error!(target: "twistrs.reactor",
                "cannot watch port {} again: {e}", w.host),
        }
    }

    /// Closes a watched port (a child holding a copy keeps it). Its slot is freed after the
    /// batch, so a readiness already collected for it reaches nothing.
    pub(crate) fn stop_watched(&mut self, key: usize) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        let Entry::Watched(w) = std::mem::replace(entry, Entry::Closed) else {
            return;
        };
        if w.armed {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&w.fd.as_raw_fd()));
        }
        self.to_free.push(key);
        if let Some(a) = w.host.socket_addr() {
            log::info!(target: crate::logsys::BARE, "({} Port {} Closed)", w.kind, a.port());
        }
    }
}
