//! The forwarder's protocol: ask the core for a relay as soon as a client connects (on a TLS
//! port the core connects once the client's handshake has ended), log why one could not be
//! made, and log each relay's end with what it carried.

use std::rc::Rc;
use std::time::Duration;

use twistrs_core::metrics::RelayMetrics;
use twistrs_core::tls::ClientTls;
use twistrs_core::{
    Address, ConnectError, Destination, Ending, Factory, Outgoing, Protocol, RelayEnd,
    RelayRequest, SharedOnEnd, Transport,
};

thread_local! {
    /// The relays' series for `--metrics` (registered when the factory is made).
    static RELAYS: Rc<RelayMetrics> = Rc::new(RelayMetrics::new("portforward"));
}

/// Where every relay goes, and its timeouts.
#[derive(Debug, Clone)]
pub struct Config {
    pub dest: Destination,
    pub connect_timeout: Duration,
    /// Each side of a relay closes after this long without progress.
    pub idle_timeout: Option<Duration>,
    /// TLS to the destination (`--dest ssl:...`), loaded at start.
    pub tls: Option<ClientTls>,
}

/// One client: relayed to the destination, or closed with one log line.
pub struct Forward {
    config: Rc<Config>,
    /// Logs a relay's end and counts it; one for all the factory's relays, so an idle relay
    /// keeps no closure of its own (issue 11).
    on_end: SharedOnEnd,
}

impl Forward {
    pub fn new(config: Rc<Config>) -> Self {
        let on_end = end_logger(config.clone());
        Forward { config, on_end }
    }
}

/// What each relay's end does: count it and log it (under the client's log system).
fn end_logger(config: Rc<Config>) -> SharedOnEnd {
    let m = RELAYS.with(Rc::clone);
    SharedOnEnd::new(move |e: &RelayEnd| {
        m.ended(e);
        log::info!(target: &e.system, "{}", end_line(&config.dest, e))
    })
}

/// The line logged when a relay ends.
pub fn end_line(dest: &Destination, e: &RelayEnd) -> String {
    // The address connected to, when the destination is a name; a UNIX socket's path is
    // the destination itself (`unix:/run/app.sock`, not `unix:/run/app.sock (/run/app.sock)`).
    let to = match dest {
        Destination::Unix(_) => dest.to_string(),
        Destination::Tcp { .. } => {
            let (dest, addr) = (dest.to_string(), e.dest.to_string());
            if dest == addr {
                dest
            } else {
                format!("{dest} ({addr})")
            }
        }
    };
    // The idle timeout is this plugin's --timeout: the line names the option to change.
    let option = if matches!(e.ending, Ending::Idle(_)) {
        " (--timeout)"
    } else {
        ""
    };
    format!(
        "Relay {} -> {to} closed after {:.3} s: {} bytes to the destination, {} bytes to the \
         client; {}{option}",
        e.client,
        e.duration.as_secs_f64(),
        e.to_dest,
        e.to_client,
        e.why(),
    )
}

