//! UDP ASSOCIATE: a UDP port that relays datagrams between the client and destinations while
//! the client's TCP connection lasts (RFC 1928, section 7).
//!
//! Datagrams are taken from the client's address only (and its port, once known: given in the
//! request, or the port of its first datagram); each is sent on to the destination its header
//! names, if the rules allow it, a host name resolved on a worker thread first. Datagrams
//! from elsewhere are relayed back to the client, behind a header naming their source, only
//! from destinations the client has sent to: the port is not an open relay into the client.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use twistrs_core::{ConnId, DatagramProtocol, DatagramTransport, Handle};

use crate::config::Config;
use crate::negotiate::Host;
use crate::udp_header;

/// Destinations remembered for replies, per association.
const MAX_PEERS: usize = 1024;
/// Host names remembered, and for how long.
const MAX_NAMES: usize = 64;
const NAME_TTL: Duration = Duration::from_secs(60);
/// Host-name lookups in flight at once; datagrams beyond are dropped.
const MAX_LOOKUPS: usize = 16;

/// Sent to the TCP connection (at most once a second) when datagrams flow, so its idle
/// timeout counts the association's traffic.
pub struct Activity;

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// One association's state.
pub struct Association {
    cfg: Rc<Config>,
    client_ip: IpAddr,
    /// The client's UDP address, once known.
    client: Option<SocketAddr>,
    /// Where the client has sent datagrams: the only sources relayed back.
    peers: HashSet<SocketAddr>,
    names: HashMap<String, (Vec<IpAddr>, Instant)>,
    lookups: usize,
    /// Payload bytes sent to destinations, and to the client.
    up: u64,
    down: u64,
    control: ConnId,
    handle: Handle,
    last_note: Option<Instant>,
    /// The port's socket, to send once a name resolved.
    sender: Option<Rc<UdpSocket>>,
    /// Where each datagram for the client is put behind its header.
    wrapped: Vec<u8>,
}

impl Association {
    pub fn new(
        cfg: Rc<Config>,
        client_ip: IpAddr,
        client_port: Option<u16>,
        control: ConnId,
        handle: Handle,
    ) -> Rc<RefCell<Association>> {
        let client_ip = client_ip.to_canonical();
        Rc::new(RefCell::new(Association {
            cfg,
            client_ip,
            client: client_port.map(|p| SocketAddr::new(client_ip, p)),
            peers: HashSet::new(),
            names: HashMap::new(),
            lookups: 0,
            up: 0,
            down: 0,
            control,
            handle,
            last_note: None,
            sender: None,
            wrapped: Vec::new(),
        }))
    }

    /// The datagram protocol to open the port with.
    pub fn port_protocol(a: &Rc<RefCell<Association>>) -> AssociationPort {
        AssociationPort(a.clone())
    }

    pub fn set_sender(&mut self, s: Option<Rc<UdpSocket>>) {
        self.sender = s;
    }

    /// Payload bytes sent up (to destinations) and down (to the client).
    pub fn counters(&self) -> (u64, u64) {
        (self.up, self.down)
    }

    fn is_client(&mut self, from: SocketAddr) -> bool {
        let from = canonical(from);
        if from.ip() != self.client_ip {
            return false;
        }
        match self.client {
            Some(c) => c.port() == from.port(),
            None => {
                self.client = Some(from);
                true
            }
        }
    }

    /// Sends `payload` to `to` if the rules allow it: through the port's transport in its
    /// callback, or through its socket afterwards.
    fn send_out(&mut self, t: Option<&mut DatagramTransport<'_>>, to: SocketAddr, payload: &[u8]) {
        if !self.cfg.rules.allows(to) {
            log::debug!(target: "twistrs.socks", "UDP datagram to {to} dropped: refused by the rules");
            return;
        }
        match t {
            Some(t) => t.write(payload, to),
            None => {
                if let Some(s) = &self.sender
                    && let Err(e) = s.send_to(payload, to)
                {
                    log::debug!(target: "twistrs.socks", "UDP datagram to {to} dropped: {e}");
                }
            }
        }
        if self.peers.len() < MAX_PEERS {
            self.peers.insert(canonical(to));
        }
        self.up += payload.len() as u64;
    }

