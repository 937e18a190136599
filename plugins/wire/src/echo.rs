//! Echo (RFC 862) and discard (RFC 863).

use std::net::SocketAddr;

use twistrs_core::clap::ArgMatches;
use twistrs_core::options::ListenOpt;
use twistrs_core::{
    DatagramProtocol, DatagramTransport, Plugin, PluginError, Protocol, ProtocolFactory, Service,
    Transport,
};

/// Sends back every byte received (RFC 862).
pub struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
        t.write(data);
    }
}

impl DatagramProtocol for Echo {
    fn name(&self) -> &'static str {
        "Echo"
    }

    fn datagram_received(&mut self, t: &mut DatagramTransport<'_>, data: &[u8], from: SocketAddr) {
        t.write(data, from);
    }
}

/// Throws away every byte received (RFC 863).
pub struct Discard;

impl Protocol for Discard {
    fn data_received(&mut self, _t: &mut Transport<'_>, _data: &[u8]) {}
}

impl DatagramProtocol for Discard {
    fn name(&self) -> &'static str {
        "Discard"
    }

    fn datagram_received(&mut self, _t: &mut DatagramTransport<'_>, _d: &[u8], _f: SocketAddr) {}
}

fn make_echo(m: &ArgMatches) -> Result<Box<dyn Service>, PluginError> {
    let f = ProtocolFactory::for_protocol("Echo", || Box::new(Echo) as Box<dyn Protocol>)
        .max_connections(crate::max_connections(m));
    crate::service(
        "echo",
        m,
        &ECHO_LISTEN,
        Box::new(f),
        Some(Box::new(|| Box::new(Echo))),
    )
}

fn make_discard(m: &ArgMatches) -> Result<Box<dyn Service>, PluginError> {
    let f = ProtocolFactory::for_protocol("Discard", || Box::new(Discard) as Box<dyn Protocol>)
        .max_connections(crate::max_connections(m));
    crate::service(
        "discard",
        m,
        &DISCARD_LISTEN,
        Box::new(f),
        Some(Box::new(|| Box::new(Discard))),
    )
}

const ECHO_LISTEN: ListenOpt = ListenOpt::listen(&["tcp:7"]);
const DISCARD_LISTEN: ListenOpt = ListenOpt::listen(&["tcp:9"]);

pub(crate) const ECHO: Plugin = Plugin {
    tapname: "echo",
    description: "An echo server (RFC 862): sends back what it receives, over TCP and UDP.",
    options: || {
        crate::command(
            "echo",
            "An echo server (RFC 862): sends back what it receives, over TCP and UDP.",
            &ECHO_LISTEN,
        )
    },
    make_service: make_echo,
};

pub(crate) const DISCARD: Plugin = Plugin {
    tapname: "discard",
    description: "A discard server (RFC 863): reads and throws away, over TCP and UDP.",
    options: || {
        crate::command(
            "discard",
            "A discard server (RFC 863): reads and throws away, over TCP and UDP.",
            &DISCARD_LISTEN,
        )
    },
    make_service: make_discard,
};

#[cfg(test)]
mod tests {
    use super::*;
    use twistrs_core::testing::{DatagramHarness, Harness};

    #[test]
    fn echo_returns_every_byte_in_every_chunking() {
        let input: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for chunk in [1, 2, 3, 7, 64, 999, 1000] {
            let mut h = Harness::new(Echo);
            h.connect().feed_chunked(&input, chunk);
            assert_eq!(h.take_output(), input, "chunk {chunk}");
            h.eof();
            assert!(h.disconnecting(), "EOF closes after the flush");
        }
    }

    #[test]
    fn discard_writes_nothing() {
        let mut h = Harness::new(Discard);
        h.connect().feed_chunked(b"anything at all", 1);
        assert!(h.output().is_empty());
        assert!(h.lost().is_none());
    }

    #[test]
    fn udp_echo_answers_the_sender_and_discard_does_not() {
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let sent = DatagramHarness::new(Echo).receive(b"ping", from);
        assert_eq!(sent, vec![(b"ping".to_vec(), from)]);
        assert!(DatagramHarness::new(Discard).receive(b"x", from).is_empty());
    }
}
