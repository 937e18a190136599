//! The TLS stream against rustls's own client over a socket in memory: data both ways in every
//! size and reader's buffer, TLS 1.2 and 1.3, key updates, tickets, the ends (close_notify,
//! EOF, errors behind data), backpressure, files, and no buffer held while idle.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::OnceLock;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

use super::*;
use crate::tls::{TlsContext, provider};

/// A socket in memory: what the client sent waits in `inbox`; what the server sends goes to
/// `wire`, which holds at most `room` bytes (the kernel's send buffer) until taken.
#[derive(Default)]
struct Pipe {
    inbox: VecDeque<u8>,
    /// The client's FIN came.
    eof: bool,
    wire: Vec<u8>,
    room: Option<usize>,
    /// The server's FIN went.
    fin: bool,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inbox.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(self.inbox.len());
        for (b, v) in buf.iter_mut().zip(self.inbox.drain(..n)) {
            *b = v;
        }
        Ok(n)
    }
}

impl Socket for Pipe {
    fn send(&mut self, buf: &[u8], _more: bool) -> io::Result<usize> {
        assert!(!self.fin, "sent after the FIN");
        let n = match self.room {
            Some(r) => buf.len().min(r.saturating_sub(self.wire.len())),
            None => buf.len(),
        };
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.wire.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn send_file(&mut self, _: &File, _: u64, _: usize) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }

    fn set_cork(&mut self, _on: bool) {}

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.fin = true;
        Ok(())
    }
}

/// The server's config: a P-256 certificate made once by the openssl command (as the
/// integration tests make theirs).
fn server_config() -> Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let (key, cert) = crate::tls::test_cert(dir.path()).expect("run openssl");
            TlsContext::from_files(&key, Some(&cert), &[])
                .unwrap()
                .config()
        })
        .clone()
}

/// Takes any certificate: what is tested is the stream, not the chain.
#[derive(Debug)]
struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls client and our server over a [`Pipe`].
struct Peer {
    client: ClientConnection,
    server: TlsStream<Pipe>,
    /// The reader's buffer the server reads with.
    buf: usize,
    /// Plaintext the server read.
    got: Vec<u8>,
    /// The server's read said the end came (Ok(0)).
    ended: bool,
    /// The server's read failed.
    error: Option<io::Error>,
    /// Plaintext the client read.
    back: Vec<u8>,
    /// The client read the server's close_notify.
    closed: bool,
}

