//! Driving one connection: flush, read until `WouldBlock`, backpressure, producers, close.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::Interest;

use super::{Entry, READS_PER_TURN, Reactor};
use crate::error::Reason;
use crate::protocol::Protocol;
use crate::transport::{ConnId, ConnState, Transport, flags};

/// How long a closing connection waits for the peer's EOF before it closes anyway.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
/// Timer key of the lingering close.
pub(crate) const LINGER_KEY: u64 = u64::MAX - 1;
/// The most a lingering connection reads and drops in one go before closing anyway.
const LINGER_BYTES: usize = 256 * 1024;

/// Reads and drops input of a closing connection; `Some` once it should close.
fn linger_read(stream: &mut Stream, buf: &mut [u8]) -> Option<Reason> {
    let mut total = 0;
    loop {
        match stream.read(buf) {
            Ok(0) => return Some(Reason::Done),
            Ok(n) => {
                total += n;
                if total > LINGER_BYTES {
                    return Some(Reason::Done);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Some(Reason::Done),
        }
    }
}

/// A connected stream socket.
pub(crate) enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    pub(crate) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl std::os::fd::AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An open connection: its socket, protocol and transport state.
pub(crate) struct Connection {
    pub(crate) stream: Stream,
    pub(crate) proto: Box<dyn Protocol>,
    pub(crate) st: ConnState,
    /// The factory whose connection count this connection holds (none for outgoing ones).
    pub(crate) factory: Option<u32>,
}

impl Reactor {
    pub(crate) fn conn_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        match self.entries.get_mut(id.key as usize) {
            Some(Entry::Conn(c)) if c.st.id == id => Some(c),
            _ => None,
        }
    }

    /// Registers a new connection and tells its protocol; returns its key.
    pub(crate) fn add_connection(
        &mut self,
        key: usize,
        mut stream: Stream,
        proto: Box<dyn Protocol>,
        st: ConnState,
        factory: Option<u32>,
    ) -> io::Result<()> {
        self.poll.registry().register(
            stream.source(),
            mio::Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.entries[key] = Entry::Conn(Connection {
            stream,
            proto,
            st,
            factory,
        });
        self.live_conns += 1;
        self.with_conn(key, |p, t| p.connection_made(t));
        Ok(())
    }

    /// Runs one protocol callback, then flushes and settles the connection's state.
    pub(crate) fn with_conn(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut dyn Protocol, &mut Transport<'_>),
    ) {
        let handle = self.handle.clone();
        if let Some(Entry::Conn(c)) = self.entries.get_mut(key) {
            let mut t = Transport::new(&mut c.st, &handle);
            f(&mut *c.proto, &mut t);
        }
        self.drive(key, false, false);
    }

    /// Handles readiness (or a re-drive, with both false) for connection `key`.
    pub(crate) fn drive(&mut self, key: usize, readable: bool, writable: bool) {
        let (hw, lw) = (self.cfg.high_water, self.cfg.low_water);
        let handle = &self.handle;
        let buf = &mut self.read_buf[..];
        let Some(Entry::Conn(c)) = self.entries.get_mut(key) else {
            return;
        };
        let mut outcome: Option<Reason> = None;
        // Output progress counts as activity for the idle timeout, as input does: a download
        // that is moving is never cut (nginx's send_timeout is between two writes too).
        let sent_before = c.st.sent;
        if c.st.has(flags::LINGER) {
            // Closing: our side is shut; read and drop what the peer still sends until its
            // EOF, so the kernel never answers that data with a reset that could destroy the
            // response before the peer has read it (nginx's lingering close).
            if readable && let Some(r) = linger_read(&mut c.stream, buf) {
                self.close(key, r);
            }
            return;
        }
        if writable && let Err(e) = c.st.flush_to(&mut c.stream) {
            outcome = Some(Reason::Io(e));
        }
        let mut want_read = readable || c.st.has(flags::READ_PENDING);
        let mut reads = 0;
        let mut budget_spent = false;
        // Reading and producing can each free or fill the buffer; settle in a bounded loop,
        // and come back next turn if work is left (no readiness edge would bring us back).
        let mut more = false;
        for _ in 0..4 {
            more = false;
            if outcome.is_some() {
                break;
            }
            if want_read {
                want_read = false;
                c.st.flags &= !flags::READ_PENDING;
                loop {
                    if c.st.has(flags::READ_PAUSED | flags::LOSING | flags::ABORT)
                        || c.st.buffered() >= hw
                    {
                        if !c.st.has(flags::EOF_RECEIVED) {
                            c.st.flags |= flags::READ_PENDING;
                        }
                        break;
                    }
                    if c.st.has(flags::EOF_RECEIVED) {
                        break;
                    }
                    if reads >= READS_PER_TURN {
                        c.st.flags |= flags::READ_PENDING;
                        budget_spent = true;
                        break;
                    }
                    match c.stream.read(buf) {
                        Ok(0) => {
                            c.st.flags |= flags::EOF_RECEIVED;
                            let mut t = Transport::new(&mut c.st, handle);
                            c.proto.read_eof(&mut t);
                            break;
                        }
                        Ok(n) => {
                            reads += 1;
                            c.st.last_activity = handle.now();
                            let mut t = Transport::new(&mut c.st, handle);
                            c.proto.data_received(&mut t, &buf[..n]);
                            // A short read drained the socket: epoll will report new data
                            // (but not a FIN it already reported).
                            if n < buf.len() && !c.st.has(flags::PEER_CLOSED) {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            outcome = Some(Reason::Io(e));
                            break;
                        }
                    }
                }
            }
            if outcome.is_some() || c.st.has(flags::ABORT) {
                break;
            }
            if let Err(e) = c.st.flush_to(&mut c.stream) {
                outcome = Some(Reason::Io(e));
                break;
            }
            // Producer flow control (Twisted's IPushProducer on the transport).
            if c.st.has(flags::PRODUCER) && !c.st.has(flags::LOSING) {
                if c.st.buffered() >= hw {
                    if !c.st.has(flags::PRODUCER_PAUSED) {
                        c.st.flags |= flags::PRODUCER_PAUSED;
                        c.proto.pause_producing();
                    }
                } else if c.st.buffered() < lw {
                    c.st.flags &= !flags::PRODUCER_PAUSED;
                    let mut t = Transport::new(&mut c.st, handle);
                    c.proto.resume_producing(&mut t);
                    if c.st.buffered() > 0 {
                        more = true;
                        continue;
                    }
                }
            }
            if c.st.has(flags::READ_PENDING)
                && !budget_spent
                && !c.st.has(flags::READ_PAUSED)
                && c.st.buffered() < lw
            {
                want_read = true;
                more = true;
                continue;
            }
            break;
        }
        if c.st.sent != sent_before {
            c.st.last_activity = handle.now();
        }
        if outcome.is_none() {
            if c.st.has(flags::ABORT) {
                outcome = Some(Reason::Aborted);
            } else if c.st.buffered() == 0 {
                if c.st.has(flags::LOSING) {
                    if c.st.has(flags::EOF_RECEIVED) || c.stream.shutdown_write().is_err() {
                        outcome = Some(Reason::Done);
                    } else {
                        c.st.flags |= flags::LINGER | flags::WRITE_SHUT;
                        let id = c.st.id;
                        let linger = self
                            .handle
                            .timers()
                            .schedule(LINGER_TIME, crate::timer::Target::Conn(id, LINGER_KEY));
                        c.st.track_timer(linger);
                        // Whatever already arrived is dropped now; the rest as it comes.
                        if let Some(Entry::Conn(c)) = self.entries.get_mut(key)
                            && let Some(r) = linger_read(&mut c.stream, &mut self.read_buf)
                        {
                            outcome = Some(r);
                        }
                    }
                } else if c.st.has(flags::WRITE_EOF) && !c.st.has(flags::WRITE_SHUT) {
                    c.st.flags |= flags::WRITE_SHUT;
                    if let Err(e) = c.stream.shutdown_write() {
                        outcome = Some(Reason::Io(e));
                    } else if c.st.has(flags::EOF_RECEIVED) {
                        outcome = Some(Reason::Done);
                    }
                } else if c.st.has(flags::WRITE_SHUT) && c.st.has(flags::EOF_RECEIVED) {
                    outcome = Some(Reason::Done);
                }
            }
        }
        if (budget_spent || more) && outcome.is_none() {
            self.redrive.push(key);
        }
        if let Some(r) = outcome {
            self.close(key, r);
        }
    }

    /// Closes whatever `key` is, tells its protocol, and frees the slot after the batch.
    pub(crate) fn close(&mut self, key: usize, reason: Reason) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        match std::mem::replace(entry, Entry::Closed) {
            Entry::Conn(mut c) => {
                c.st.cancel_timers();
                let _ = self.poll.registry().deregister(c.stream.source());
                drop(c.stream);
                self.live_conns -= 1;
                if let Some(f) = c.factory {
                    self.connection_slot_freed(f as usize);
                }
                // Twisted's transport is still there in connectionLost: the protocol can read
                // what was sent; anything it writes now is dropped.
                c.st.flags |= flags::ABORT;
                let handle = self.handle.clone();
                let mut t = Transport::new(&mut c.st, &handle);
                c.proto.connection_lost(&mut t, &reason);
            }
            Entry::Connecting(mut c) => {
                let _ = self.poll.registry().deregister(&mut c.stream);
                self.live_conns -= 1;
                c.timer.cancel();
                c.factory.client_connection_failed(&reason);
            }
            other => {
                *entry = other;
                return;
            }
        }
        self.to_free.push(key);
    }

    /// An idle-timeout timer came due: time the connection out or look again later.
    pub(crate) fn idle_check(&mut self, key: usize) {
        let now = self.handle.now();
        let Some(Entry::Conn(c)) = self.entries.get_mut(key) else {
            return;
        };
        if c.st.idle_due(now, self.handle.timers()) {
            log::info!(target: &transport_system(&c.st), "Timing out idle connection.");
            self.with_conn(key, |p, t| p.timeout_connection(t));
        }
    }

    /// Delivers `stop_requested` once per connection.
    pub(crate) fn stop_requested(&mut self, key: usize) {
        if let Some(Entry::Conn(c)) = self.entries.get_mut(key) {
            if c.st.has(flags::STOPPING) {
                return;
            }
            c.st.flags |= flags::STOPPING;
            self.with_conn(key, |p, t| p.stop_requested(t));
        }
    }
}

fn transport_system(st: &ConnState) -> String {
    format!("{},{},{}", st.name, st.session, st.peer.host_string())
}
