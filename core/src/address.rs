//! Peer and host addresses of transports, as Twisted's `IAddress` (`IPv4Address`, `UNIXAddress`).

use std::fmt;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;

/// Where a transport's peer or host is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A TCP endpoint (IPv4 or IPv6).
    Tcp(SocketAddr),
    /// A UDP endpoint.
    Udp(SocketAddr),
    /// A UNIX socket; `None` for an unnamed (client) socket.
    Unix(Option<PathBuf>),
}

impl Address {
    /// The host part used in log prefixes (`Echo,3,127.0.0.1`): the IP, or empty for UNIX.
    pub fn host_string(&self) -> String {
        match self {
            Address::Tcp(a) | Address::Udp(a) => a.ip().to_string(),
            Address::Unix(_) => String::new(),
        }
    }

    /// The socket address of an internet address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Address::Tcp(a) | Address::Udp(a) => Some(*a),
            Address::Unix(_) => None,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) | Address::Udp(a) => write!(f, "{a}"),
            Address::Unix(Some(p)) => write!(f, "{}", p.display()),
            Address::Unix(None) => f.write_str("<unnamed>"),
        }
    }
}

/// A connection's peer and host addresses in 16 bytes, where two `Address`es take 80: every
/// connection carries them, and nearly all are IPv4 TCP, kept inline; anything else (IPv6,
/// UNIX) is boxed.
#[derive(Debug)]
pub(crate) enum Addrs {
    V4 {
        peer: SocketAddrV4,
        host: SocketAddrV4,
    },
    Other(Box<(Address, Address)>),
}

impl Addrs {
    pub(crate) fn new(peer: Address, host: Address) -> Self {
        match (&peer, &host) {
            (Address::Tcp(SocketAddr::V4(p)), Address::Tcp(SocketAddr::V4(h))) => {
                Addrs::V4 { peer: *p, host: *h }
            }
            _ => Addrs::Other(Box::new((peer, host))),
        }
    }

    /// The remote address.
    pub(crate) fn peer(&self) -> Address {
        match self {
            Addrs::V4 { peer, .. } => Address::Tcp(SocketAddr::V4(*peer)),
            Addrs::Other(b) => b.0.clone(),
        }
    }

    /// The local address.
    pub(crate) fn host(&self) -> Address {
        match self {
            Addrs::V4 { host, .. } => Address::Tcp(SocketAddr::V4(*host)),
            Addrs::Other(b) => b.1.clone(),
        }
    }

    /// The two addresses the other way round, without an allocation (a compact relay keeps
    /// its client's and its destination's peers in one `Addrs`).
    pub(crate) fn swapped(self) -> Self {
        match self {
            Addrs::V4 { peer, host } => Addrs::V4 {
                peer: host,
                host: peer,
            },
            Addrs::Other(mut b) => {
                let (p, h) = *b;
                *b = (h, p);
                Addrs::Other(b)
            }
        }
    }

    /// Stands in while the real ones are elsewhere (0.0.0.0:0 twice; no allocation).
    pub(crate) fn placeholder() -> Self {
        let zero = SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0);
        Addrs::V4 {
            peer: zero,
            host: zero,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addrs_give_back_what_they_were_given() {
        let v4 = |p| Address::Tcp(SocketAddr::from(([127, 0, 0, 1], p)));
        let v6 = Address::Tcp("[::1]:7".parse().expect("an address"));
        let unix = Address::Unix(Some("/tmp/s".into()));
        for (peer, host) in [
            (v4(54321), v4(7)),
            (v6.clone(), v6.clone()),
            (v4(1), v6),
            (Address::Unix(None), unix),
        ] {
            let a = Addrs::new(peer.clone(), host.clone());
            assert_eq!((a.peer(), a.host()), (peer.clone(), host.clone()));
            let a = a.swapped();
            assert_eq!((a.peer(), a.host()), (host, peer));
        }
        assert!(matches!(Addrs::new(v4(1), v4(2)), Addrs::V4 { .. }));
        assert_eq!(std::mem::size_of::<Addrs>(), 16);
    }
}
