//! Test doubles: run a protocol against a string transport and a manual clock, no sockets.
//!
//! [`Harness`] plays the reactor's part for one connection: bytes in with `feed`, bytes out with
//! `take_output` (which also drives producers, as a peer reading would), time with `advance`.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Duration;

use crate::address::Address;
use crate::error::Reason;
use crate::protocol::{DatagramProtocol, Protocol};
use crate::reactor::Handle;
use crate::timer::{Clock, Target};
use crate::transport::{ConnId, ConnState, DatagramTransport, IDLE_KEY, Transport, flags};

/// The default high- and low-water marks, as the reactor's defaults.
const HIGH_WATER: usize = 64 * 1024;
const LOW_WATER: usize = 16 * 1024;

/// One protocol instance on a string transport.
pub struct Harness<P: Protocol> {
    /// The protocol under test, open for inspection.
    pub proto: P,
    st: ConnState,
    handle: Handle,
    lost: Option<Reason>,
}

impl<P: Protocol> Harness<P> {
    /// A harness whose peer is 127.0.0.1:54321 and host 127.0.0.1:7.
    pub fn new(proto: P) -> Self {
        let clock = Clock::new();
        let handle = Handle::detached(clock.clone());
        let peer = Address::Tcp(SocketAddr::from(([127, 0, 0, 1], 54321)));
        let host = Address::Tcp(SocketAddr::from(([127, 0, 0, 1], 7)));
        Harness {
            proto,
            st: ConnState::new(ConnId::new(0, 1), peer, host, "Test", 0, clock.now()),
            handle,
            lost: None,
        }
    }

    fn call(&mut self, f: impl FnOnce(&mut P, &mut Transport<'_>)) {
        if self.lost.is_some() {
            return;
        }
        let mut t = Transport::new(&mut self.st, &self.handle);
        f(&mut self.proto, &mut t);
        self.settle();
    }

    /// Applies what the reactor would after a callback: aborts, producer pauses.
    fn settle(&mut self) {
        if self.st.has(flags::ABORT) {
            self.lose(Reason::Aborted);
            return;
        }
        if self.st.has(flags::PRODUCER)
            && self.st.buffered() >= HIGH_WATER
            && !self.st.has(flags::PRODUCER_PAUSED)
        {
            self.st.flags |= flags::PRODUCER_PAUSED;
            self.proto.pause_producing();
        }
    }

    fn lose(&mut self, r: Reason) {
        if self.lost.is_none() {
            self.st.flags |= flags::ABORT;
            self.st.cancel_timers();
            let mut t = Transport::new(&mut self.st, &self.handle);
            self.proto.connection_lost(&mut t, &r);
            self.lost = Some(r);
        }
    }

    /// `connection_made`.
    pub fn connect(&mut self) -> &mut Self {
        self.call(|p, t| p.connection_made(t));
        self
    }

    /// `data_received` with `data` in one piece.
    pub fn feed(&mut self, data: &[u8]) -> &mut Self {
        self.st.last_activity = self.handle.now();
        self.call(|p, t| p.data_received(t, data));
        self
    }

    /// `data_received` once per `chunk`-byte piece of `data`.
    pub fn feed_chunked(&mut self, data: &[u8], chunk: usize) -> &mut Self {
        for piece in data.chunks(chunk.max(1)) {
            self.feed(piece);
        }
        self
    }

    /// The peer half-closed.
    pub fn eof(&mut self) -> &mut Self {
        self.st.flags |= flags::EOF_RECEIVED;
        self.call(|p, t| p.read_eof(t));
        self
    }

    /// The server is shutting down.
    pub fn stop_requested(&mut self) -> &mut Self {
        self.call(|p, t| p.stop_requested(t));
        self
    }

    /// Delivers a `Handle::notify` message.
    pub fn notify(&mut self, msg: Box<dyn Any>) -> &mut Self {
        self.call(move |p, t| p.notified(t, msg));
        self
    }

    /// What was written and not yet taken (up to the first queued file).
    pub fn output(&self) -> &[u8] {
        self.st.pending()
    }

    /// Takes everything written so far, as a peer reading it all would; then closes a losing
    /// connection and resumes a paused producer, as the reactor would after a flush.
    pub fn take_output(&mut self) -> Vec<u8> {
        let out = self
            .st
            .take_all()
            .expect("queued file regions are readable");
        if self.lost.is_none() {
            if self.st.has(flags::LOSING) {
                self.lose(Reason::Done);
            } else if self.st.has(flags::PRODUCER) && self.st.buffered() < LOW_WATER {
                self.st.flags &= !flags::PRODUCER_PAUSED;
                self.call(|p, t| p.resume_producing(t));
            }
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
                Target::Conn(_, IDLE_KEY) => {
                    if self.st.idle_due(now, &timers) {
                        self.call(|p, t| p.timeout_connection(t));
                    }
                }
                Target::Conn(_, key) => self.call(|p, t| p.timer_fired(t, key)),
            }
        }
        self
    }

    /// The protocol asked to close after flushing (`lose_connection`).
    pub fn disconnecting(&self) -> bool {
        self.st.has(flags::LOSING)
    }

    /// The protocol asked to half-close (`lose_write_connection`).
    pub fn write_closed(&self) -> bool {
        self.st.has(flags::WRITE_EOF)
    }

    /// The protocol paused reading.
    pub fn reading_paused(&self) -> bool {
        self.st.has(flags::READ_PAUSED)
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

/// One datagram protocol on a list of sent datagrams.
pub struct DatagramHarness<P: DatagramProtocol> {
    pub proto: P,
    handle: Handle,
    host: Address,
}

impl<P: DatagramProtocol> DatagramHarness<P> {
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
        };
        self.proto.datagram_received(&mut t, data, from);
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Failure;
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
}
