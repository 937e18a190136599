//! Per-client connection limits: how many connections one address may hold at once.
//!
//! A factory keeps one [`PeerLimit`] and asks it for a [`PeerSlot`] in `build_protocol`; the
//! protocol keeps the slot, and dropping it (when the connection is gone) gives it back, so
//! the count can never drift from the connections that are really open. A refused client gets
//! whatever the protocol says in that case (SMTP's 421, POP3's -ERR) from the factory.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

use crate::address::Address;

/// Open connections by client address.
type Counts = Rc<RefCell<HashMap<IpAddr, usize>>>;

/// Connections per client address, shared by every connection of one factory.
#[derive(Clone, Debug)]
pub struct PeerLimit {
    max: usize,
    counts: Counts,
}

/// One admitted connection's share of its address's count; given back on drop. (Empty for
/// peers that are not counted.)
#[derive(Debug)]
pub struct PeerSlot(Option<(Counts, IpAddr)>);

/// The address a limit counts: IPv4-mapped IPv6 addresses as their IPv4 form.
fn client_ip(peer: &Address) -> Option<IpAddr> {
    let ip = peer.socket_addr()?.ip();
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    })
}

impl PeerLimit {
    /// At most `max` connections per client address; 0 means no limit.
    pub fn new(max: usize) -> Self {
        PeerLimit {
            max,
            counts: Rc::default(),
        }
    }

    /// A slot for a connection from `peer`, or `None` when that address already holds the
    /// maximum. Peers without an IP address (UNIX sockets) are not limited.
    pub fn admit(&self, peer: &Address) -> Option<PeerSlot> {
        let Some(ip) = client_ip(peer).filter(|_| self.max > 0) else {
            return Some(PeerSlot(None));
        };
        let mut counts = self.counts.borrow_mut();
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PeerSlot(Some((self.counts.clone(), ip))))
    }

    /// Connections `peer`'s address holds now.
    pub fn count(&self, peer: &Address) -> usize {
        client_ip(peer).map_or(0, |ip| self.counts.borrow().get(&ip).copied().unwrap_or(0))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let Some((counts, ip)) = &self.0 else { return };
        let mut counts = counts.borrow_mut();
        if let Some(n) = counts.get_mut(ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn tcp(s: &str) -> Address {
        Address::Tcp(s.parse::<SocketAddr>().unwrap())
    }

    #[test]
    fn slots_are_counted_per_address_and_given_back_on_drop() {
        let limit = PeerLimit::new(2);
        let a = tcp("10.0.0.1:1000");
        let a_mapped = tcp("[::ffff:10.0.0.1]:1001");
        let b = tcp("10.0.0.2:1000");
        let s1 = limit.admit(&a).expect("first");
        let s2 = limit.admit(&a_mapped).expect("second, the same address");
        assert!(limit.admit(&a).is_none(), "third refused");
        assert!(limit.admit(&b).is_some(), "another address is not affected");
        drop(s1);
        assert_eq!(limit.count(&a), 1);
        let s3 = limit.admit(&a).expect("a slot came back");
        drop((s2, s3));
        assert_eq!(limit.count(&a), 0);
        assert!(
            limit.counts.borrow().is_empty(),
            "no entry left for a gone client"
        );
        let off = PeerLimit::new(0);
        let held: Vec<_> = (0..100).map(|_| off.admit(&a).expect("no limit")).collect();
        assert_eq!(held.len(), 100);
        assert!(
            limit.admit(&Address::Unix(None)).is_some(),
            "UNIX peers unlimited"
        );
    }
}