impl Protocol for Forward {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        // The end hears the log system: an idle relay keeps no copy of it (issue 11).
        t.connect_relay(
            RelayRequest::new(self.config.dest.clone())
                .connect_timeout(self.config.connect_timeout)
                .idle_timeout(self.config.idle_timeout)
                .tls(self.config.tls.clone())
                .on_end_shared(self.on_end.clone()),
        );
    }

    /// Never called: the client is not read until the relay is joined, and then its bytes
    /// go to the destination without passing here.
    fn data_received(&mut self, _t: &mut Transport<'_>, _data: &[u8]) {}

    fn relay_connected(&mut self, _t: &mut Transport<'_>, _out: &Outgoing) {
        RELAYS.with(|m| m.joined());
    }

    fn relay_connection_failed(&mut self, t: &mut Transport<'_>, e: &ConnectError) {
        RELAYS.with(|m| m.connect_failed(e));
        log::info!(target: &t.system(),
            "Connection to {} failed: {e}; closing the client.", self.config.dest);
        t.lose_connection();
    }

    /// A client whose destination is still being connected to is not closed by a graceful
    /// stop either: the connect timeout and the shutdown deadline bound it.
    fn stop_requested(&mut self, _t: &mut Transport<'_>) {}

    /// Once joined, nothing here is called: an idle relay need not keep this (issue 11).
    fn done_when_joined(&self) -> bool {
        true
    }
}

/// Builds a `Forward` per client (twistd's `ProxyFactory`, the name its log lines use).
pub struct ForwardFactory {
    config: Rc<Config>,
    on_end: SharedOnEnd,
    max: Option<usize>,
}

impl ForwardFactory {
    pub fn new(config: Config, max: Option<usize>) -> Self {
        // Registered now, so a scrape shows them at zero.
        RELAYS.with(|_| {});
        let config = Rc::new(config);
        ForwardFactory {
            on_end: end_logger(config.clone()),
            config,
            max,
        }
    }
}

impl Factory for ForwardFactory {
    fn name(&self) -> &'static str {
        "ProxyFactory"
    }

    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Forward {
            config: self.config.clone(),
            on_end: self.on_end.clone(),
        }))
    }

    fn max_connections(&self) -> Option<usize> {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twistrs_core::testing::RelayHarness;

    fn harness() -> RelayHarness<Forward> {
        let mut h = RelayHarness::new(Forward::new(Rc::new(Config {
            dest: Destination::tcp("127.0.0.1", 6665),
            connect_timeout: Duration::from_secs(7),
            idle_timeout: Some(Duration::from_secs(60)),
            tls: None,
        })));
        h.connect();
        h
    }

    #[test]
    fn each_client_is_relayed_to_the_destination() {
        let mut h = harness();
        let req = h.relay_request().expect("asked for a relay at once");
        assert_eq!(req.dest, Destination::tcp("127.0.0.1", 6665));
        assert_eq!(req.connect_timeout, Duration::from_secs(7));
        assert!(req.forward.is_empty());
        h.feed(b"GET / HTTP/1.0\r\n\r\n");
        h.connected();
        assert_eq!(h.dest_take_output(), b"GET / HTTP/1.0\r\n\r\n");
        // The client's FIN first (a half-close), the destination's after its answer.
        h.eof();
        h.dest_feed(b"HTTP/1.0 200 OK\r\n\r\nhi").dest_eof();
        assert_eq!(h.take_output(), b"HTTP/1.0 200 OK\r\n\r\nhi");
        let end = h.ended().expect("ended");
        let line = end_line(&Destination::tcp("127.0.0.1", 6665), &end);
        assert!(
            line == "Relay 127.0.0.1:54321 -> 127.0.0.1:6665 closed after 0.000 s: 18 bytes to \
                     the destination, 21 bytes to the client; the client closed first: \
                     Connection was closed cleanly.",
            "{line}"
        );
    }

    #[test]
    fn an_idle_relay_ends_blaming_the_timeout_not_the_client() {
        let mut h = harness();
        h.feed(b"then silence");
        h.connected();
        assert_eq!(h.dest_take_output(), b"then silence");
        h.advance(Duration::from_secs(61));
        let end = h.ended().expect("ended by the idle timeout");
        let line = end_line(&Destination::tcp("127.0.0.1", 6665), &end);
        assert!(
            line.ends_with(
                "12 bytes to the destination, 0 bytes to the client; closed by the idle \
                 timeout: nothing carried either way for 60 s (--timeout)"
            ),
            "{line}"
        );
    }

    #[test]
    fn the_end_line_names_a_unix_destination_once_and_a_name_with_its_address() {
        let mut h = harness();
        h.connected();
        h.eof();
        h.dest_eof();
        let mut end = h.ended().expect("ended");
        let named = end_line(&Destination::tcp("backend.example", 6665), &end);
        assert!(
            named.starts_with("Relay 127.0.0.1:54321 -> backend.example:6665 (127.0.0.1:6665) "),
            "{named}"
        );
        end.dest = twistrs_core::Address::Unix(Some("/run/app.sock".into()));
        let unix = end_line(&Destination::Unix("/run/app.sock".into()), &end);
        assert!(
            unix.starts_with("Relay 127.0.0.1:54321 -> unix:/run/app.sock closed after "),
            "{unix}"
        );
    }

    #[test]
    fn an_unreachable_destination_closes_the_client() {
        let mut h = harness();
        h.feed(b"unread");
        h.connect_failed(ConnectError::Io(
            std::io::ErrorKind::ConnectionRefused.into(),
        ));
        assert!(h.take_output().is_empty());
        assert!(h.lost().is_some());
        assert!(h.ended().is_none());
    }

    #[test]
    fn a_stop_leaves_a_pending_client_to_its_connect_timeout() {
        let mut h = harness();
        h.stop_requested();
        h.advance(Duration::from_secs(5));
        assert!(h.lost().is_none());
        h.connected();
        h.feed(b"late but relayed");
        assert_eq!(h.dest_take_output(), b"late but relayed");
    }
}
