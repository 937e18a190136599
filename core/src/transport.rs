//! `Transport`: what a protocol uses to talk to its peer (Twisted's `ITransport`).
//!
//! `write` only appends to the connection's output buffer and never blocks; the reactor flushes
//! after each callback. `lose_connection` closes once the buffer is flushed; `abort_connection`
//! closes now. The same `ConnState` backs a real socket in the reactor and a string transport in
//! [`crate::testing`], so protocols are unit-tested without sockets.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::address::Address;
use crate::reactor::Handle;
use crate::timer::{DelayedCall, Target, TimerQueue};

/// Identifies a connection for commands sent through a [`Handle`]; stale ids are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub(crate) key: u32,
    pub(crate) serial: u32,
}

impl ConnId {
    pub(crate) fn new(key: u32, serial: u32) -> Self {
        ConnId { key, serial }
    }
}

pub(crate) mod flags {
    /// `lose_connection` was called: close once the output is flushed.
    pub const LOSING: u16 = 1;
    /// `abort_connection` was called: close now, dropping output.
    pub const ABORT: u16 = 1 << 1;
    /// `lose_write_connection` was called: shut down our side once flushed.
    pub const WRITE_EOF: u16 = 1 << 2;
    /// Our write side is shut down.
    pub const WRITE_SHUT: u16 = 1 << 3;
    /// The peer's EOF arrived.
    pub const EOF_RECEIVED: u16 = 1 << 4;
    /// The protocol paused reading (`Transport::pause_producing`).
    pub const READ_PAUSED: u16 = 1 << 5;
    /// Reading stopped early (high-water mark, pause, budget): data may be waiting.
    pub const READ_PENDING: u16 = 1 << 6;
    /// The protocol registered itself as a streaming producer.
    pub const PRODUCER: u16 = 1 << 7;
    /// The producer was told to pause.
    pub const PRODUCER_PAUSED: u16 = 1 << 8;
    /// `stop_requested` was delivered.
    pub const STOPPING: u16 = 1 << 9;
    /// epoll reported the peer's FIN (or an error): read until EOF, a short read is not
    /// the end, since no further edge will come.
    pub const PEER_CLOSED: u16 = 1 << 10;
    /// TCP_CORK is set while queued files are being sent.
    pub const CORKED: u16 = 1 << 11;
    /// Closing: our side is shut down, the peer's last input is read and dropped.
    pub const LINGER: u16 = 1 << 12;
}

/// Output queued behind a file: more bytes, or a file region sent with sendfile(2).
pub(crate) enum Chunk {
    Bytes(Vec<u8>),
    File {
        file: Rc<File>,
        offset: u64,
        len: u64,
    },
}

/// Per-connection state that a [`Transport`] reads and writes.
pub struct ConnState {
    pub(crate) id: ConnId,
    /// Bytes to send first; everything written while no file is queued lands here.
    pub(crate) out: Vec<u8>,
    pub(crate) out_pos: usize,
    /// Output behind the first queued file; boxed so a connection without files stays small
    /// (8 bytes instead of 32 in every idle connection).
    #[allow(clippy::box_collection)]
    pub(crate) queue: Option<Box<VecDeque<Chunk>>>,
    /// Bytes (including file bytes) in `queue`.
    pub(crate) queued: u64,
    pub(crate) flags: u16,
    pub(crate) peer: Address,
    pub(crate) host: Address,
    pub(crate) name: &'static str,
    pub(crate) session: u32,
    pub(crate) idle: Option<Duration>,
    pub(crate) last_activity: Instant,
    /// The idle-timeout check; when it fires early (there was activity), it is re-armed.
    pub(crate) idle_timer: Option<DelayedCall>,
    /// Other timers aimed at this connection (protocol timers, the lingering close), all
    /// cancelled when it closes so none outlives it in the timer heap.
    pub(crate) timers: Vec<DelayedCall>,
    /// Bytes (files included) that left for the peer since the connection opened.
    pub(crate) sent: u64,
}

/// Key of the reactor's own idle-timeout timer entries.
pub(crate) const IDLE_KEY: u64 = u64::MAX;

impl ConnState {
    pub(crate) fn new(
        id: ConnId,
        peer: Address,
        host: Address,
        name: &'static str,
        session: u32,
        now: Instant,
    ) -> Self {
        ConnState {
            id,
            out: Vec::new(),
            out_pos: 0,
            queue: None,
            queued: 0,
            flags: 0,
            peer,
            host,
            name,
            session,
            idle: None,
            last_activity: now,
            idle_timer: None,
            timers: Vec::new(),
            sent: 0,
        }
    }

