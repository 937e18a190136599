//! Outgoing connections (Twisted's `connectTCP`, `connectUNIX`): a host name resolved on a
//! worker thread, each address tried in turn within one deadline, then a protocol built by a
//! `ClientFactory`, or the relay a protocol asked for.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::{Interest, Token};

use super::conn::{NetSocket, Stream};
use super::{Command, Entry, Reactor};
use crate::address::Address;
use crate::client::{ConnectError, Destination, Host};
use crate::error::{Failure, Reason};
use crate::protocol::ClientFactory;
use crate::relay::{ConnectRelay, Link};
use crate::timer::{DelayedCall, Target};
use crate::transport::{ConnId, ConnState, Flag, IDLE_KEY};

/// Who gets an outgoing connection once it is up.
pub(crate) enum Client {
    /// `Handle::connect`: a protocol from the factory.
    Factory(Box<dyn ClientFactory>),
    /// `Transport::connect_relay`: joined with the connection that asked.
    Relay(Box<ConnectRelay>),
}

/// One address to dial.
enum Dial {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// An outgoing connection on its way: what is left to try, and until when.
pub(crate) struct Attempt {
    pub(crate) client: Client,
    addrs: VecDeque<Dial>,
    deadline: Instant,
    timeout: Duration,
    last_error: Option<io::Error>,
}

/// A connect(2) in progress.
pub(crate) struct Connecting {
    pub(crate) id: ConnId,
    pub(crate) stream: Stream,
    pub(crate) attempt: Attempt,
    pub(crate) timer: DelayedCall,
}

/// A host name being resolved on a worker thread.
pub(crate) struct Resolving {
    serial: u64,
    attempt: Attempt,
    timer: DelayedCall,
    /// The name, for the error if it does not resolve.
    host: String,
}

fn peer_address(s: &Stream) -> io::Result<Address> {
    match s {
        Stream::Tcp(s) => s.peer_addr().map(Address::Tcp),
        Stream::Unix(s) => s
            .peer_addr()
            .map(|a| Address::Unix(a.as_pathname().map(Into::into))),
    }
}

fn local_address(s: &Stream, peer: &Address) -> Address {
    match s {
        Stream::Tcp(s) => s.local_addr().map_or(peer.clone(), Address::Tcp),
        Stream::Unix(_) => Address::Unix(None),
    }
}

fn take_error(s: &Stream) -> io::Result<Option<io::Error>> {
    match s {
        Stream::Tcp(s) => s.take_error(),
        Stream::Unix(s) => s.take_error(),
    }
}

impl Reactor {
    /// Starts an outgoing connection to `dest` for `client`.
    pub(crate) fn connect(&mut self, dest: Destination, client: Client, timeout: Duration) {
        let mut attempt = Attempt {
            client,
            addrs: VecDeque::new(),
            deadline: crate::timer::later(self.handle.now(), timeout),
            timeout,
            last_error: None,
        };
        match dest {
            Destination::Tcp {
                host: Host::Ip(ip),
                port,
            } => attempt.addrs.push_back(Dial::Tcp((ip, port).into())),
            Destination::Unix(path) => attempt.addrs.push_back(Dial::Unix(path)),
            Destination::Tcp {
                host: Host::Name(name),
                port,
            } => return self.resolve(name, port, attempt),
        }
        self.try_next(attempt);
    }

    /// Resolves `name` on a worker thread (getaddrinfo blocks), bounded by the deadline.
    fn resolve(&mut self, name: String, port: u16, attempt: Attempt) {
        self.resolve_serial += 1;
        let (key, serial) = (self.resolving.vacant_key(), self.resolve_serial);
        let h = self.handle.clone();
        let timer = self.handle.call_later(attempt.timeout, move || {
            h.push(Command::ResolveTimedOut { key, serial })
        });
        let resolver = self.handle.resolver();
        let h = self.handle.clone();
        let host = name.clone();
        self.handle
            .defer_to_thread_abandonable(move || Ok::<_, Failure>(resolver(&name, port)))
            .consume(move |r| {
                let result = r.unwrap_or_else(|f| Err(io::Error::other(f.to_string())));
                h.push(Command::Resolved {
                    key,
                    serial,
                    result,
                });
            });
        self.resolving.insert(Resolving {
            serial,
            attempt,
            timer,
            host,
        });
    }

    /// Takes the resolution `key` if it is still the one numbered `serial`.
    fn take_resolving(&mut self, key: usize, serial: u64) -> Option<Resolving> {
        match self.resolving.get(key) {
            Some(r) if r.serial == serial => Some(self.resolving.remove(key)),
            _ => None,
        }
    }

    pub(crate) fn resolved(
        &mut self,
        key: usize,
        serial: u64,
        result: io::Result<Vec<SocketAddr>>,
    ) {
        let Some(r) = self.take_resolving(key, serial) else {
            return;
        };
        r.timer.cancel();
        let (mut attempt, host) = (r.attempt, r.host);
        match result {
            Ok(addrs) if !addrs.is_empty() => {
                attempt.addrs.extend(addrs.into_iter().map(Dial::Tcp));
                self.try_next(attempt);
            }
            Ok(_) => self.connect_failed(
                attempt,
                ConnectError::NameNotResolved {
                    host,
                    error: io::Error::new(io::ErrorKind::NotFound, "no address"),
                },
            ),
            Err(error) => {
                self.connect_failed(attempt, ConnectError::NameNotResolved { host, error })
            }
        }
    }

