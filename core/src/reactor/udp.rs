//! Datagram ports: bind, read datagrams until `WouldBlock`, close.
//!
//! A port is a listener (`listen_udp`, a `udp:` endpoint, logged as twistd logs it) or a
//! client port opened from a callback with `Handle::open_udp` (a resolver's socket to its
//! upstream server: not logged, not handed over on restart). Either can be written to from
//! outside its own callbacks with `Handle::send_datagram` and its [`PortId`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use mio::{Interest, Token};

use super::listen::{ListenError, ListenerId};
use super::owned::Registration;
use super::{Entry, Reactor};
use crate::address::Address;
use crate::endpoint::Endpoint;
use crate::protocol::DatagramProtocol;
use crate::transport::DatagramTransport;
use std::rc::Rc;

/// How many datagrams one port reads per turn before others have their go.
const DATAGRAMS_PER_TURN: usize = 64;

impl UdpPort {
    /// A `udp:` listener's counters, for a metrics scrape; none for a client port.
    pub(crate) fn stats(&self) -> Option<super::PortStats> {
        self.listener.then(|| super::PortStats {
            protocol: self.proto.name().to_string(),
            listener: self.endpoint.clone(),
            datagrams: self.received,
            bytes: self.received_bytes,
        })
    }

    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.sock.as_raw_fd()
    }
}

pub(crate) struct UdpPort {
    sock: mio::net::UdpSocket,
    proto: Box<dyn DatagramProtocol>,
    pub(crate) host: Address,
    pub(crate) endpoint: String,
    id: PortId,
    /// A `udp:` listener (logged when it opens and closes), not a client port.
    listener: bool,
    /// The registration of a port a protocol opened for itself (`Handle::open_owned_udp`).
    pub(crate) owner: Option<Rc<Registration>>,
    /// Datagrams and their bytes received, for the metrics.
    pub(crate) received: u64,
    pub(crate) received_bytes: u64,
}

impl UdpPort {
    /// Stops polling it and tells its protocol; the socket closes when this is dropped.
    pub(crate) fn close(&mut self, poll: &mio::Poll) {
        let _ = poll.registry().deregister(&mut self.sock);
        self.proto.stop_protocol();
    }
}

/// Identifies a datagram port for [`crate::Handle::send_datagram`] and
/// [`crate::Handle::close_port`]; a stale id (the port closed, its slot reused) is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortId {
    pub(crate) key: u32,
    pub(crate) serial: u32,
}

