//! Test doubles: run a protocol against a string transport and a manual clock, no sockets.
//!
//! [`Harness`] runs one connection through the same code the reactor runs
//! (`crate::connection`: reading, backpressure, producers, the close phases), on an in-memory
//! socket: bytes in with `feed`, bytes out with `take_output`, time with `advance`. Its peer
//! reads nothing until the test takes the output, so output piles up, producers pause and
//! reading stops exactly as they would against a client that does not read.

use std::any::Any;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use crate::address::Address;
use crate::connection::{After, Conn, Driver};
use crate::error::Reason;
use crate::output::Socket;
use crate::protocol::{DatagramProtocol, Protocol};
use crate::reactor::{Command, Handle, ReactorConfig};
use crate::timer::{Clock, Target};
use crate::transport::{ConnId, ConnState, DatagramTransport, Flag, Phase};

pub mod mutate;
mod relay;
pub use relay::RelayHarness;

/// The peer's end of a string transport.
#[derive(Default)]
struct MemorySocket {
    /// What the peer sent and the connection has not read yet.
    input: VecDeque<u8>,
    /// The peer shut its sending side down after `input`.
    input_eof: bool,
    /// What the peer received and the test has not taken yet.
    received: Vec<u8>,
    /// How much more the peer takes before a send would block.
    room: usize,
    /// `start_tls` happened: the test plays the peer's side of it in plaintext.
    tls: bool,
    /// Our side shut down its sending side: the peer has read our FIN.
    write_shut: bool,
    /// The next read fails with this (a reset by the peer).
    error: Option<io::ErrorKind>,
    /// What the kernel would still hold to send (`Socket::queued_out`), as a test sets it.
    kernel: u32,
    /// A TLS handshake is going on (`Socket::handshaking`), as a test sets it.
    handshake: bool,
}

impl Read for MemorySocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(kind) = self.error {
            return Err(kind.into());
        }
        if self.input.is_empty() {
            return if self.input_eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let (a, b) = self.input.as_slices();
        let n = buf.len().min(a.len());
        buf[..n].copy_from_slice(&a[..n]);
        let m = (buf.len() - n).min(b.len());
        buf[n..n + m].copy_from_slice(&b[..m]);
        self.input.drain(..n + m);
        Ok(n + m)
    }
}

impl Socket for MemorySocket {
    fn send(&mut self, buf: &[u8], _more: bool) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.room);
        self.received.extend_from_slice(&buf[..n]);
        self.room -= n;
        Ok(n)
    }

    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut chunk = vec![0u8; len.min(self.room).min(1 << 20)];
        let n = file.read_at(&mut chunk, offset)?;
        self.received.extend_from_slice(&chunk[..n]);
        self.room -= n;
        Ok(n)
    }

    fn set_cork(&mut self, _on: bool) {}

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.write_shut = true;
        Ok(())
    }

    fn queued_out(&mut self) -> u32 {
        self.kernel
    }

    fn handshaking(&self) -> bool {
        self.handshake
    }

    /// No real handshake in tests: the connection goes on in plaintext, marked secure.
    fn start_tls(&mut self, _config: std::sync::Arc<rustls::ServerConfig>) -> io::Result<()> {
        self.tls = true;
        Ok(())
    }
}

/// One protocol instance on a string transport.
pub struct Harness<P: Protocol + 'static> {
    /// The protocol under test, open for inspection.
    pub proto: P,
    conn: Conn<MemorySocket>,
    handle: Handle,
    buf: Vec<u8>,
    lost: Option<Reason>,
}