    pub(crate) fn resolve_timed_out(&mut self, key: usize, serial: u64) {
        if let Some(r) = self.take_resolving(key, serial) {
            let t = r.attempt.timeout;
            self.connect_failed(r.attempt, ConnectError::TimedOut(t));
        }
    }

    /// Connects to the next address, until one connect(2) is under way or none is left.
    fn try_next(&mut self, mut attempt: Attempt) {
        loop {
            let now = self.handle.now();
            if now >= attempt.deadline {
                let t = attempt.timeout;
                return self.connect_failed(attempt, ConnectError::TimedOut(t));
            }
            let Some(target) = attempt.addrs.pop_front() else {
                let e = attempt
                    .last_error
                    .take()
                    .unwrap_or_else(|| io::Error::other("no address to connect to"));
                return self.connect_failed(attempt, ConnectError::Io(e));
            };
            let started = match target {
                Dial::Tcp(a) => mio::net::TcpStream::connect(a).map(Stream::Tcp),
                Dial::Unix(p) => mio::net::UnixStream::connect(p).map(Stream::Unix),
            };
            let mut stream = match started {
                Ok(s) => s,
                Err(e) => {
                    attempt.last_error = Some(e);
                    continue;
                }
            };
            let key = self.entries.vacant_key();
            if let Err(e) = self.poll.registry().register(
                stream.source(),
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                attempt.last_error = Some(e);
                continue;
            }
            let id = self.next_id(key);
            let timer = self
                .handle
                .timers()
                .schedule(attempt.deadline - now, Target::Conn(id, IDLE_KEY));
            self.entries.insert(Entry::Connecting(Connecting {
                id,
                stream,
                attempt,
                timer,
            }));
            self.live_conns += 1;
            return;
        }
    }

    /// Takes connecting entry `key` out of the slab, still registered in the poll under
    /// `Token(key)` (a connection keeps the registration; its slot is freed after the batch
    /// unless a connection takes it).
    fn take_connected(&mut self, key: usize) -> Option<Connecting> {
        let Some(Entry::Connecting(_)) = self.entries.get(key) else {
            return None;
        };
        let Entry::Connecting(c) = std::mem::replace(&mut self.entries[key], Entry::Closed) else {
            return None;
        };
        c.timer.cancel();
        self.live_conns -= 1;
        Some(c)
    }

    /// Takes connecting entry `key` out of the slab and the poll.
    pub(crate) fn take_connecting(&mut self, key: usize) -> Option<Connecting> {
        let mut c = self.take_connected(key)?;
        let _ = self.poll.registry().deregister(c.stream.source());
        Some(c)
    }

    /// The connecting socket became ready: connected, or failed (then the next address).
    pub(crate) fn connect_ready(&mut self, key: usize) {
        let Some(Entry::Connecting(c)) = self.entries.get_mut(key) else {
            return;
        };
        let failed = match take_error(&c.stream) {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => None,
        };
        let peer = match (failed, peer_address(&c.stream)) {
            (Some(e), _) => Err(e),
            (None, Ok(p)) => Ok(p),
            // Not connected yet (a spurious wake-up): wait for the next event.
            (None, Err(e)) if e.kind() == io::ErrorKind::NotConnected => return,
            (None, Err(e)) => Err(e),
        };
        let Some(mut c) = self.take_connected(key) else {
            return;
        };
        let peer = match peer {
            Ok(p) => p,
            Err(e) => {
                let _ = self.poll.registry().deregister(c.stream.source());
                self.to_free.push(key);
                let mut attempt = c.attempt;
                attempt.last_error = Some(e);
                return self.try_next(attempt);
            }
        };
        if let Stream::Tcp(s) = &c.stream {
            let _ = s.set_nodelay(true);
        }
        let host = local_address(&c.stream, &peer);
        match c.attempt.client {
            Client::Factory(mut factory) => {
                let proto = factory.build_protocol(&peer);
                let mut st =
                    ConnState::new(c.id, peer, host, factory.name(), 0, self.handle.tick());
                // The readiness that said "connected" may have said "readable" too: no edge
                // will come again for what is already there.
                st.set(Flag::ReadPending, true);
                self.adopt_connection(key, NetSocket::Plain(c.stream), proto, st, None);
            }
            Client::Relay(r) => self.relay_connected(key, c.id, c.stream, peer, host, *r),
        }
    }

    /// The deadline passed during connect(2).
    pub(crate) fn connect_timed_out(&mut self, key: usize) {
        if let Some(c) = self.take_connecting(key) {
            self.to_free.push(key);
            let t = c.attempt.timeout;
            self.connect_failed(c.attempt, ConnectError::TimedOut(t));
        }
    }

    /// Tells whoever asked that the connection could not be made.
    pub(crate) fn connect_failed(&mut self, attempt: Attempt, error: ConnectError) {
        match attempt.client {
            Client::Factory(mut f) => f.client_connection_failed(&Reason::Io(error.into())),
            Client::Relay(r) => self.relay_failed(r.from, &error),
        }
    }

    /// The connect of `from`'s relay failed: it has no relay again, and its protocol hears
    /// why (unless it went meanwhile).
    pub(crate) fn relay_failed(&mut self, from: ConnId, error: &ConnectError) {
        match self.conn_mut(from) {
            Some(c) if c.conn.st.link() == Link::Pending => c.conn.st.set_link(Link::None),
            _ => return,
        }
        self.with_conn(from.key as usize, |p, t| {
            p.relay_connection_failed(t, error)
        });
    }
}
