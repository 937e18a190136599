//! Ports a protocol opens for itself while it runs, not from the command line: a listening
//! socket that waits for one connection (SOCKS BIND, an FTP data connection) and a UDP port
//! (a SOCKS UDP association). Each belongs to an [`OwnedPort`] and closes when that is
//! dropped, so a port never outlives the connection that asked for it.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use mio::{Interest, Token};

use super::conn::{NetSocket, Stream};
use super::handle::Command;
use super::{Entry, Handle, Reactor};
use crate::address::Address;
use crate::error::Reason;
use crate::protocol::{ClientFactory, DatagramProtocol};
use crate::timer::{DelayedCall, Target};
use crate::transport::{ConnId, ConnState, IDLE_KEY};

/// Where the reactor keeps an owned port: its slot, once registered, until it closes.
#[derive(Default)]
pub(crate) struct Registration {
    key: Cell<Option<usize>>,
}

impl Registration {
    fn is(self: &Rc<Self>, other: &Rc<Registration>) -> bool {
        Rc::ptr_eq(self, other)
    }
}

/// A port opened by [`Handle::accept_one`] or [`Handle::open_owned_udp`]; dropping it closes the
/// port (a wait for a connection ends without a callback).
pub struct OwnedPort {
    reg: Rc<Registration>,
    handle: Handle,
    local: SocketAddr,
    /// A second descriptor of a UDP port, to send from outside its callbacks.
    udp: Option<Rc<std::net::UdpSocket>>,
}

impl OwnedPort {
    /// The address the port is bound to (the real port after port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends a datagram from a UDP port (any time, not only in its callbacks). UDP is lossy:
    /// a full socket buffer drops it, as the network would.
    pub fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        match &self.udp {
            Some(s) => s.send_to(data, to),
            None => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "not a datagram port",
            )),
        }
    }

    /// A UDP port's socket, to send from where the port itself is out of reach (a protocol
    /// sending once a host name resolved); `None` for a listener.
    pub fn sender(&self) -> Option<Rc<std::net::UdpSocket>> {
        self.udp.clone()
    }
}

impl Drop for OwnedPort {
    fn drop(&mut self) {
        self.handle.push(Command::CloseOwned(self.reg.clone()));
    }
}

/// A one-shot listener waiting for its connection.
pub(crate) struct AcceptOne {
    pub(crate) id: ConnId,
    listener: mio::net::TcpListener,
    factory: Box<dyn ClientFactory>,
    timer: DelayedCall,
    reg: Rc<Registration>,
}

impl Handle {
    /// Listens on `addr` for one connection, for at most `timeout`: its protocol comes from
    /// `factory` (`build_protocol` with the peer's address), and a timeout is reported to
    /// `client_connection_failed`. The socket is bound now, so the address (the port chosen
    /// for port 0) is known at once; it closes after the one connection, at the timeout, or
    /// when the returned port is dropped.
    pub fn accept_one(
        &self,
        addr: SocketAddr,
        factory: Box<dyn ClientFactory>,
        timeout: Duration,
    ) -> io::Result<OwnedPort> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let reg = Rc::new(Registration::default());
        self.push(Command::AcceptOne {
            listener,
            factory,
            timeout,
            reg: reg.clone(),
        });
        Ok(OwnedPort {
            reg,
            handle: self.clone(),
            local,
            udp: None,
        })
    }

    /// Opens a UDP port on `addr` served by `proto` until the returned port is dropped.
    pub fn open_owned_udp(
        &self,
        addr: SocketAddr,
        proto: Box<dyn DatagramProtocol>,
    ) -> io::Result<OwnedPort> {
        let sock = std::net::UdpSocket::bind(addr)?;
        sock.set_nonblocking(true)?;
        let local = sock.local_addr()?;
        let sender = sock.try_clone()?;
        let reg = Rc::new(Registration::default());
        self.push(Command::OpenOwnedUdp {
            sock,
            proto,
            reg: reg.clone(),
        });
        Ok(OwnedPort {
            reg,
            handle: self.clone(),
            local,
            udp: Some(Rc::new(sender)),
        })
    }
}