impl<P: Protocol + 'static> Harness<P> {
    /// A harness whose peer is 127.0.0.1:54321 and host 127.0.0.1:7.
    pub fn new(proto: P) -> Self {
        let clock = Clock::new();
        let handle = Handle::detached(clock.clone());
        let peer = Address::Tcp(SocketAddr::from(([127, 0, 0, 1], 54321)));
        let host = Address::Tcp(SocketAddr::from(([127, 0, 0, 1], 7)));
        let st = ConnState::new(ConnId::new(0, 1), peer, host, "Test", 0, clock.tick());
        Harness {
            proto,
            conn: Conn::new(MemorySocket::default(), st),
            handle,
            buf: vec![0; ReactorConfig::default().read_buffer],
            lost: None,
        }
    }

    /// Runs one step of the connection's life and what follows from it, as the reactor's
    /// turn would: re-drives while work is left, and the close with its `connection_lost`.
    fn run(
        &mut self,
        step: impl FnOnce(&mut Conn<MemorySocket>, &mut dyn Protocol, &mut Driver<'_>) -> After,
    ) {
        if self.lost.is_some() {
            return;
        }
        let cfg = ReactorConfig::default();
        let mut d = Driver::new(&self.handle, &mut self.buf, &cfg);
        let mut after = step(&mut self.conn, &mut self.proto, &mut d);
        // Bounded, like the reactor's re-drive loop; a connection never needs this many.
        for _ in 0..10_000 {
            match after {
                After::Settled => return,
                After::Again => after = self.conn.drive(&mut self.proto, &mut d, false, false),
                After::Close(r) => {
                    self.conn.lost(&mut self.proto, &mut d, &r);
                    self.lost = Some(r);
                    return;
                }
            }
        }
        panic!("still re-driven after 10,000 drives: the connection spins");
    }

    /// `connection_made`.
    pub fn connect(&mut self) -> &mut Self {
        self.run(|c, p, d| c.callback(p, d, |p, t| p.connection_made(t)));
        self
    }

    /// The peer sends `data` in one piece.
    pub fn feed(&mut self, data: &[u8]) -> &mut Self {
        self.conn.socket.input.extend(data);
        self.run(|c, p, d| c.drive(p, d, true, false));
        self
    }

    /// The peer sends `data` in `chunk`-byte pieces.
    pub fn feed_chunked(&mut self, data: &[u8], chunk: usize) -> &mut Self {
        for piece in data.chunks(chunk.max(1)) {
            self.feed(piece);
        }
        self
    }

    /// The peer half-closes (after what it sent, which is still read first).
    pub fn eof(&mut self) -> &mut Self {
        self.conn.socket.input_eof = true;
        self.run(|c, p, d| c.drive(p, d, true, false));
        self
    }

    /// The server is shutting down.
    pub fn stop_requested(&mut self) -> &mut Self {
        self.run(|c, p, d| c.stop_requested(p, d));
        self
    }

    /// The server drains after a hand-over.
    pub fn handover_requested(&mut self) -> &mut Self {
        self.run(|c, p, d| c.handover_requested(p, d));
        self
    }

    /// Delivers a `Handle::notify` message.
    pub fn notify(&mut self, msg: Box<dyn Any>) -> &mut Self {
        self.run(|c, p, d| c.callback(p, d, move |p, t| p.notified(t, msg)));
        self
    }

    /// Waits, at most `timeout`, for the work this connection gave to worker threads
    /// (`Transport::call_in_thread`) and delivers each result to the protocol's `notified`,
    /// as the reactor would; work queued from `notified` is waited for too. Returns how many
    /// results were delivered. Without it a protocol that defers to threads could only be
    /// tested by faking the result with [`Harness::notify`].
    pub fn wait_for_threads(&mut self, timeout: Duration) -> usize {
        let deadline = crate::timer::later(std::time::Instant::now(), timeout);
        let mut delivered = 0;
        loop {
            let mut others = Vec::new();
            while let Some(cmd) = self.handle.pop_command() {
                match cmd {
                    Command::Notify(id, msg) if id == self.conn.st.id => {
                        if self.lost.is_none() {
                            delivered += 1;
                        }
                        self.notify(msg);
                    }
                    other => others.push(other),
                }
            }
            // Commands for other connections stay queued for whoever looks, in order.
            for cmd in others {
                self.handle.push(cmd);
            }
            let now = std::time::Instant::now();
            if self.handle.threads_pending() == 0 || now >= deadline {
                return delivered;
            }
            self.handle.wait_for_threads(deadline - now);
        }
    }

    /// What was written and not yet taken (up to the first queued file).
    pub fn output(&self) -> &[u8] {
        self.conn.st.out.pending()
    }

    /// Takes everything written so far, as a peer reading it all would. While input the peer
    /// sent waits unread (reading stopped when the output backed up), the peer goes on
    /// reading, so the answers to all of it come out; a closing connection then sees the
    /// peer's EOF (the peer read our FIN) and closes.
    pub fn take_output(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut tail = false;
        for _ in 0..100_000 {
            self.conn.socket.room = self.conn.st.buffered();
            self.run(|c, p, d| c.drive(p, d, false, true));
            out.append(&mut self.conn.socket.received);
            let st = &self.conn.st;
            let unread =
                !self.conn.socket.input.is_empty() && st.reads() && !st.is(Flag::ReadPaused);
            if unread && self.lost.is_none() {
                continue;
            }
            // The answers to the last of the input, once.
            if tail || self.lost.is_some() || st.buffered() == 0 {
                break;
            }
            tail = true;
        }
        self.conn.socket.room = 0;
        if self.conn.st.phase() == Phase::Lingering {
            self.conn.socket.input_eof = true;
            self.run(|c, p, d| c.drive(p, d, true, false));
        }
        out
    }

    /// Takes output until no more comes (bounded): a peer that goes on reading for as long as
    /// the protocol produces, across every drain of its output (a producer resumed, a step
    /// budget taken up again).
    pub fn take_all_output(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let more = self.take_output();
            if more.is_empty() {
                break;
            }
            out.extend(more);
        }
        out
    }

    /// Moves the clock and fires what came due: protocol timers and idle timeouts.
    pub fn advance(&mut self, d: Duration) -> &mut Self {
        self.handle.clock().advance(d);
        let now = self.handle.now();
        let timers = self.handle.timers().clone();
        while let Some(t) = timers.pop_due(now) {
            match t {
                Target::Call(f) => f(),
                Target::Conn(id, key) if id == self.conn.st.id => {
                    self.run(|c, p, d| c.timer(p, d, key));
                }
                Target::Conn(..) => {}
            }
        }
        self
    }

    /// The protocol asked to close (`lose_connection`), or the connection closed.
    pub fn disconnecting(&self) -> bool {
        self.conn.st.disconnecting()
    }

    /// The protocol asked to half-close (`lose_write_connection`).
    pub fn write_closed(&self) -> bool {
        matches!(self.conn.st.phase(), Phase::HalfClosing | Phase::HalfClosed)
    }

    /// The protocol called `start_tls` and the upgrade took place (in tests, in plaintext).
    pub fn tls_started(&self) -> bool {
        self.conn.socket.tls
    }

    /// The protocol paused reading.
    pub fn reading_paused(&self) -> bool {
        self.conn.st.is(Flag::ReadPaused)
    }

    /// Why the connection was lost, once it was.
    pub fn lost(&self) -> Option<&Reason> {
        self.lost.as_ref()
    }

    /// The connection's reactor handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// Cuts `data` into pieces at the given offsets (taken modulo its length, sorted, each used