impl Peer {
    fn new(versions: &[&'static rustls::SupportedProtocolVersion], buf: usize) -> Peer {
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert))
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        Peer {
            client: ClientConnection::new(Arc::new(config), name).unwrap(),
            server: TlsStream::new(Pipe::default(), server_config()).unwrap(),
            buf,
            got: Vec::new(),
            ended: false,
            error: None,
            back: Vec::new(),
            closed: false,
        }
    }

    /// After a handshake.
    fn connected(versions: &[&'static rustls::SupportedProtocolVersion], buf: usize) -> Peer {
        let mut p = Peer::new(versions, buf);
        p.run();
        assert!(!p.server.handshaking() && !p.client.is_handshaking());
        p
    }

    fn pipe(&mut self) -> &mut Pipe {
        self.server.socket_mut()
    }

    /// What the client has to send, to the server's socket.
    fn client_sends(&mut self) -> bool {
        let mut out = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut out).unwrap();
        }
        self.pipe().inbox.extend(&out);
        !out.is_empty()
    }

    /// Reads as the reactor does: until a short read without an end behind it.
    fn server_reads(&mut self) -> bool {
        let before = self.got.len();
        let mut buf = vec![0u8; self.buf];
        for _ in 0..100_000 {
            match self.server.read(&mut buf) {
                Ok(0) => {
                    self.ended = true;
                    break;
                }
                Ok(n) => {
                    self.got.extend_from_slice(&buf[..n]);
                    if n < buf.len() && !self.server.read_ahead() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.error = Some(e);
                    break;
                }
            }
        }
        self.got.len() != before
    }

    /// What the server sent, to the client, which reads the plaintext.
    fn client_receives(&mut self) -> bool {
        let wire = mem::take(&mut self.pipe().wire);
        let mut rd = &wire[..];
        while !rd.is_empty() {
            self.client.read_tls(&mut rd).unwrap();
            self.client.process_new_packets().unwrap();
            let mut buf = [0u8; 16384];
            loop {
                match self.client.reader().read(&mut buf) {
                    Ok(0) => {
                        self.closed = true;
                        break;
                    }
                    Ok(n) => self.back.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("client: {e}"),
                }
            }
        }
        !wire.is_empty()
    }

    /// Moves bytes both ways until nothing moves.
    fn run(&mut self) {
        for _ in 0..1000 {
            let mut moved = self.client_sends();
            moved |= self.server_reads();
            self.server.flush_pending().unwrap();
            moved |= self.client_receives();
            if !moved {
                return;
            }
        }
        panic!("bytes still moving after 1000 rounds");
    }

    /// The client sends `data`, as much at a time as it takes.
    fn client_writes(&mut self, data: &[u8]) {
        let mut off = 0;
        for _ in 0..10_000 {
            if off == data.len() {
                return;
            }
            off += self.client.writer().write(&data[off..]).unwrap();
            self.run();
        }
        panic!("the client could not send {} bytes", data.len());
    }

    /// The server sends `data` as the output queue does: what a send does not take waits.
    fn server_writes(&mut self, data: &[u8]) {
        let mut off = 0;
        for _ in 0..10_000 {
            if off == data.len() {
                return;
            }
            match self.server.send(&data[off..], false) {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.run(),
                Err(e) => panic!("server send: {e}"),
            }
        }
        panic!("the server could not send {} bytes", data.len());
    }

    /// An idle connection holds no buffer of ours.
    fn assert_idle(&self) {
        let s = &self.server;
        assert_eq!(
            (
                s.incoming.capacity(),
                s.outgoing.capacity(),
                s.plain.capacity(),
                s.held.capacity()
            ),
            (0, 0, 0, 0),
            "buffers held by an idle connection"
        );
        assert!(!s.pending());
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

static TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
static TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

#[test]
fn data_both_ways_in_every_size_then_no_buffer_is_held() {
    for versions in [TLS13, TLS12] {
        // The reactor's buffer, and the smallest it allows: records then outgrow it.
        for buf in [64 * 1024, 512] {
            let mut p = Peer::connected(versions, buf);
            p.assert_idle();
            for size in [1, 5000, 16 * 1024, 16 * 1024 + 1, 70_000, 300_000] {
                let data = pattern(size);
                p.client_writes(&data);
                p.run();
                assert_eq!(p.got.len(), size, "{versions:?} buf {buf}");
                assert!(
                    p.got == data,
                    "{versions:?} buf {buf} size {size}: bytes differ"
                );
                let got = mem::take(&mut p.got);
                p.server_writes(&got);
                p.run();
                assert!(
                    p.back == data,
                    "{versions:?} buf {buf} size {size}: echo differs"
                );
                p.back.clear();
                p.assert_idle();
            }
            assert!(p.error.is_none() && !p.ended);
        }
    }
}

#[test]
fn tls13_tickets_reach_the_client_after_the_handshake() {
    let p = Peer::connected(TLS13, 64 * 1024);
    assert!(p.client.tls13_tickets_received() > 0);
    p.assert_idle();
}

#[test]
fn key_updates_both_ways_keep_the_data_flowing() {
    let mut p = Peer::connected(TLS13, 64 * 1024);
    for round in 0..3 {
        // update_requested: the server must answer with a key update of its own.
        p.client.refresh_traffic_keys().unwrap();
        let data = pattern(20_000 + round);
        p.client_writes(&data);
        p.run();
        assert!(p.got == data, "round {round}");
        let got = mem::take(&mut p.got);
        p.server_writes(&got);
        p.run();
        assert!(p.back == data, "round {round}");
        p.back.clear();
    }
    assert!(p.error.is_none());
    p.assert_idle();
}

#[test]
fn close_notify_behind_data_is_read_at_once_and_answered() {
    let mut p = Peer::connected(TLS13, 64 * 1024);
    p.client.writer().write_all(b"last words").unwrap();
    p.client.send_close_notify();
    p.client_sends();
    let mut buf = [0u8; 1024];
    assert_eq!(p.server.read(&mut buf).unwrap(), 10);
    assert_eq!(&buf[..10], b"last words");
    assert!(p.server.read_ahead(), "the end came with the data");
    assert_eq!(p.server.read(&mut buf).unwrap(), 0);
    assert!(!p.server.read_ahead());
    p.server.shutdown_write().unwrap();
    assert!(!p.server.pending() && p.pipe().fin);
    p.client_receives();
    assert!(p.closed, "the client got close_notify");
}

#[test]
fn a_tcp_close_without_close_notify_ends_the_stream_behind_the_data() {
    let mut p = Peer::connected(TLS12, 64 * 1024);
    p.client.writer().write_all(b"abc").unwrap();
    p.client_sends();
    p.pipe().eof = true;
    let mut buf = [0u8; 64];
    assert_eq!(p.server.read(&mut buf).unwrap(), 3);
    assert!(p.server.read_ahead());
    assert_eq!(p.server.read(&mut buf).unwrap(), 0);
}

#[test]
fn a_close_during_the_handshake_waits_for_its_end() {
    let mut p = Peer::new(TLS13, 64 * 1024);
    // A greeting written and the close asked for at once, before the client said anything.
    assert_eq!(p.server.send(b"220 hello\r\n", false).unwrap(), 11);
    p.server.shutdown_write().unwrap();
    assert!(p.server.pending() && p.server.handshaking());
    p.run();
    assert_eq!(p.back, b"220 hello\r\n");
    assert!(p.closed && p.pipe().fin && !p.server.pending());
}

#[test]
fn plaintext_gets_an_alert_and_an_error_naming_it_on_every_read() {
    let mut p = Peer::new(TLS13, 64 * 1024);
    p.pipe().inbox.extend(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    for _ in 0..2 {
        let e = p.server.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().starts_with("not TLS"), "{e}");
    }
    // A fatal decode_error alert, in a TLS record.
    assert_eq!(p.pipe().wire, [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 50]);
}

#[test]
fn an_error_behind_data_comes_after_the_data_with_its_alert() {
    let mut p = Peer::connected(TLS13, 64 * 1024);
    p.client.writer().write_all(b"good").unwrap();
    p.client_sends();
    // A record whose tag cannot be right.
    p.pipe()
        .inbox
        .extend([0x17, 0x03, 0x03, 0x00, 0x20].iter().chain(&[7u8; 32]));
    let mut buf = [0u8; 64];
    assert_eq!(p.server.read(&mut buf).unwrap(), 4);
    assert!(p.server.read_ahead());
    let e = p.server.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    let wire = mem::take(&mut p.pipe().wire);
    // An alert sealed with the session's keys: one record of application data type.
    assert_eq!(wire.first(), Some(&0x17), "{wire:?}");
    assert!(p.server.read(&mut buf).is_err());
}

#[test]
fn a_file_through_a_socket_that_backs_up_stays_bounded() {
    let mut p = Peer::connected(TLS13, 64 * 1024);
    p.pipe().room = Some(10_000);
    let data = pattern(1 << 20);
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&data).unwrap();
    let mut off = 0;
    let mut blocked = 0;
    for _ in 0..100_000 {
        if off == data.len() {
            break;
        }
        match p.server.send_file(&file, off as u64, data.len() - off) {
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                blocked += 1;
                let s = &p.server;
                assert!(s.pending());
                assert!(s.outgoing.len() - s.out_pos <= SEAL_CHUNK + 1024);
                p.run();
            }
            Err(e) => panic!("send_file: {e}"),
        }
    }
    p.run();
    assert!(blocked > 10, "the socket never backed up");
    assert!(p.back == data, "{} of {} bytes", p.back.len(), data.len());
    p.assert_idle();
}

