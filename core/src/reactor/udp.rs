//! Datagram ports: bind, read datagrams until `WouldBlock`, close.

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
    /// The registration of a port a protocol opened for itself (`Handle::open_udp`).
    pub(crate) owner: Option<Rc<Registration>>,
}

impl UdpPort {
    /// Stops polling it and tells its protocol; the socket closes when this is dropped.
    pub(crate) fn close(&mut self, poll: &mio::Poll) {
        let _ = poll.registry().deregister(&mut self.sock);
        self.proto.stop_protocol();
    }
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
        let addr = SocketAddr::new(
            interface.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            *port,
        );
        let err = |e| ListenError {
            what: addr.to_string(),
            error: e,
        };
        let endpoint = ep.to_string();
        let std = match self.take_inherited(&endpoint) {
            Some(fd) => std::net::UdpSocket::from(fd),
            None => std::net::UdpSocket::bind(addr).map_err(err)?,
        };
        std.set_nonblocking(true).map_err(err)?;
        let local = std.local_addr().map_err(err)?;
        log::info!(target: crate::logsys::BARE, "{} starting on {}", proto.name(), local.port());
        let key = self.register_udp(std, proto, endpoint, None).map_err(err)?;
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
        proto.start_protocol(&self.handle);
        self.entries.insert(Entry::Udp(UdpPort {
            sock,
            proto,
            host: Address::Udp(local),
            endpoint,
            owner,
        }));
        Ok(key)
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
                    let mut t = DatagramTransport {
                        sink: &mut u.sock,
                        host: &u.host,
                        handle,
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
        let Entry::Udp(mut u) = self.entries.remove(key) else {
            return;
        };
        u.close(&self.poll);
        if let Address::Udp(a) = u.host {
            log::info!(target: crate::logsys::BARE, "(UDP Port {} Closed)", a.port());
        }
    }
}