impl Reactor {
    pub(crate) fn start_accept_one(
        &mut self,
        listener: std::net::TcpListener,
        mut factory: Box<dyn ClientFactory>,
        timeout: Duration,
        reg: Rc<Registration>,
    ) {
        let mut listener = mio::net::TcpListener::from_std(listener);
        let key = self.entries.vacant_key();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut listener, Token(key), Interest::READABLE)
        {
            factory.client_connection_failed(&Reason::Io(e));
            return;
        }
        let id = self.next_id(key);
        let timer = self
            .handle
            .timers()
            .schedule(timeout, Target::Conn(id, IDLE_KEY));
        reg.key.set(Some(key));
        self.entries.insert(Entry::AcceptOne(AcceptOne {
            id,
            listener,
            factory,
            timer,
            reg,
        }));
    }

    pub(crate) fn add_owned_udp(
        &mut self,
        sock: std::net::UdpSocket,
        proto: Box<dyn DatagramProtocol>,
        reg: Rc<Registration>,
    ) {
        match self.register_udp(sock, proto, String::new(), Some(reg.clone())) {
            Ok(key) => reg.key.set(Some(key)),
            Err(e) => log::error!(target: "twistrs.udp", "cannot register a UDP port: {e}"),
        }
    }

    /// The one-shot listener is readable: take its connection and close it.
    pub(crate) fn accept_one_ready(&mut self, key: usize) {
        let Some(Entry::AcceptOne(a)) = self.entries.get_mut(key) else {
            return;
        };
        let (stream, peer) = match a.listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => return,
            Err(e) => return self.close_accept_one(key, Some(Reason::Io(e))),
        };
        let Entry::AcceptOne(mut a) = std::mem::replace(&mut self.entries[key], Entry::Closed)
        else {
            return;
        };
        a.timer.cancel();
        a.reg.key.set(None);
        let _ = self.poll.registry().deregister(&mut a.listener);
        drop(a.listener);
        let _ = stream.set_nodelay(true);
        let host = stream.local_addr().map_or(Address::Tcp(peer), Address::Tcp);
        let proto = a.factory.build_protocol(&Address::Tcp(peer));
        let id = self.next_id(key);
        let st = ConnState::new(
            id,
            Address::Tcp(peer),
            host,
            a.factory.name(),
            0,
            self.handle.tick(),
        );
        if let Err(e) =
            self.add_connection(key, NetSocket::Plain(Stream::Tcp(stream)), proto, st, None)
        {
            log::error!(target: "twistrs.reactor", "cannot register connection: {e}");
            self.to_free.push(key);
        }
    }

    /// Closes a one-shot listener; `why` goes to its factory (a timeout, an error), none when
    /// its owner closed it.
    pub(crate) fn close_accept_one(&mut self, key: usize, why: Option<Reason>) {
        if !matches!(self.entries.get(key), Some(Entry::AcceptOne(_))) {
            return;
        }
        let Entry::AcceptOne(mut a) = std::mem::replace(&mut self.entries[key], Entry::Closed)
        else {
            return;
        };
        a.timer.cancel();
        a.reg.key.set(None);
        let _ = self.poll.registry().deregister(&mut a.listener);
        // Closed before the factory hears, so whatever it does next finds the port shut.
        drop(a.listener);
        if let Some(why) = why {
            a.factory.client_connection_failed(&why);
        }
        self.to_free.push(key);
    }

    pub(crate) fn accept_one_timed_out(&mut self, key: usize) {
        let e = io::Error::new(io::ErrorKind::TimedOut, "no connection came in time");
        self.close_accept_one(key, Some(Reason::Io(e)));
    }

    /// The owner of a port dropped it.
    pub(crate) fn close_owned(&mut self, reg: &Rc<Registration>) {
        let Some(key) = reg.key.take() else {
            return;
        };
        match self.entries.get(key) {
            Some(Entry::AcceptOne(a)) if a.reg.is(reg) => self.close_accept_one(key, None),
            Some(Entry::Udp(u)) if u.owner.as_ref().is_some_and(|o| o.is(reg)) => {
                // Freed at the end of the batch, as a closed connection is: no token is
                // reused while readiness for this one may still be queued.
                if let Entry::Udp(mut u) = std::mem::replace(&mut self.entries[key], Entry::Closed)
                {
                    u.close(&self.poll);
                    self.to_free.push(key);
                }
            }
            _ => {}
        }
    }
}