/// once): property tests feed sans-IO parsers every way a stream can be cut.
pub fn pieces<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut prev = 0;
    for c in at.into_iter().chain(std::iter::once(data.len())) {
        out.push(&data[prev..c]);
        prev = c;
    }
    out
}

/// A connection id for sans-IO tests of code that routes answers by id (no reactor issues it).
pub fn conn_id(n: u32) -> crate::transport::ConnId {
    crate::transport::ConnId::new(n, n)
}

/// A datagram port id for sans-IO tests, likewise.
pub fn port_id(n: u32) -> crate::reactor::PortId {
    crate::reactor::PortId { key: n, serial: n }
}

/// One datagram protocol on a list of sent datagrams.
pub struct DatagramHarness<P: DatagramProtocol> {
    /// The protocol under test, open for inspection.
    pub proto: P,
    handle: Handle,
    host: Address,
}

impl<P: DatagramProtocol> DatagramHarness<P> {
    /// A harness whose port is 127.0.0.1:7.
    pub fn new(proto: P) -> Self {
        DatagramHarness {
            proto,
            handle: Handle::detached(Clock::new()),
            host: Address::Udp(SocketAddr::from(([127, 0, 0, 1], 7))),
        }
    }

    /// Delivers one datagram and returns what the protocol sent in answer.
    pub fn receive(&mut self, data: &[u8], from: SocketAddr) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut sent: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
        let mut t = DatagramTransport {
            sink: &mut sent,
            host: &self.host,
            handle: &self.handle,
            port: crate::reactor::PortId { key: 0, serial: 0 },
        };
        self.proto.datagram_received(&mut t, data, from);
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Failure;
    use crate::transport::Transport;
    use std::rc::Rc;

    /// Echoes lines, closes on "quit", times out after 5 s idle, and has a timer.
    struct LineEcho {
        buf: Vec<u8>,
        ticks: u32,
    }