/// Feeds `input` to `p`'s server in `cuts` pieces, reading after each: the server answers an
/// error (InvalidData, every read after it too), waits for more, or (for a close_notify that
/// happens to be there) ends, and never panics.
fn feed_garbage(p: &mut Peer, input: &[u8], cuts: &[usize]) {
    let mut buf = [0u8; 700];
    let mut at = 0;
    let mut failed = false;
    for cut in cuts.iter().copied().chain([input.len()]) {
        let to = cut.clamp(at, input.len());
        p.pipe().inbox.extend(&input[at..to]);
        at = to;
        for _ in 0..1000 {
            match p.server.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(!failed, "an error, then no error");
                    break;
                }
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                    failed = true;
                    break;
                }
            }
        }
        // The write side never panics either, and refuses once the session failed.
        match p.server.send(b"x", false) {
            Err(e) if failed => assert_eq!(e.kind(), io::ErrorKind::InvalidData),
            _ => {}
        }
        let _ = p.server.flush_pending();
        p.pipe().wire.clear();
    }
}

proptest::proptest! {
    #[test]
    fn garbage_in_any_pieces_is_an_error_never_a_panic(
        // A plausible record header first, or not, so the parsers get past the first byte.
        head in proptest::prop_oneof![
            proptest::strategy::Just(vec![]),
            proptest::strategy::Just(vec![0x16, 0x03, 0x01]),
            proptest::strategy::Just(vec![0x17, 0x03, 0x03]),
            proptest::strategy::Just(vec![0x15, 0x03, 0x03, 0x00, 0x02]),
        ],
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
        cuts in proptest::collection::vec(0usize..3000, 0..6),
        after_handshake in proptest::bool::ANY,
    ) {
        let mut input = head;
        input.extend(body);
        let mut cuts = cuts;
        cuts.sort_unstable();
        let mut p = if after_handshake {
            Peer::connected(TLS13, 64 * 1024)
        } else {
            Peer::new(TLS13, 64 * 1024)
        };
        feed_garbage(&mut p, &input, &cuts);
    }
}