    fn cached(&mut self, name: &str, now: Instant) -> Option<Vec<IpAddr>> {
        match self.names.get(name) {
            Some((ips, at)) if now.duration_since(*at) < NAME_TTL => Some(ips.clone()),
            Some(_) => {
                self.names.remove(name);
                None
            }
            None => None,
        }
    }

    /// The first address of `ips` the rules allow, or the first one (to be refused).
    fn pick(&self, ips: &[IpAddr], port: u16) -> Option<SocketAddr> {
        let all = || ips.iter().map(|ip| SocketAddr::new(*ip, port));
        all()
            .find(|a| self.cfg.rules.allows(*a))
            .or_else(|| all().next())
    }

    fn note_activity(&mut self) {
        let now = self.handle.now();
        if self
            .last_note
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_note = Some(now);
            self.handle.notify(self.control, Box::new(Activity));
        }
    }
}

/// The UDP port's protocol.
pub struct AssociationPort(Rc<RefCell<Association>>);

/// Resolves `name` on a worker thread, then sends `payload` through the association.
fn resolve_then_send(
    a: Weak<RefCell<Association>>,
    handle: &Handle,
    name: String,
    port: u16,
    payload: Vec<u8>,
) {
    let n = name.clone();
    handle
        .defer_to_thread_abandonable(move || {
            use std::net::ToSocketAddrs;
            let ips: Vec<IpAddr> = (n.as_str(), 0u16)
                .to_socket_addrs()?
                .map(|a| a.ip())
                .collect();
            Ok(ips)
        })
        .consume(move |r| {
            let Some(a) = a.upgrade() else {
                return;
            };
            let mut a = a.borrow_mut();
            a.lookups = a.lookups.saturating_sub(1);
            match r {
                Ok(ips) => {
                    if a.names.len() >= MAX_NAMES {
                        a.names.clear();
                    }
                    let now = a.handle.now();
                    a.names.insert(name, (ips.clone(), now));
                    if let Some(to) = a.pick(&ips, port) {
                        a.send_out(None, to, &payload);
                    }
                }
                Err(e) => {
                    log::debug!(target: "twistrs.socks", "UDP datagram to {name}:{port} dropped: {e}")
                }
            }
        });
}

impl DatagramProtocol for AssociationPort {
    fn name(&self) -> &'static str {
        "SOCKSUDP"
    }

    fn datagram_received(&mut self, t: &mut DatagramTransport<'_>, data: &[u8], from: SocketAddr) {
        let weak = Rc::downgrade(&self.0);
        let mut a = self.0.borrow_mut();
        if a.is_client(from) {
            match udp_header::parse(data) {
                Err(why) => {
                    log::debug!(target: "twistrs.socks", "UDP datagram from {from} dropped: {why:?}")
                }
                Ok((target, payload)) => match target.host {
                    Host::Ip(ip) => a.send_out(Some(t), SocketAddr::new(ip, target.port), payload),
                    Host::Name(name) => {
                        let now = a.handle.now();
                        match a.cached(&name, now) {
                            Some(ips) => {
                                if let Some(to) = a.pick(&ips, target.port) {
                                    a.send_out(Some(t), to, payload);
                                }
                            }
                            None if a.lookups < MAX_LOOKUPS => {
                                a.lookups += 1;
                                let h = a.handle.clone();
                                resolve_then_send(weak, &h, name, target.port, payload.to_vec());
                            }
                            None => {
                                log::debug!(target: "twistrs.socks", "UDP datagram to {name} dropped: too many lookups")
                            }
                        }
                    }
                },
            }
        } else if a.peers.contains(&canonical(from)) {
            let Some(client) = a.client else {
                return;
            };
            let mut wrapped = std::mem::take(&mut a.wrapped);
            udp_header::wrap_into(&mut wrapped, from, data);
            t.write(&wrapped, client);
            a.wrapped = wrapped;
            a.down += data.len() as u64;
        } else {
            log::debug!(target: "twistrs.socks", "UDP datagram from {from} dropped: not the client, nor a destination it sent to");
            return;
        }
        a.note_activity();
    }
}