    /// Keeps `call` to cancel it at close; forgets the ones that already ran.
    pub(crate) fn track_timer(&mut self, call: DelayedCall) {
        self.timers.retain(DelayedCall::active);
        self.timers.push(call);
    }

    /// Cancels every timer aimed at this connection (it is closing).
    pub(crate) fn cancel_timers(&mut self) {
        if let Some(t) = self.idle_timer.take() {
            t.cancel();
        }
        for t in self.timers.drain(..) {
            t.cancel();
        }
    }

    /// The idle timer came due at `now`: true if the connection was idle for its whole
    /// timeout, else the timer is re-armed for what is left of it.
    pub(crate) fn idle_due(&mut self, now: Instant, timers: &Rc<TimerQueue>) -> bool {
        self.idle_timer = None;
        let Some(d) = self.idle else { return false };
        let due = self.last_activity + d;
        if now >= due {
            return true;
        }
        self.idle_timer = Some(timers.schedule(due - now, Target::Conn(self.id, IDLE_KEY)));
        false
    }

    pub(crate) fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    /// Bytes written by the protocol (files included) and not yet sent.
    pub(crate) fn buffered(&self) -> usize {
        self.out.len() - self.out_pos + self.queued as usize
    }

    pub(crate) fn pending(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// Records that `n` pending bytes were sent; frees the buffer when it empties.
    pub(crate) fn consumed(&mut self, n: usize) {
        self.sent += n as u64;
        self.out_pos += n;
        if self.out_pos >= self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            // An idle connection should hold no large buffer.
            if self.out.capacity() > 64 * 1024 {
                self.out = Vec::new();
            }
        } else if self.out_pos >= 64 * 1024 && self.out_pos * 2 >= self.out.len() {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
    }

    pub(crate) fn write(&mut self, data: &[u8]) {
        if data.is_empty() || self.has(flags::LOSING | flags::ABORT | flags::WRITE_EOF) {
            return;
        }
        match &mut self.queue {
            None => self.out.extend_from_slice(data),
            Some(q) => {
                self.queued += data.len() as u64;
                match q.back_mut() {
                    Some(Chunk::Bytes(b)) => b.extend_from_slice(data),
                    _ => q.push_back(Chunk::Bytes(data.to_vec())),
                }
            }
        }
    }

    pub(crate) fn send_file(&mut self, file: Rc<File>, offset: u64, len: u64) {
        if len == 0 || self.has(flags::LOSING | flags::ABORT | flags::WRITE_EOF) {
            return;
        }
        self.queued += len;
        self.queue
            .get_or_insert_with(Default::default)
            .push_back(Chunk::File { file, offset, len });
    }

    /// Moves the next queued bytes into `out`, or returns the file at the queue's head.
    fn advance_queue(&mut self) -> Option<(Rc<File>, u64, u64)> {
        loop {
            let q = self.queue.as_mut()?;
            match q.front_mut() {
                None => {
                    self.queue = None;
                    return None;
                }
                Some(Chunk::Bytes(b)) => {
                    self.queued -= b.len() as u64;
                    self.out = std::mem::take(b);
                    self.out_pos = 0;
                    q.pop_front();
                    if !self.out.is_empty() {
                        return None;
                    }
                }
                Some(Chunk::File { file, offset, len }) => {
                    return Some((file.clone(), *offset, *len));
                }
            }
        }
    }

    /// Records that `n` bytes of the file at the queue's head were sent.
    fn file_sent(&mut self, n: u64) {
        self.sent += n;
        self.queued -= n;
        if let Some(q) = self.queue.as_mut()
            && let Some(Chunk::File { offset, len, .. }) = q.front_mut()
        {
            *offset += n;
            *len -= n;
            if *len == 0 {
                q.pop_front();
            }
        }
    }

    /// Writes the output to a socket until it would block: bytes with write(2), file
    /// regions with sendfile(2), in the order they were queued.
    pub(crate) fn flush_to<W: io::Write + AsFd>(&mut self, w: &mut W) -> io::Result<()> {
        loop {
            // Bytes right before a file (an HTTP head) go with MSG_MORE, so the kernel sends
            // them in the file's first full packet instead of a small one of their own.
            let file_next = matches!(
                self.queue.as_ref().and_then(|q| q.front()),
                Some(Chunk::File { .. })
            );
            while self.out_pos < self.out.len() {
                let sent = if file_next {
                    send_more(w.as_fd(), self.pending())
                } else {
                    w.write(self.pending())
                };
                match sent {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => self.consumed(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            let Some((file, offset, len)) = self.advance_queue() else {
                if self.out_pos < self.out.len() {
                    continue;
                }
                if self.has(flags::CORKED) {
                    self.flags &= !flags::CORKED;
                    set_cork(w.as_fd(), false);
                }
                return Ok(());
            };
            if !self.has(flags::CORKED) {
                // As nginx's tcp_nopush: while a file goes out, only full segments are sent.
                self.flags |= flags::CORKED;
                set_cork(w.as_fd(), true);
            }
            let mut off = offset as libc::off_t;
            let count = len.min(1 << 30) as usize;
            match nix::sys::sendfile::sendfile(w.as_fd(), file.as_fd(), Some(&mut off), count) {
                // The file shrank under us: the promised length cannot be sent.
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.file_sent(n as u64),
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::from(e)),
            }
        }
    }

    /// Takes all pending output, reading queued file regions (for the string transport).
    pub(crate) fn take_all(&mut self) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut out = self.pending().to_vec();
        self.consumed(out.len());
        loop {
            match self.advance_queue() {
                Some((file, offset, len)) => {
                    let start = out.len();
                    out.resize(start + len as usize, 0);
                    file.read_exact_at(&mut out[start..], offset)?;
                    self.file_sent(len);
                }
                None if self.out_pos < self.out.len() => {
                    out.extend_from_slice(self.pending());
                    let n = self.out.len() - self.out_pos;
                    self.consumed(n);
                }
                None => return Ok(out),
            }
        }
    }
}

/// Sets or clears TCP_CORK; not a TCP socket (UNIX) is fine: nothing to do.
fn set_cork(fd: std::os::fd::BorrowedFd<'_>, on: bool) {
    use std::os::fd::AsRawFd;
    let v: libc::c_int = on.into();
    // SAFETY: setsockopt with a pointer to a c_int of the size given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// send(2) with MSG_MORE: more data follows at once.
fn send_more(fd: std::os::fd::BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor and a buffer of the given length.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_MORE | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A protocol's handle on its connection, valid for the duration of one callback.
pub struct Transport<'a> {
    pub(crate) st: &'a mut ConnState,
    pub(crate) handle: &'a Handle,
}

impl<'a> Transport<'a> {
    pub(crate) fn new(st: &'a mut ConnState, handle: &'a Handle) -> Self {
        Transport { st, handle }
    }

    /// Queues `data` for the peer. Never blocks; dropped after `lose_connection`/`abort`.
    pub fn write(&mut self, data: &[u8]) {
        self.st.write(data);
    }

    /// Queues `len` bytes of `file` from `offset`, sent with sendfile(2): no copy through user
    /// space, so memory stays flat however large the file. Output written after it follows it.
    pub fn send_file(&mut self, file: Rc<File>, offset: u64, len: u64) {
        self.st.send_file(file, offset, len);
    }

    /// Queues several buffers (Twisted's `writeSequence`).
    pub fn write_sequence(&mut self, parts: &[&[u8]]) {
        for p in parts {
            self.st.write(p);
        }
    }

    /// Closes the connection once everything written so far has been sent.
    pub fn lose_connection(&mut self) {
        self.st.flags |= flags::LOSING;
    }

    /// Closes the connection now, dropping unsent output.
    pub fn abort_connection(&mut self) {
        self.st.flags |= flags::ABORT;
    }

    /// Shuts down our sending side once flushed; the peer may keep sending (half-close).
    pub fn lose_write_connection(&mut self) {
        self.st.flags |= flags::WRITE_EOF;
    }

    /// Stops reading from the peer until `resume_producing` (Twisted's `pauseProducing`).
    pub fn pause_producing(&mut self) {
        self.st.flags |= flags::READ_PAUSED;
    }

    /// Starts reading from the peer again.
    pub fn resume_producing(&mut self) {
        if self.st.has(flags::READ_PAUSED) {
            self.st.flags &= !flags::READ_PAUSED;
            self.st.flags |= flags::READ_PENDING;
        }
    }

    /// Registers the protocol as a streaming producer: the reactor calls its
    /// `pause_producing` when the output passes the high-water mark and `resume_producing`
    /// when it drains below the low-water mark.
    pub fn register_producer(&mut self) {
        self.st.flags |= flags::PRODUCER;
    }

    /// Stops producer callbacks.
    pub fn unregister_producer(&mut self) {
        self.st.flags &= !(flags::PRODUCER | flags::PRODUCER_PAUSED);
    }

    /// Bytes written but not yet sent.
    pub fn buffered(&self) -> usize {
        self.st.buffered()
    }

    /// Bytes (files included) that have left for the peer since the connection opened: a
    /// response written at total `n` is on the wire once `bytes_sent() >= n`.
    pub fn bytes_sent(&self) -> u64 {
        self.st.sent
    }

    /// Bytes (files included) written since the connection opened, sent or not.
    pub fn bytes_written(&self) -> u64 {
        self.st.sent + self.st.buffered() as u64
    }

    /// True once `lose_connection` or `abort_connection` was called.
    pub fn disconnecting(&self) -> bool {
        self.st.has(flags::LOSING | flags::ABORT)
    }

    /// The remote address.
    pub fn peer(&self) -> &Address {
        &self.st.peer
    }

    /// The local address.
    pub fn host(&self) -> &Address {
        &self.st.host
    }

    /// This connection's id, for commands sent through a [`Handle`] from elsewhere.
    pub fn id(&self) -> ConnId {
        self.st.id
    }

    /// The per-connection log system, Twisted's `logPrefix`: `Echo,3,127.0.0.1`.
    pub fn system(&self) -> String {
        format!(
            "{},{},{}",
            self.st.name,
            self.st.session,
            self.st.peer.host_string()
        )
    }

    /// Closes the connection after `timeout` without input or output progress
    /// (Twisted's `TimeoutMixin.setTimeout`); `None` turns it off.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        if self.st.has(flags::STOPPING)
            && let (Some(old), Some(new)) = (self.st.idle, timeout)
            && old < new
        {
            // While stopping, a protocol may shorten its idle timeout but not lengthen it.
            return;
        }
        self.st.idle = timeout;
        self.st.last_activity = self.handle.now();
        match (timeout, &self.st.idle_timer) {
            (None, _) => {
                if let Some(t) = self.st.idle_timer.take() {
                    t.cancel();
                }
            }
            // A later deadline is found when the timer fires early and re-arms.
            (Some(d), Some(t)) if t.active() => {
                if t.deadline() > self.st.last_activity + d {
                    t.reset(d);
                }
            }
            (Some(d), _) => {
                let t = self
                    .handle
                    .timers()
                    .schedule(d, Target::Conn(self.st.id, IDLE_KEY));
                self.st.idle_timer = Some(t);
            }
        }
    }

    /// Counts as activity for the idle timeout (Twisted's `resetTimeout`).
    pub fn reset_timeout(&mut self) {
        self.st.last_activity = self.handle.now();
    }

    /// Calls this protocol's `timer_fired(key)` after `delay`.
    /// The call is cancelled if the connection closes first.
    pub fn call_later(&mut self, delay: Duration, key: u64) -> DelayedCall {
        let call = self
            .handle
            .timers()
            .schedule(delay, Target::Conn(self.st.id, key));
        self.st.track_timer(call.clone());
        call
    }

    /// Runs blocking `f` on a worker thread (file and disk work) and delivers its outcome,
    /// a `Result<T, Failure>`, to this protocol's `notified` on the reactor thread; nothing
    /// is delivered if the connection closed first.
    pub fn call_in_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, crate::error::Failure> + Send + 'static,
    ) {
        let (h, id) = (self.handle.clone(), self.st.id);
        self.handle
            .defer_to_thread(f)
            .consume(move |r| h.notify(id, Box::new(r)));
    }

    /// The reactor, for timers, threads and commands to other connections.
    pub fn handle(&self) -> &Handle {
        self.handle
    }
}

/// Where a datagram transport sends to: a UDP socket, or a list in tests.
pub(crate) trait DatagramSink {
    fn send_to(&mut self, data: &[u8], to: SocketAddr) -> io::Result<usize>;
}

impl DatagramSink for mio::net::UdpSocket {
    fn send_to(&mut self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        mio::net::UdpSocket::send_to(self, data, to)
    }
}

impl DatagramSink for Vec<(Vec<u8>, SocketAddr)> {
    fn send_to(&mut self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.push((data.to_vec(), to));
        Ok(data.len())
    }
}

/// A datagram protocol's handle on its port (Twisted's UDP transport).
pub struct DatagramTransport<'a> {
    pub(crate) sink: &'a mut dyn DatagramSink,
    pub(crate) host: &'a Address,
    pub(crate) handle: &'a Handle,
}

impl DatagramTransport<'_> {
    /// Sends one datagram. UDP is lossy: a full socket buffer drops it, as the network would.
    pub fn write(&mut self, data: &[u8], to: SocketAddr) {
        if let Err(e) = self.sink.send_to(data, to) {
            log::debug!(target: "twistrs.udp", "datagram to {to} dropped: {e}");
        }
    }

    /// The local address.
    pub fn host(&self) -> &Address {
        self.host
    }

    /// The reactor.
    pub fn handle(&self) -> &Handle {
        self.handle
    }
}