impl Peer {
    /// As [`Peer::run`], but what the client sends reaches the server `piece` bytes at a time,
    /// the server reading after each.
    fn run_in_pieces(&mut self, piece: usize) {
        for _ in 0..1000 {
            let mut out = Vec::new();
            while self.client.wants_write() {
                self.client.write_tls(&mut out).unwrap();
            }
            let mut moved = !out.is_empty();
            for chunk in out.chunks(piece.max(1)) {
                self.pipe().inbox.extend(chunk);
                self.server_reads();
            }
            moved |= self.server_reads();
            self.server.flush_pending().unwrap();
            moved |= self.client_receives();
            if !moved {
                return;
            }
        }
        panic!("bytes still moving after 1000 rounds");
    }
}

proptest::proptest! {
    #[test]
    fn a_session_cut_in_any_pieces_reads_the_same(
        piece in 1usize..600,
        size in 0usize..40_000,
        tls12 in proptest::bool::ANY,
        buf in proptest::prop_oneof![proptest::strategy::Just(512usize), proptest::strategy::Just(64 * 1024)],
    ) {
        let mut p = Peer::new(if tls12 { TLS12 } else { TLS13 }, buf);
        p.run_in_pieces(piece);
        proptest::prop_assert!(!p.server.handshaking() && !p.client.is_handshaking());
        let data = pattern(size);
        p.client.writer().write_all(&data).unwrap();
        p.client.send_close_notify();
        p.run_in_pieces(piece);
        proptest::prop_assert!(p.got == data, "{} of {} bytes", p.got.len(), size);
        proptest::prop_assert!(p.ended && p.error.is_none());
        p.server.shutdown_write().unwrap();
        p.run_in_pieces(piece);
        proptest::prop_assert!(p.closed && p.pipe().fin);
        p.assert_idle();
    }
}

/// Our client and our server, each over a [`Pipe`], for the client side of the stream.
struct Pair {
    client: TlsStream<Pipe, UnbufferedClientConnection>,
    server: TlsStream<Pipe>,
    /// Plaintext each side read, and whether its read said the end came.
    to_server: Vec<u8>,
    server_ended: bool,
    to_client: Vec<u8>,
    client_ended: bool,
}

