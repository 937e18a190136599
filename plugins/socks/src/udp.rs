//! UDP ASSOCIATE: a UDP port that relays datagrams between the client and destinations while
//! the client's TCP connection lasts (RFC 1928, section 7).
//!
//! Datagrams are taken from the client's address only (and its port, once known: given in the
//! request, or the port of its first datagram); each is sent on to the destination its header
//! names, if the rules allow it, a host name resolved on a worker thread first. They leave by
//! a port of their own, one per address family, bound to the unspecified address (dante's
//! external socket): the client's port is bound to the address the client reached, often the
//! loopback, from which no datagram could leave for another host, nor for the other family.
//! Datagrams arriving there are relayed back to the client, behind a header naming their
//! source, only from destinations the client has sent to: the port is not an open relay into
//! the client.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use twistrs_core::{ConnId, DatagramProtocol, DatagramTransport, Handle, OwnedPort};

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
    /// The client's port's socket: what comes back goes to the client from it.
    sender: Option<Rc<UdpSocket>>,
    /// The ports datagrams leave by, IPv4's and IPv6's, each opened at the first datagram
    /// for its family.
    out: [Option<OwnedPort>; 2],
    /// This association, for the protocols of the ports it opens.
    me: Weak<RefCell<Association>>,
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
        Rc::new_cyclic(|me| {
            RefCell::new(Association {
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
                out: [None, None],
                me: me.clone(),
                wrapped: Vec::new(),
            })
        })
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

    /// Sends `payload` to `to` if the rules allow it, by the outgoing port of its family.
    fn send_out(&mut self, to: SocketAddr, payload: &[u8]) {
        let to = canonical(to);
        if crate::session::unspecified(to.ip()) {
            log::debug!(target: "twistrs.socks", "UDP datagram to {to} dropped: the unspecified address");
            return;
        }
        if !self.cfg.rules.allows(to) {
            log::debug!(target: "twistrs.socks", "UDP datagram to {to} dropped: refused by the rules");
            return;
        }
        let Some(port) = self.outgoing(to) else {
            return;
        };
        if let Err(e) = port.send_to(payload, to) {
            log::debug!(target: "twistrs.socks", "UDP datagram to {to} dropped: {e}");
        }
        if self.peers.len() < MAX_PEERS {
            self.peers.insert(to);
        }
        self.up += payload.len() as u64;
    }

    /// The port datagrams for `to` leave by, opened on `0.0.0.0:0` or `[::]:0` the first
    /// time: the system picks the source address its route takes.
    fn outgoing(&mut self, to: SocketAddr) -> Option<&OwnedPort> {
        let family = usize::from(to.is_ipv6());
        if self.out[family].is_none() {
            let at: SocketAddr = match family {
                0 => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
                _ => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let proto = Box::new(OutgoingPort(self.me.clone()));
            match self.handle.open_owned_udp(at, proto) {
                Ok(port) => self.out[family] = Some(port),
                Err(e) => {
                    log::debug!(target: "twistrs.socks", "UDP datagram to {to} dropped: cannot open a port on {at}: {e}");
                    return None;
                }
            }
        }
        self.out[family].as_ref()
    }

    /// A datagram from `from` on an outgoing port: to the client behind its header, if the
    /// client sent to `from` before.
    fn back_to_client(&mut self, data: &[u8], from: SocketAddr) {
        let from = canonical(from);
        let (Some(client), Some(sender)) = (self.client, self.sender.clone()) else {
            return;
        };
        if !self.peers.contains(&from) {
            log::debug!(target: "twistrs.socks", "UDP datagram from {from} dropped: not a destination the client sent to");
            return;
        }
        let mut wrapped = std::mem::take(&mut self.wrapped);
        udp_header::wrap_into(&mut wrapped, from, data);
        if let Err(e) = sender.send_to(&wrapped, client) {
            log::debug!(target: "twistrs.socks", "UDP datagram for the client {client} dropped: {e}");
        }
        self.wrapped = wrapped;
        self.down += data.len() as u64;
        self.note_activity();
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

    fn pick(&self, ips: &[IpAddr], port: u16) -> Option<SocketAddr> {
        pick(&self.cfg.rules, ips, port)
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
                        a.send_out(to, &payload);
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

    fn datagram_received(&mut self, _t: &mut DatagramTransport<'_>, data: &[u8], from: SocketAddr) {
        let weak = Rc::downgrade(&self.0);
        let mut a = self.0.borrow_mut();
        if !a.is_client(from) {
            log::debug!(target: "twistrs.socks", "UDP datagram from {from} dropped: not the client");
            return;
        }
        match udp_header::parse(data) {
            Err(why) => {
                log::debug!(target: "twistrs.socks", "UDP datagram from {from} dropped: {why:?}")
            }
            Ok((target, payload)) => match target.host {
                Host::Ip(ip) => a.send_out(SocketAddr::new(ip, target.port), payload),
                Host::Name(name) => {
                    let now = a.handle.now();
                    match a.cached(&name, now) {
                        Some(ips) => {
                            if let Some(to) = a.pick(&ips, target.port) {
                                a.send_out(to, payload);
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
        a.note_activity();
    }
}

/// The protocol of an outgoing port: what destinations answer goes back to the client.
pub struct OutgoingPort(Weak<RefCell<Association>>);

impl DatagramProtocol for OutgoingPort {
    fn name(&self) -> &'static str {
        "SOCKSUDP"
    }

    fn datagram_received(&mut self, _t: &mut DatagramTransport<'_>, data: &[u8], from: SocketAddr) {
        if let Some(a) = self.0.upgrade() {
            a.borrow_mut().back_to_client(data, from);
        }
    }
}

/// The first address of `ips` the rules allow that is not the unspecified address (which
/// Linux sends to this host, and `send_out` drops, as CONNECT skips it), or the first one
/// (to be refused or dropped).
fn pick(rules: &crate::rules::Rules, ips: &[IpAddr], port: u16) -> Option<SocketAddr> {
    let all = || ips.iter().map(|ip| SocketAddr::new(*ip, port));
    all()
        .find(|a| !crate::session::unspecified(a.ip()) && rules.allows(*a))
        .or_else(|| all().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name that resolves to 0.0.0.0 and a real address (a DNS sinkhole's answer beside a
    /// real one) sends to the real one, as CONNECT does. Before, the datagram went to the
    /// first address, 0.0.0.0, and was dropped.
    #[test]
    fn the_unspecified_address_is_passed_over() {
        let rules = crate::rules::Rules::default();
        let ips: Vec<IpAddr> = ["0.0.0.0", "192.0.2.7"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            pick(&rules, &ips, 53),
            Some("192.0.2.7:53".parse().unwrap())
        );
        let only: Vec<IpAddr> = vec!["::".parse().unwrap()];
        assert_eq!(
            pick(&rules, &only, 53),
            Some("[::]:53".parse().unwrap()),
            "to be dropped"
        );
    }
}
