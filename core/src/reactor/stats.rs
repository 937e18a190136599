//! Counters for the metrics: plain integers the reactor bumps as it accepts, reads and writes,
//! read out only when a scrape asks (see [`super::Handle::listener_stats`]).

use super::{Entry, Reactor};

/// What a factory's slot counts beyond what it already keeps (its open connections).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    pub(crate) accepted: u64,
    /// Times a listener stopped accepting at the factory's connection limit (the connections
    /// waiting meanwhile stay in the kernel's backlog: none is refused outright).
    pub(crate) limit_pauses: u64,
    /// Bytes of connections already closed; live ones add theirs at snapshot time.
    pub(crate) closed_received: u64,
    pub(crate) closed_sent: u64,
}

/// One factory's counters, with the endpoints it listens on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// The factory's name, as its "starting on" log line says it (`Site`, `Echo`).
    pub factory: String,
    /// The endpoint strings of its listeners, space-separated, as the command line gave them.
    pub listeners: String,
    pub accepted: u64,
    pub open: u64,
    pub limit_pauses: u64,
    /// Application bytes (after TLS) read from peers.
    pub bytes_received: u64,
    /// Application bytes (files included, before TLS) sent to peers.
    pub bytes_sent: u64,
}

/// One `udp:` listener's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// The datagram protocol's name, as its "starting on" line says it (`Echo`).
    pub protocol: String,
    /// The endpoint string.
    pub listener: String,
    pub datagrams: u64,
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

    /// A snapshot of every factory that has listened or holds connections.
    pub fn listener_stats(&self) -> Vec<ListenerStats> {
        let mut out: Vec<ListenerStats> = self
            .factories
            .iter()
            .map(|slot| ListenerStats {
                factory: slot.factory.name().to_string(),
                accepted: slot.counts.accepted,
                open: slot.conns as u64,
                limit_pauses: slot.counts.limit_pauses,
                bytes_received: slot.counts.closed_received,
                bytes_sent: slot.counts.closed_sent,
                ..ListenerStats::default()
            })
            .collect();
        for entry in self.entries.iter().map(|(_, e)| e) {
            match entry {
                Entry::Listener(l) => {
                    // A hand-off port (inetd's) belongs to no factory.
                    let Some(f) = l.factory() else { continue };
                    if let Some(s) = out.get_mut(f) {
                        if !s.listeners.is_empty() {
                            s.listeners.push(' ');
                        }
                        s.listeners.push_str(l.endpoint());
                    }
                }
                Entry::Conn(c) => {
                    if let Some(s) = c.factory.and_then(|f| out.get_mut(f as usize)) {
                        s.bytes_received += c.conn.st.received;
                        s.bytes_sent += c.conn.st.out.sent;
                    }
                }
                _ => {}
            }
        }
        out.retain(|s| !s.listeners.is_empty() || s.open > 0 || s.accepted > 0);
        out
    }
}
