//! Peer and host addresses of transports, as Twisted's `IAddress` (`IPv4Address`, `UNIXAddress`).

use std::fmt;
use std::net::SocketAddr;
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