impl Reactor {
    /// Opens a `udp:` endpoint for `proto`. Logs twistd's `Echo starting on 7`.
    pub fn listen_udp(
        &mut self,
        ep: &Endpoint,
        proto: Box<dyn DatagramProtocol>,
    ) -> Result<ListenerId, ListenError> {
        let Endpoint::Udp { port, interface } = ep else {
            return Err(ListenError {
                what: ep.to_string(),
                error: io::Error::new(io::ErrorKind::InvalidInput, "not a datagram endpoint"),
            });
        };
        let endpoint = ep.to_string();
        // An inherited socket (a restart) is matched by the endpoint's string: no look-up.
        let inherited = self.take_inherited(&endpoint);
        let ip = match (interface, &inherited) {
            (Some(i), None) => i.resolve(false).map_err(|error| ListenError {
                what: endpoint.clone(),
                error,
            })?,
            (Some(i), Some(_)) => i.ip().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            (None, _) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        // A dry run ([`Reactor::check_only`]) binds a stand-in on port 0 of the interface,
        // after a moment on the port itself if it probes.
        let addr = SocketAddr::new(ip, if self.check_only { 0 } else { *port });
        let err = |e| ListenError {
            what: addr.to_string(),
            error: e,
        };
        if self.check_only && self.probe_ports && inherited.is_none() {
            let real = SocketAddr::new(ip, *port);
            super::listen::probe_port(real, socket2::Type::DGRAM).map_err(|error| ListenError {
                what: real.to_string(),
                error,
            })?;
        }
        let std = match inherited {
            Some(fd) => std::net::UdpSocket::from(fd),
            None => std::net::UdpSocket::bind(addr).map_err(err)?,
        };
        std.set_nonblocking(true).map_err(err)?;
        let local = std.local_addr().map_err(err)?;
        log::info!(target: crate::logsys::BARE, "{} starting on {}", proto.name(), local.port());
        let key = self.register_udp(std, proto, endpoint, None).map_err(err)?;
        // A dry run's stand-in reads back as the port asked for, as in `listen`; port 0 too,
        // so a service that listens on its UDP port again over TCP (dns) says `tcp:0`, not
        // the stand-in's port, which a start would not use.
        if self.check_only
            && let Some(Entry::Udp(u)) = self.entries.get_mut(key)
            && let Address::Udp(a) = &mut u.host
        {
            a.set_port(*port);
        }
        Ok(ListenerId(key))
    }

    /// Polls a bound, non-blocking UDP socket for `proto` and starts it.
    pub(crate) fn register_udp(
        &mut self,
        std: std::net::UdpSocket,
        mut proto: Box<dyn DatagramProtocol>,
        endpoint: String,
        owner: Option<Rc<Registration>>,
    ) -> io::Result<usize> {
        let mut sock = mio::net::UdpSocket::from_std(std);
        let local = sock.local_addr()?;
        let key = self.entries.vacant_key();
        self.poll
            .registry()
            .register(&mut sock, Token(key), Interest::READABLE)?;
        if !self.bind_only {
            proto.start_protocol(&self.handle);
        }
        let id = self.port_id(key);
        self.entries.insert(Entry::Udp(UdpPort {
            sock,
            proto,
            host: Address::Udp(local),
            endpoint,
            id,
            // A port a protocol opened for itself is not a `udp:` listener.
            listener: owner.is_none(),
            owner,
            received: 0,
            received_bytes: 0,
        }));
        Ok(key)
    }

    fn port_id(&mut self, key: usize) -> PortId {
        let c = self.next_id(key);
        PortId {
            key: c.key,
            serial: c.serial,
        }
    }

    /// `Handle::open_udp`: a client port bound to `bind` (port 0: the kernel picks one). The
    /// protocol hears `port_opened`, or `open_failed` if the socket cannot be made.
    pub(crate) fn open_udp(&mut self, bind: SocketAddr, mut proto: Box<dyn DatagramProtocol>) {
        let opened = std::net::UdpSocket::bind(bind).and_then(|s| {
            s.set_nonblocking(true)?;
            let local = s.local_addr()?;
            Ok((mio::net::UdpSocket::from_std(s), local))
        });
        let key = self.entries.vacant_key();
        let (mut sock, local) = match opened.and_then(|(mut sock, local)| {
            self.poll
                .registry()
                .register(&mut sock, Token(key), Interest::READABLE)?;
            Ok((sock, local))
        }) {
            Ok(v) => v,
            Err(e) => return proto.open_failed(&e),
        };
        let id = self.port_id(key);
        let host = Address::Udp(local);
        proto.start_protocol(&self.handle);
        let mut t = DatagramTransport {
            sink: &mut sock,
            host: &host,
            handle: &self.handle,
            port: id,
        };
        proto.port_opened(&mut t);
        self.entries.insert(Entry::Udp(UdpPort {
            sock,
            proto,
            host,
            endpoint: String::new(),
            id,
            listener: false,
            owner: None,
            received: 0,
            received_bytes: 0,
        }));
    }

    /// `Handle::send_datagram`: one datagram from a port, outside its own callbacks. The
    /// protocol hears of a datagram that cannot leave (`send_failed`), not of one a full
    /// buffer dropped.
    pub(crate) fn send_datagram(&mut self, port: PortId, data: &[u8], to: SocketAddr) {
        if let Some(Entry::Udp(u)) = self.entries.get_mut(port.key as usize)
            && u.id == port
            && let Err(e) = u.sock.send_to(data, to)
        {
            log::debug!(target: "twistrs.udp", "datagram to {to} dropped: {e}");
            if e.kind() != io::ErrorKind::WouldBlock {
                u.proto.send_failed(to, &e);
            }
        }
    }

    /// `Handle::close_port`: closes a client port (or a listener) by its id.
    pub(crate) fn close_port(&mut self, port: PortId) {
        if matches!(self.entries.get(port.key as usize), Some(Entry::Udp(u)) if u.id == port) {
            self.stop_udp(port.key as usize);
        }
    }

    pub(crate) fn udp_readable(&mut self, key: usize) {
        let handle = &self.handle;
        let buf = &mut self.read_buf[..];
        let Some(Entry::Udp(u)) = self.entries.get_mut(key) else {
            return;
        };
        for n in 0.. {
            if n == DATAGRAMS_PER_TURN {
                // Level-style fairness on an edge-triggered socket: come back next turn.
                self.redrive_udp.push(key);
                return;
            }
            match u.sock.recv_from(buf) {
                Ok((len, from)) => {
                    u.received += 1;
                    u.received_bytes += len as u64;
                    let mut t = DatagramTransport {
                        sink: &mut u.sock,
                        host: &u.host,
                        handle,
                        port: u.id,
                    };
                    u.proto.datagram_received(&mut t, &buf[..len], from);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors (port unreachable from an earlier send) surface here.
                    log::debug!(target: "twistrs.udp", "recv_from: {e}");
                }
            }
        }
    }

    pub(crate) fn stop_udp(&mut self, key: usize) {
        if !matches!(self.entries.get(key), Some(Entry::Udp(_))) {
            return;
        }
        // Freed at the end of the batch, so no event still queued for it reaches a new port.
        let Entry::Udp(mut u) = std::mem::replace(&mut self.entries[key], Entry::Closed) else {
            return;
        };
        self.to_free.push(key);
        u.close(&self.poll);
        if let (true, Address::Udp(a)) = (u.listener, &u.host) {
            log::info!(target: crate::logsys::BARE, "(UDP Port {} Closed)", a.port());
        }
    }
}