    impl Protocol for LineEcho {
        fn connection_made(&mut self, t: &mut Transport<'_>) {
            t.set_timeout(Some(Duration::from_secs(5)));
            t.call_later(Duration::from_secs(1), 42);
        }
        fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
            self.buf.extend_from_slice(data);
            while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                if line == b"quit\n" {
                    t.lose_connection();
                } else {
                    t.write(&line);
                }
            }
        }
        fn timer_fired(&mut self, _t: &mut Transport<'_>, key: u64) {
            assert_eq!(key, 42);
            self.ticks += 1;
        }
    }

    fn line_echo() -> Harness<LineEcho> {
        Harness::new(LineEcho {
            buf: Vec::new(),
            ticks: 0,
        })
    }

    #[test]
    fn every_chunking_gives_the_same_output() {
        let input = b"hello\nworld\nquit\nignored\n";
        for chunk in 1..=input.len() {
            let mut h = line_echo();
            h.connect().feed_chunked(input, chunk);
            assert_eq!(h.output(), b"hello\nworld\n", "chunk {chunk}");
            assert!(h.disconnecting());
            assert!(h.lost().is_none(), "not closed before the flush");
            h.take_output();
            assert!(h.lost().is_some_and(Reason::is_clean));
        }
    }

    #[test]
    fn timers_and_idle_timeout_fire_on_the_manual_clock() {
        let mut h = line_echo();
        h.connect();
        h.advance(Duration::from_millis(999));
        assert_eq!(h.proto.ticks, 0);
        h.advance(Duration::from_millis(1));
        assert_eq!(h.proto.ticks, 1);
        h.advance(Duration::from_secs(3));
        h.feed(b"x\n"); // activity at t=4 s pushes the timeout to t=9 s
        h.advance(Duration::from_secs(4));
        assert!(h.lost().is_none());
        h.advance(Duration::from_secs(1));
        assert!(matches!(h.lost(), Some(Reason::Aborted)));
    }

    struct Framed(Rc<std::fs::File>);
    impl Protocol for Framed {
        fn data_received(&mut self, t: &mut Transport<'_>, _d: &[u8]) {
            t.write(b"[");
            t.send_file(self.0.clone(), 1, 3);
            t.write(b"|");
            t.send_file(self.0.clone(), 0, 2);
            t.write(b"]");
        }
    }

    #[test]
    fn queued_files_and_bytes_come_out_in_order() {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, b"abcdef").unwrap();
        let mut h = Harness::new(Framed(Rc::new(f)));
        h.connect().feed(b"x");
        assert_eq!(h.take_output(), b"[bcd|ab]");
        h.feed(b"y");
        assert_eq!(
            h.take_output(),
            b"[bcd|ab]",
            "the queue empties and starts again"
        );
    }

    #[test]
    fn defer_to_thread_fires_on_the_calling_thread() {
        let h = line_echo();
        let d = h.handle().defer_to_thread(|| Ok::<_, Failure>(6 * 7));
        let got = std::rc::Rc::new(std::cell::Cell::new(0));
        let g = got.clone();
        d.add_callback(move |v| {
            g.set(v);
            Ok(v)
        });
        let failed = h
            .handle()
            .defer_to_thread(|| Err::<u8, _>(Failure::msg("disk on fire")));
        let msg = std::rc::Rc::new(std::cell::RefCell::new(String::new()));
        let m = msg.clone();
        failed.add_errback(move |f| {
            *m.borrow_mut() = f.to_string();
            Ok(0)
        });
        for _ in 0..50 {
            if h.handle().threads_pending() == 0 {
                break;
            }
            h.handle().wait_for_threads(Duration::from_millis(100));
        }
        assert_eq!(got.get(), 42);
        assert_eq!(*msg.borrow(), "disk on fire");
    }

    /// Answers each line with its upper case, computed on a worker thread, one at a time.
    #[derive(Default)]
    struct ThreadedUpper {
        lines: Vec<Vec<u8>>,
        busy: bool,
    }

    impl ThreadedUpper {
        fn next(&mut self, t: &mut Transport<'_>) {
            if !self.busy && !self.lines.is_empty() {
                let line = self.lines.remove(0);
                self.busy = true;
                t.call_in_thread(move || Ok::<_, Failure>(line.to_ascii_uppercase()));
            }
        }
    }

    impl Protocol for ThreadedUpper {
        fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
            self.lines
                .extend(data.split_inclusive(|b| *b == b'\n').map(<[u8]>::to_vec));
            self.next(t);
        }
        fn notified(&mut self, t: &mut Transport<'_>, msg: Box<dyn Any>) {
            if let Ok(r) = msg.downcast::<Result<Vec<u8>, Failure>>() {
                self.busy = false;
                t.write(&r.unwrap_or_else(|f| f.to_string().into_bytes()));
                self.next(t);
            }
        }
    }

    #[test]
    fn thread_results_reach_notified_in_the_harness() {
        let mut h = Harness::new(ThreadedUpper::default());
        h.connect().feed(b"one\ntwo\n");
        assert_eq!(h.output(), b"", "nothing before the worker answers");
        assert_eq!(h.wait_for_threads(Duration::from_secs(10)), 2);
        assert_eq!(h.take_output(), b"ONE\nTWO\n");
        assert_eq!(
            h.wait_for_threads(Duration::ZERO),
            0,
            "nothing left to wait for"
        );
    }

    /// Pauses reading after each piece it gets, until told to go on.
    #[derive(Default)]
    struct OneAtATime {
        got: Vec<Vec<u8>>,
    }

    impl Protocol for OneAtATime {
        fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
            self.got.push(data.to_vec());
            t.pause_producing();
        }
        fn notified(&mut self, t: &mut Transport<'_>, _msg: Box<dyn Any>) {
            t.resume_producing();
        }
    }

    #[test]
    fn paused_reading_leaves_input_with_the_peer_as_on_a_socket() {
        let mut h = Harness::new(OneAtATime::default());
        h.connect().feed(b"first");
        h.feed(b"second").feed(b"third");
        assert_eq!(
            h.proto.got,
            vec![b"first".to_vec()],
            "nothing read while paused"
        );
        assert!(h.reading_paused());
        h.notify(Box::new(()));
        assert_eq!(
            h.proto.got,
            vec![b"first".to_vec(), b"secondthird".to_vec()],
            "what waited is read at once on resume, in one read as a socket would give it"
        );
    }

    /// Writes 1 KiB per producing round, forever.
    #[derive(Default)]
    struct Stream {
        paused: u32,
    }

    impl Protocol for Stream {
        fn connection_made(&mut self, t: &mut Transport<'_>) {
            t.register_producer();
        }
        fn data_received(&mut self, _t: &mut Transport<'_>, _d: &[u8]) {}
        fn pause_producing(&mut self) {
            self.paused += 1;
        }
        fn resume_producing(&mut self, t: &mut Transport<'_>) {
            t.write(&[b'x'; 1024]);
        }
    }

    /// Writes 128 KiB at once, as chargen does, and keeps what it reads.
    #[derive(Default)]
    struct Eager {
        got: Vec<u8>,
    }

    impl Protocol for Eager {
        fn connection_made(&mut self, t: &mut Transport<'_>) {
            t.write(&[b'x'; 128 * 1024]);
        }
        fn data_received(&mut self, _t: &mut Transport<'_>, data: &[u8]) {
            self.got.extend_from_slice(data);
        }
    }

    /// Output past the high-water mark stops reading, except during a TLS handshake: the
    /// output waits for the handshake's end, which only reading brings. Before, a protocol
    /// that wrote that much at once (chargen over TLS) never finished a handshake.
    #[test]
    fn a_handshake_is_read_though_the_output_is_past_the_high_water_mark() {
        let mut h = Harness::new(Eager::default());
        h.conn.socket.handshake = true;
        h.connect().feed(b"handshake");
        assert_eq!(h.proto.got, b"handshake", "read during the handshake");
        h.conn.socket.handshake = false;
        h.feed(b"after");
        assert_eq!(h.proto.got, b"handshake", "not read once it is done");
        h.take_output();
        assert_eq!(h.proto.got, b"handshakeafter", "read once the output left");
    }

    #[test]
    fn a_producer_is_paused_at_the_high_water_mark_as_in_the_reactor() {
        let mut h = Harness::new(Stream::default());
        h.connect();
        let first = h.output().len();
        assert!(
            first >= 16 * 1024,
            "produced while below the low-water mark: {first}"
        );
        h.take_output();
        // Taking it all lets it produce again; it never runs past the high-water mark.
        assert!(h.output().len() < 64 * 1024 + 1024);
    }
}
