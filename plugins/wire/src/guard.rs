//! The guard of the small datagram services (the wire plugins on `udp:` endpoints, and
//! inetd's internal ones), as openbsd-inetd's `dg_badinput`: a datagram
//! from a privileged port (below 1024, where the other small services live) or from an
//! address no reply should go to (multicast, broadcast, 0.0.0.0/8) is dropped unanswered.
//!
//! Without it one spoofed datagram, from the echo port of a host to its chargen port (or to
//! another host's), starts the classic endless ping-pong (CERT CA-1996-01): echo answers
//! chargen's answer, chargen answers echo's, at tens of thousands of datagrams a second
//! until a restart. Loopback stays allowed (openbsd-inetd drops it too): Linux drops
//! 127.0.0.0/8 sources arriving from the wire, and local clients use it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use twistrs_core::throttle::LogThrottle;
use twistrs_core::{DatagramProtocol, DatagramTransport, Handle};

/// NFS: a datagram service there may answer too (openbsd-inetd drops it as well).
const NFS_PORT: u16 = 2049;

/// True if a datagram from `from` must not be answered (see the module's comment).
pub fn bad_source(from: SocketAddr) -> bool {
    if from.port() < 1024 || from.port() == NFS_PORT {
        return true;
    }
    match from.ip() {
        IpAddr::V4(a) => bad_v4(a),
        IpAddr::V6(a) => {
            a.is_multicast() || a.is_unspecified() || a.to_ipv4_mapped().is_some_and(bad_v4)
        }
    }
}

fn bad_v4(a: Ipv4Addr) -> bool {
    a.is_multicast() || a.is_broadcast() || a.octets()[0] == 0
}

/// An internal datagram service behind the guard.
pub struct Guarded {
    inner: Box<dyn DatagramProtocol>,
    /// What the warning names: `echo/udp`.
    label: String,
    /// The log system the warning goes to (the plugin's).
    target: &'static str,
    handle: Option<Handle>,
    log: LogThrottle,
    dropped: u64,
}

impl Guarded {
    pub fn new(inner: Box<dyn DatagramProtocol>, label: &str, target: &'static str) -> Self {
        Guarded {
            inner,
            label: label.to_string(),
            target,
            handle: None,
            log: LogThrottle::new(Duration::from_secs(60)),
            dropped: 0,
        }
    }
}

impl DatagramProtocol for Guarded {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn start_protocol(&mut self, handle: &Handle) {
        self.handle = Some(handle.clone());
        self.inner.start_protocol(handle);
    }

    fn datagram_received(&mut self, t: &mut DatagramTransport<'_>, data: &[u8], from: SocketAddr) {
        if !bad_source(from) {
            return self.inner.datagram_received(t, data, from);
        }
        self.dropped += 1;
        // A flood of them is one line a minute.
        let now = self.handle.as_ref().map(Handle::now);
        if now.is_none_or(|n| self.log.allow(n)) {
            log::warn!(target: self.target,
                "'{}': datagram from {from} dropped unanswered (a privileged port or an \
                 address no answer goes to: it could start a loop between two services); \
                 {} so far.", self.label, self.dropped);
        }
    }

    fn port_opened(&mut self, t: &mut DatagramTransport<'_>) {
        self.inner.port_opened(t);
    }

    fn open_failed(&mut self, error: &std::io::Error) {
        self.inner.open_failed(error);
    }

    fn stop_protocol(&mut self) {
        self.inner.stop_protocol();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn openbsds_bad_inputs() {
        // The small services' ports, and any privileged one: a loop or an attack.
        for p in [7, 9, 13, 19, 37, 53, 123, 1023, 2049, 0] {
            assert!(bad_source(sa(&format!("192.0.2.1:{p}"))), "port {p}");
        }
        assert!(bad_source(sa("224.0.0.1:40000")));
        assert!(bad_source(sa("255.255.255.255:40000")));
        assert!(bad_source(sa("0.1.2.3:40000")));
        assert!(bad_source(sa("[ff02::1]:40000")));
        assert!(bad_source(sa("[::]:40000")));
        assert!(bad_source(sa("[::ffff:255.255.255.255]:40000")));
        // Clients.
        for ok in [
            "192.0.2.1:1024",
            "192.0.2.1:40000",
            "127.0.0.1:50000",
            "[::1]:50000",
            "[2001:db8::1]:2050",
        ] {
            assert!(!bad_source(sa(ok)), "{ok}");
        }
    }
}