impl Pair {
    fn new() -> Pair {
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(TLS13)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert))
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        Pair {
            client: TlsStream::client(Pipe::default(), Arc::new(config), name).unwrap(),
            server: TlsStream::new(Pipe::default(), server_config()).unwrap(),
            to_server: Vec::new(),
            server_ended: false,
            to_client: Vec::new(),
            client_ended: false,
        }
    }

    /// Reads `s` as the reactor does, into `got`; `end` once a read says the end came.
    fn read_side<C: Session>(s: &mut TlsStream<Pipe, C>, got: &mut Vec<u8>, end: &mut bool) {
        let mut buf = [0u8; 4096];
        for _ in 0..1000 {
            match s.read(&mut buf) {
                Ok(0) => {
                    *end = true;
                    return;
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Flushes both sides and moves the wire (and the FIN) across until nothing moves: the
    /// reactor's drive, which flushes even with no plaintext to send.
    fn run(&mut self) {
        for _ in 0..100 {
            self.client.flush_pending().unwrap();
            self.server.flush_pending().unwrap();
            let up = mem::take(&mut self.client.socket_mut().wire);
            let down = mem::take(&mut self.server.socket_mut().wire);
            let fins = (self.client.socket_mut().fin, self.server.socket_mut().fin);
            let moved = !up.is_empty()
                || !down.is_empty()
                || fins.0 != self.server.socket_mut().eof
                || fins.1 != self.client.socket_mut().eof;
            self.server.socket_mut().inbox.extend(&up);
            self.server.socket_mut().eof = fins.0;
            self.client.socket_mut().inbox.extend(&down);
            self.client.socket_mut().eof = fins.1;
            Self::read_side(
                &mut self.server,
                &mut self.to_server,
                &mut self.server_ended,
            );
            Self::read_side(
                &mut self.client,
                &mut self.to_client,
                &mut self.client_ended,
            );
            if !moved {
                return;
            }
        }
        panic!("bytes still moving after 100 rounds");
    }
}

#[test]
fn a_client_queues_its_hello_at_once() {
    let mut c = Pair::new().client;
    // Nothing written: the ClientHello is what the connection's first flush sends.
    assert!(c.pending() && c.handshaking());
    assert!(c.flush_pending().unwrap());
    let wire = &c.socket_mut().wire;
    assert_eq!(wire.first(), Some(&0x16), "a handshake record: {wire:?}");
    assert!(!c.pending());
}

#[test]
fn a_server_that_speaks_first_is_heard_by_a_client_that_says_nothing() {
    let mut p = Pair::new();
    assert_eq!(p.server.send(b"+OK ready\r\n", false).unwrap(), 11);
    p.run();
    assert!(!p.client.handshaking());
    assert_eq!(p.to_client, b"+OK ready\r\n");
    assert!(p.to_server.is_empty() && !p.client_ended);
}

#[test]
fn a_client_that_closes_before_any_data_sends_close_notify_and_hears_the_reply() {
    let mut p = Pair::new();
    p.client.shutdown_write().unwrap();
    p.run();
    assert!(p.server_ended && p.to_server.is_empty());
    assert!(p.client.socket_mut().fin, "the FIN follows close_notify");
    assert_eq!(p.server.send(b"bye\r\n", false).unwrap(), 5);
    p.server.shutdown_write().unwrap();
    p.run();
    assert_eq!(p.to_client, b"bye\r\n");
    assert!(p.client_ended && !p.client.pending() && !p.server.pending());
}

/// A read that takes handshake records returns no plaintext (WouldBlock) but says it took
/// input, so the connection counts it as activity; a read that finds nothing says it did not.
#[test]
fn a_read_that_takes_only_handshake_records_says_it_took_input() {
    let mut p = Peer::new(TLS13, 64 * 1024);
    let mut buf = [0u8; 64];
    let e = p.server.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    assert!(!p.server.took_input(), "nothing came");
    // The ClientHello, in two pieces: each read takes one and returns nothing.
    let mut hello = Vec::new();
    while p.client.wants_write() {
        p.client.write_tls(&mut hello).unwrap();
    }
    let half = hello.len() / 2;
    for piece in [&hello[..half], &hello[half..]] {
        p.pipe().inbox.extend(piece);
        let e = p.server.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(
            p.server.took_input(),
            "a piece of the ClientHello was taken"
        );
        assert!(p.server.handshaking());
    }
    let e = p.server.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    assert!(!p.server.took_input(), "the flag is the last read's");
}

/// A client that asks for a key update with every byte it sends and reads nothing: rustls
/// answers at most one update at a time (the answer leaves with our next record) and refuses
/// a run of more than 32 without data between them, so the records the server holds for such
/// a client stay a few, whatever it sends.
#[test]
fn key_update_requests_from_a_client_that_reads_nothing_hold_nothing() {
    let mut p = Peer::connected(TLS13, 64 * 1024);
    // The socket takes nothing more: what the server has to send stays with it.
    let full = p.pipe().wire.len();
    p.pipe().room = Some(full);
    for _ in 0..5000 {
        p.client.refresh_traffic_keys().unwrap();
        p.client.writer().write_all(b"k").unwrap();
        p.client_sends();
        p.server_reads();
    }
    assert!(p.error.is_none(), "{:?}", p.error);
    assert_eq!(p.got.len(), 5000);
    assert!(
        p.server.outgoing.len() < 256,
        "{} bytes of records held for the client",
        p.server.outgoing.len()
    );
    // Our answer goes with our next record; then the client reads on as before.
    p.pipe().room = None;
    p.server_writes(b"answer");
    p.run();
    assert_eq!(p.back, b"answer");
}
