//! Character generator (RFC 864): an endless stream that obeys backpressure.
//!
//! Over TCP the protocol is a streaming producer: it fills the transport up to the high-water
//! mark, is paused there, and resumed when the peer has read enough, so a client that stops
//! reading costs the server a bounded buffer. Over UDP each datagram is answered with 0 to 512
//! characters.

use std::net::SocketAddr;
use std::sync::LazyLock;

use twistrs_core::clap::ArgMatches;
use twistrs_core::options::ListenOpt;
use twistrs_core::{
    DatagramProtocol, DatagramTransport, Plugin, PluginError, Protocol, ProtocolFactory, Service,
    Transport,
};

const LINE: usize = 72;

/// The RFC's 95 lines of 72 printable characters, each shifted by one and ended with CRLF.
static CYCLE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let printable: Vec<u8> = (b' '..=b'~').collect();
    let mut out = Vec::with_capacity(printable.len() * (LINE + 2));
    for start in 0..printable.len() {
        for j in 0..LINE {
            out.push(printable[(start + j) % printable.len()]);
        }
        out.extend_from_slice(b"\r\n");
    }
    out
});

/// The pattern (one full cycle), for clients checking what they received.
pub fn pattern() -> &'static [u8] {
    &CYCLE
}

/// How much one producer call writes before yielding to the reactor.
const FILL: usize = 64 * 1024;

/// The TCP character generator.
pub struct Chargen {
    offset: usize,
}

impl Chargen {
    pub fn new() -> Self {
        Chargen { offset: 0 }
    }

    fn produce(&mut self, t: &mut Transport<'_>) {
        while t.buffered() < FILL {
            t.write(&CYCLE[self.offset..]);
            self.offset = 0;
        }
    }
}

impl Default for Chargen {
    fn default() -> Self {
        Self::new()
    }
}

impl Protocol for Chargen {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.register_producer();
        self.produce(t);
    }

    /// Input is ignored, as the RFC says.
    fn data_received(&mut self, _t: &mut Transport<'_>, _data: &[u8]) {}

    fn resume_producing(&mut self, t: &mut Transport<'_>) {
        self.produce(t);
    }

    /// An endless stream is never idle: stop producing and close once flushed.
    fn stop_requested(&mut self, t: &mut Transport<'_>) {
        t.unregister_producer();
        t.lose_connection();
    }
}

/// The UDP character generator: a datagram of 0 to 512 characters per datagram received.
pub struct ChargenUdp {
    state: u64,
    offset: usize,
}

impl ChargenUdp {
    pub fn new(seed: u64) -> Self {
        ChargenUdp {
            state: seed | 1,
            offset: 0,
        }
    }

    /// xorshift64: enough randomness for a datagram length.
    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }
}

impl DatagramProtocol for ChargenUdp {
    fn name(&self) -> &'static str {
        "Chargen"
    }

    fn datagram_received(&mut self, t: &mut DatagramTransport<'_>, _d: &[u8], from: SocketAddr) {
        let len = (self.next() % 513) as usize;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let take = (len - out.len()).min(CYCLE.len() - self.offset);
            out.extend_from_slice(&CYCLE[self.offset..self.offset + take]);
            self.offset = (self.offset + take) % CYCLE.len();
        }
        t.write(&out, from);
    }
}

pub(crate) fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32)
}

fn make(m: &ArgMatches) -> Result<Box<dyn Service>, PluginError> {
    let f =
        ProtocolFactory::for_protocol("Chargen", || Box::new(Chargen::new()) as Box<dyn Protocol>)
            .max_connections(crate::max_connections(m));
    crate::service(
        "chargen",
        m,
        &LISTEN,
        Box::new(f),
        Some(Box::new(|| Box::new(ChargenUdp::new(seed())))),
    )
}

const ABOUT: &str = "A character generator (RFC 864): an endless stream over TCP, one datagram per datagram over UDP.";

const LISTEN: ListenOpt = ListenOpt::listen(&["tcp:19"]);

pub(crate) const PLUGIN: Plugin = Plugin {
    tapname: "chargen",
    description: ABOUT,
    options: || crate::command("chargen", ABOUT, &LISTEN),
    make_service: make,
};

#[cfg(test)]
mod tests {
    use super::*;
    use twistrs_core::testing::{DatagramHarness, Harness};

    #[test]
    fn cycle_follows_rfc_864() {
        assert_eq!(CYCLE.len(), 95 * 74);
        let first: Vec<u8> = (b' '..b' ' + LINE as u8).collect();
        assert_eq!(
            &CYCLE[..LINE],
            first.as_slice(),
            "line one starts at the space"
        );
        assert_eq!(&CYCLE[..5], b" !\"#$");
        assert_eq!(CYCLE[LINE - 1], b'g');
        assert_eq!(&CYCLE[LINE..LINE + 2], b"\r\n");
        assert_eq!(CYCLE[LINE + 2], b'!', "the second line starts one further");
        assert!(
            CYCLE
                .split(|b| *b == b'\n')
                .all(|l| l.is_empty() || l.len() == LINE + 1)
        );
    }

    #[test]
    fn producer_fills_to_the_mark_and_resumes_only_when_read() {
        let mut h = Harness::new(Chargen::new());
        h.connect();
        let first = h.output().len();
        assert!(first >= FILL, "fills the buffer: {first}");
        assert!(first < FILL + CYCLE.len(), "but no more: {first}");
        let got = h.take_output();
        assert_eq!(&got[..CYCLE.len()], &CYCLE[..]);
        assert!(h.output().len() >= FILL, "reading resumed the producer");
        h.feed(b"ignored input");
        assert!(h.lost().is_none());
    }

    #[test]
    fn udp_datagrams_are_at_most_512_pattern_bytes() {
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut h = DatagramHarness::new(ChargenUdp::new(12345));
        let mut lens = std::collections::HashSet::new();
        let mut stream = Vec::new();
        for _ in 0..50 {
            let sent = h.receive(b"", from);
            assert_eq!(sent.len(), 1);
            assert!(sent[0].0.len() <= 512);
            lens.insert(sent[0].0.len());
            stream.extend_from_slice(&sent[0].0);
        }
        assert!(lens.len() > 10, "lengths vary: {lens:?}");
        let expected: Vec<u8> = CYCLE.iter().cycle().take(stream.len()).copied().collect();
        assert_eq!(stream, expected, "datagrams continue the pattern");
    }
}
