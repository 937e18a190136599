//! Counters for the metrics: plain integers the reactor bumps as it accepts, reads and writes,
//! read out only when a scrape asks (see [`super::Handle::listener_stats`]).

use super::{Entry, Reactor};

/// What a listener endpoint of a factory counts beyond what the factory already keeps.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    pub(crate) accepted: u64,
    /// Times the listener stopped accepting at the factory's connection limit (the
    /// connections waiting meanwhile stay in the kernel's backlog: none is refused outright).
    pub(crate) limit_pauses: u64,
    /// Connections the factory gave up at its limit to let a new one in (`Factory::make_room`).
    pub(crate) limit_closes: u64,
    /// Bytes of connections already closed; live ones add theirs at snapshot time.
    pub(crate) closed_received: u64,
    pub(crate) closed_sent: u64,
    /// TLS connections already closed: with their handshake done, and without (it failed,
    /// timed out, or the client left first); live ones add theirs at snapshot time.
    pub(crate) closed_tls_done: u64,
    pub(crate) closed_tls_failed: u64,
}

/// One endpoint a factory has listened on, with its counts.
#[derive(Debug)]
pub(crate) struct Origin {
    pub(crate) endpoint: String,
    pub(crate) counts: Counts,
}

/// The index of `endpoint` in `origins`, added if new (a listener opens; a handful per
/// factory, so a scan).
pub(crate) fn origin(origins: &mut Vec<Origin>, endpoint: &str) -> u32 {
    let i = match origins.iter().position(|o| o.endpoint == endpoint) {
        Some(i) => i,
        None => {
            origins.push(Origin {
                endpoint: endpoint.to_string(),
                counts: Counts::default(),
            });
            origins.len() - 1
        }
    };
    i as u32
}

/// One listener's counters: a factory's, on one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// The factory's name, as its "starting on" log line says it (`Site`, `Echo`).
    pub factory: String,
    /// The endpoint string, as the command line gave it.
    pub listener: String,
    /// Connections accepted since the listener opened.
    pub accepted: u64,
    /// Connections open now (a joined relay's client side included).
    pub open: u64,
    /// How often accepting paused at the factory's `max_connections`.
    pub limit_pauses: u64,
    /// Connections closed at the limit to make room for a new one ([`crate::protocol::Factory::make_room`]).
    pub limit_closes: u64,
    /// Application bytes (after TLS) read from peers.
    pub bytes_received: u64,
    /// Application bytes (files included, before TLS) sent to peers.
    pub bytes_sent: u64,
    /// TLS handshakes completed (on a TLS listener, or after STARTTLS).
    pub tls_handshakes: u64,
    /// TLS connections closed before their handshake completed: refused, timed out, or
    /// left by the client.
    pub tls_handshake_failures: u64,
    /// The listener's certificate files in service and each one's notAfter, in seconds since
    /// 1970 (empty for a plain listener).
    pub certificates: Vec<(String, i64)>,
}

/// One `udp:` listener's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// The datagram protocol's name, as its "starting on" line says it (`Echo`).
    pub protocol: String,
    /// The endpoint string.
    pub listener: String,
    /// Datagrams received.
    pub datagrams: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl Reactor {
    /// A snapshot of the open `udp:` listeners (a closed one's counts go with it).
    pub fn port_stats(&self) -> Vec<PortStats> {
        self.entries
            .iter()
            .filter_map(|(_, e)| match e {
                Entry::Udp(u) => u.stats(),
                _ => None,
            })
            .collect()
    }

    /// A snapshot of every listener endpoint that is open or has counted something, in
    /// the order of the factories and then of their endpoints.
    pub fn listener_stats(&self) -> Vec<ListenerStats> {
        // Where each factory's endpoints start in `out`.
        let mut first = Vec::with_capacity(self.factories.len());
        let mut out: Vec<ListenerStats> = Vec::new();
        for slot in &self.factories {
            first.push(out.len());
            out.extend(slot.origins.iter().map(|o| ListenerStats {
                factory: slot.factory.name().to_string(),
                listener: o.endpoint.clone(),
                accepted: o.counts.accepted,
                limit_pauses: o.counts.limit_pauses,
                limit_closes: o.counts.limit_closes,
                bytes_received: o.counts.closed_received,
                bytes_sent: o.counts.closed_sent,
                tls_handshakes: o.counts.closed_tls_done,
                tls_handshake_failures: o.counts.closed_tls_failed,
                ..ListenerStats::default()
            }));
        }
        let mut listening = vec![false; out.len()];
        for entry in self.entries.iter().map(|(_, e)| e) {
            match entry {
                Entry::Listener(l) => {
                    // A hand-off port (inetd's) belongs to no factory.
                    if let Some(f) = l.factory() {
                        listening[first[f] + l.origin as usize] = true;
                        if let Some(tls) = l.tls() {
                            out[first[f] + l.origin as usize].certificates = tls
                                .certificates()
                                .into_iter()
                                .map(|(p, t)| (p.display().to_string(), t))
                                .collect();
                        }
                    }
                }
                Entry::Conn(c) => {
                    if let Some(f) = c.factory() {
                        let s = &mut out[first[f as usize] + c.origin as usize];
                        s.open += 1;
                        s.bytes_received += c.conn.st.received;
                        s.bytes_sent += c.conn.st.out.sent;
                        if c.conn.tls_done() == Some(true) {
                            s.tls_handshakes += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        // A compact relay's client is an open connection of its factory too.
        for (f, origin, received, sent) in self.pairs.iter().filter_map(|(_, p)| p.client_counts())
        {
            let s = &mut out[first[f as usize] + origin as usize];
            s.open += 1;
            s.bytes_received += received;
            s.bytes_sent += sent;
        }
        let mut keep = listening.into_iter();
        out.retain(|s| keep.next().unwrap_or(false) || s.open > 0 || s.accepted > 0);
        out
    }
}
