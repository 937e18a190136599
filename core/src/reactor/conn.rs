//! Connections in the reactor: the socket types, and the reactor's part of a connection's life
//! (registration, its slot, its factory's count). The life itself is `crate::connection`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd};

use mio::Interest;

use super::{Entry, Reactor};
use crate::connection::{After, Conn, Driver};
use crate::error::Reason;
use crate::output::Socket;
use crate::protocol::Protocol;
use crate::tls::stream::TlsStream;
use crate::transport::{ConnId, ConnState, Flag, Transport};
use rustls::ServerConfig;
use std::sync::Arc;

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
}

impl AsFd for Stream {
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

impl Socket for Stream {
    fn send(&mut self, buf: &[u8], more: bool) -> io::Result<usize> {
        if !more {
            return match self {
                Stream::Tcp(s) => s.write(buf),
                Stream::Unix(s) => s.write(buf),
            };
        }
        // SAFETY: a valid descriptor and a buffer of the given length.
        let n = unsafe {
            libc::send(
                self.as_fd().as_raw_fd(),
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

    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        let mut off = offset as libc::off_t;
        nix::sys::sendfile::sendfile(self.as_fd(), file.as_fd(), Some(&mut off), len)
            .map_err(io::Error::from)
    }

    /// TCP_CORK; on a UNIX socket there is nothing to do.
    fn set_cork(&mut self, on: bool) {
        if let Stream::Tcp(s) = self {
            set_option(s, libc::IPPROTO_TCP, libc::TCP_CORK, &libc::c_int::from(on));
        }
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }

    /// The sides of a compact relay are bare streams: without this, their idle check never
    /// saw a slow reader's kernel queue leaving.
    fn queued_out(&mut self) -> u32 {
        self.kernel_out()
    }
}

impl Stream {
    /// Nothing waits in the kernel either way: all written has gone out (a TCP socket's
    /// unsent queue is empty; what is in flight unacknowledged is the peer's already) and
    /// nothing the peer sent is unread. Only such a connection may be closed for room
    /// (`Factory::make_room`): a close with input unread is a reset, and so is the peer's
    /// next segment after the close, either of which throws away what the kernel had still
    /// to send (a response's tail, for a client that sends its next request before reading
    /// the last answer). A socket that cannot be asked counts as quiet.
    pub(crate) fn quiet(&self) -> bool {
        let fd = self.as_fd().as_raw_fd();
        let empty = |request| {
            let mut n: libc::c_int = 0;
            // SAFETY: a descriptor this stream owns, and a pointer to an int, as both
            // requests take.
            let r = unsafe { libc::ioctl(fd, request, &mut n) };
            r != 0 || n == 0
        };
        let unsent = matches!(self, Stream::Tcp(_)) && !empty(libc::SIOCOUTQNSD);
        !unsent && empty(libc::FIONREAD)
    }

    /// The bytes of output the kernel still holds for the peer (TCP: not yet acknowledged;
    /// UNIX: not yet read), 0 if it cannot say.
    pub(crate) fn kernel_out(&self) -> u32 {
        let mut n: libc::c_int = 0;
        // SAFETY: a descriptor this stream owns, and a pointer to an int, as SIOCOUTQ takes.
        let r = unsafe { libc::ioctl(self.as_fd().as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        if r == 0 {
            u32::try_from(n).unwrap_or(0)
        } else {
            0
        }
    }

    /// TCP_INFO's `tcpi_rto`: the retransmission timeout the kernel keeps for this
    /// connection (at least 200 ms; about the round trip plus four times its variation).
    /// None for a UNIX socket or if the kernel will not say.
    pub(crate) fn retransmit_timeout(&self) -> Option<std::time::Duration> {
        let Stream::Tcp(s) = self else {
            return None;
        };
        // SAFETY: tcp_info is plain integers, for which all zeroes is a valid value.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: a descriptor this stream owns, and a buffer of `len` bytes for the kernel to
        // fill (it writes at most `len`, and says how much in `len`).
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        // tcpi_rto ends at byte 12 of the structure; older kernels fill less than all of it.
        (r == 0 && len >= 12).then(|| std::time::Duration::from_micros(u64::from(info.tcpi_rto)))
    }

    /// SO_LINGER with a zero time: the close that follows sends a reset and drops what the
    /// kernel still holds to send (`Transport::reset_connection`).
    pub(crate) fn reset_on_close(&self) {
        if let Stream::Tcp(s) = self {
            let l = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            set_option(s, libc::SOL_SOCKET, libc::SO_LINGER, &l);
        }
    }
}

/// setsockopt with `value` as the option's value; its failure is not needed (a cork or a
/// linger that does not take leaves the socket working as before).
fn set_option<T>(s: &mio::net::TcpStream, level: libc::c_int, name: libc::c_int, value: &T) {
    // SAFETY: a descriptor `s` owns, and a pointer to a `T` of the size given.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        );
    }
}

/// A connection's socket in the reactor: plain, or TLS over it.
pub(crate) enum NetSocket {
    Plain(Stream),
    Tls(Box<TlsStream<Stream>>),
    /// An outgoing connection's TLS (`ssl:` client endpoints).
    TlsClient(Box<TlsStream<Stream, rustls::client::UnbufferedClientConnection>>),
    /// Only while `start_tls` swaps one for the other.
    Swapping,
}

impl NetSocket {
    pub(crate) fn stream(&mut self) -> Option<&mut Stream> {
        match self {
            NetSocket::Plain(s) => Some(s),
            NetSocket::Tls(t) => Some(t.socket_mut()),
            NetSocket::TlsClient(t) => Some(t.socket_mut()),
            NetSocket::Swapping => None,
        }
    }

    /// The kernel's retransmission timeout for the connection (TCP only), read each time:
    /// it follows the path's round-trip time, and is what a lost segment costs the peer.
    pub(crate) fn retransmit_timeout(&self) -> Option<std::time::Duration> {
        let s = match self {
            NetSocket::Plain(s) => s,
            NetSocket::Tls(t) => t.socket(),
            NetSocket::TlsClient(t) => t.socket(),
            NetSocket::Swapping => return None,
        };
        s.retransmit_timeout()
    }

    pub(crate) fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        self.stream().map(Stream::source)
    }
}

fn swapping() -> io::Error {
    io::Error::other("the socket is being upgraded")
}

impl Read for NetSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            NetSocket::Plain(s) => s.read(buf),
            NetSocket::Tls(t) => t.read(buf),
            NetSocket::TlsClient(t) => t.read(buf),
            NetSocket::Swapping => Err(swapping()),
        }
    }
}

impl Socket for NetSocket {
    fn send(&mut self, buf: &[u8], more: bool) -> io::Result<usize> {
        match self {
            NetSocket::Plain(s) => s.send(buf, more),
            NetSocket::Tls(t) => t.send(buf, more),
            NetSocket::TlsClient(t) => t.send(buf, more),
            NetSocket::Swapping => Err(swapping()),
        }
    }

    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        match self {
            NetSocket::Plain(s) => s.send_file(file, offset, len),
            NetSocket::Tls(t) => t.send_file(file, offset, len),
            NetSocket::TlsClient(t) => t.send_file(file, offset, len),
            NetSocket::Swapping => Err(swapping()),
        }
    }

    fn set_cork(&mut self, on: bool) {
        match self {
            NetSocket::Plain(s) => s.set_cork(on),
            NetSocket::Tls(t) => t.set_cork(on),
            NetSocket::TlsClient(t) => t.set_cork(on),
            NetSocket::Swapping => {}
        }
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            NetSocket::Plain(s) => s.shutdown_write(),
            NetSocket::Tls(t) => t.shutdown_write(),
            NetSocket::TlsClient(t) => t.shutdown_write(),
            NetSocket::Swapping => Err(swapping()),
        }
    }

    fn flush_pending(&mut self) -> io::Result<bool> {
        match self {
            NetSocket::Tls(t) => t.flush_pending(),
            NetSocket::TlsClient(t) => t.flush_pending(),
            _ => Ok(true),
        }
    }

    fn pending(&self) -> bool {
        match self {
            NetSocket::Tls(t) => t.pending(),
            NetSocket::TlsClient(t) => t.pending(),
            _ => false,
        }
    }

    fn queued_out(&mut self) -> u32 {
        self.stream().map_or(0, |s| s.kernel_out())
    }

    fn read_ahead(&self) -> bool {
        match self {
            NetSocket::Tls(t) => t.read_ahead(),
            NetSocket::TlsClient(t) => t.read_ahead(),
            _ => false,
        }
    }

    fn handshaking(&self) -> bool {
        match self {
            NetSocket::Tls(t) => t.handshaking(),
            NetSocket::TlsClient(t) => t.handshaking(),
            _ => false,
        }
    }

    fn took_input(&self) -> bool {
        match self {
            NetSocket::Tls(t) => t.took_input(),
            NetSocket::TlsClient(t) => t.took_input(),
            _ => false,
        }
    }

    fn start_tls(&mut self, config: Arc<ServerConfig>) -> io::Result<()> {
        match std::mem::replace(self, NetSocket::Swapping) {
            NetSocket::Plain(s) => {
                *self = NetSocket::Tls(Box::new(TlsStream::new(s, config)?));
                Ok(())
            }
            other => {
                *self = other;
                Err(io::Error::other("the connection is TLS already"))
            }
        }
    }
}

/// `Connection::factory` of a connection that belongs to no factory.
const NO_FACTORY: u32 = u32::MAX;

/// An open connection in the reactor.
pub(crate) struct Connection {
    pub(crate) conn: Conn<NetSocket>,
    pub(crate) proto: Box<dyn Protocol>,
    /// The factory whose connection count this connection holds, `NO_FACTORY` for outgoing
    /// ones (4 bytes where an `Option<u32>` takes 8).
    factory: u32,
    /// Which of the factory's listener endpoints accepted it (an index into its `origins`).
    pub(crate) origin: u32,
}

impl Connection {
    /// The factory whose connection count this connection holds (none for outgoing ones).
    pub(crate) fn factory(&self) -> Option<u32> {
        (self.factory != NO_FACTORY).then_some(self.factory)
    }
}

impl Reactor {
    pub(crate) fn conn_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        match self.entries.get_mut(id.key as usize) {
            Some(Entry::Conn(c)) if c.conn.st.id == id => Some(c),
            _ => None,
        }
    }

    /// Registers a new connection and tells its protocol.
    pub(crate) fn add_connection(
        &mut self,
        key: usize,
        mut socket: NetSocket,
        proto: Box<dyn Protocol>,
        st: ConnState,
        factory: Option<(u32, u32)>,
    ) -> io::Result<()> {
        let source = socket.source().ok_or_else(swapping)?;
        self.poll.registry().register(
            source,
            mio::Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.adopt_connection(key, socket, proto, st, factory);
        Ok(())
    }

    /// `add_connection` for a socket already registered for reading and writing under
    /// `Token(key)` (an outgoing connection keeps the registration it connected with).
    pub(crate) fn adopt_connection(
        &mut self,
        key: usize,
        socket: NetSocket,
        proto: Box<dyn Protocol>,
        mut st: ConnState,
        factory: Option<(u32, u32)>,
    ) {
        if matches!(socket, NetSocket::Tls(_) | NetSocket::TlsClient(_)) {
            st.set(Flag::Secure, true);
            crate::connection::arm_handshake_timer(&mut st, &self.handle);
        }
        self.entries[key] = Entry::Conn(Connection {
            conn: Conn::new(socket, st),
            proto,
            factory: factory.map_or(NO_FACTORY, |(f, _)| f),
            origin: factory.map_or(0, |(_, o)| o),
        });
        self.live_conns += 1;
        self.with_conn(key, |p, t| p.connection_made(t));
    }

    /// Runs `step` on connection `key` with the reactor's driver, then does what it says. A
    /// connection joined in a relay is stepped with its peer, which its bytes go to.
    fn step(
        &mut self,
        key: usize,
        step: impl FnOnce(&mut Conn<NetSocket>, &mut dyn Protocol, &mut Driver<'_>) -> After,
    ) {
        let Some(Entry::Conn(c)) = self.entries.get(key) else {
            return;
        };
        let peer = c.conn.st.link().peer().filter(|p| {
            p.key as usize != key
                && matches!(self.entries.get(p.key as usize),
                    Some(Entry::Conn(b)) if b.conn.st.id == *p)
        });
        let mut d = Driver::new(&self.handle, &mut self.read_buf, &self.cfg);
        let after = match peer {
            Some(p) => {
                let Some((Entry::Conn(a), Entry::Conn(b))) =
                    self.entries.get2_mut(key, p.key as usize)
                else {
                    return;
                };
                let (after, peer_dirty) = crate::relay::step_joined(
                    &mut a.conn,
                    &mut *a.proto,
                    &mut b.conn,
                    &mut d,
                    step,
                );
                if peer_dirty {
                    self.redrive.push(p.key as usize);
                }
                after
            }
            None => {
                let Some(Entry::Conn(c)) = self.entries.get_mut(key) else {
                    return;
                };
                step(&mut c.conn, &mut *c.proto, &mut d)
            }
        };
        match after {
            After::Settled => {}
            After::Again => self.redrive.push(key),
            After::Close(r) => self.close(key, r),
        }
    }

    /// Runs one protocol callback, then flushes and settles the connection.
    pub(crate) fn with_conn(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut dyn Protocol, &mut Transport<'_>),
    ) {
        self.step(key, |c, p, d| c.callback(p, d, f));
    }

    /// Handles readiness (or a re-drive, with both false) for connection `key`.
    pub(crate) fn drive(&mut self, key: usize, readable: bool, writable: bool) {
        self.step(key, |c, p, d| c.drive(p, d, readable, writable));
    }

    /// A timer aimed at connection `key` came due.
    pub(crate) fn conn_timer_due(&mut self, key: usize, timer: u64) {
        self.step(key, |c, p, d| c.timer(p, d, timer));
    }

    /// Delivers `stop_requested` once per connection.
    pub(crate) fn stop_requested(&mut self, key: usize) {
        self.step(key, |c, p, d| c.stop_requested(p, d));
    }

    /// Delivers `handover_requested` (a drain after a hand-over) to connection `key`.
    pub(crate) fn handover_requested(&mut self, key: usize) {
        self.step(key, |c, p, d| c.handover_requested(p, d));
    }

    /// Closes whatever `key` is, tells its protocol, and frees the slot after the batch.
    pub(crate) fn close(&mut self, key: usize, reason: Reason) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        match std::mem::replace(entry, Entry::Closed) {
            Entry::Conn(mut c) => {
                if let Some(source) = c.conn.socket.source() {
                    let _ = self.poll.registry().deregister(source);
                }
                self.live_conns -= 1;
                // Plaintext written before a handshake that never ended was held for its end,
                // and never left: a relay's line must not count it as carried.
                if c.conn.tls_done() == Some(false) {
                    c.conn.st.out.sent = 0;
                }
                if let Some(f) = c.factory() {
                    let slot = &mut self.factories[f as usize];
                    let counts = &mut slot.origins[c.origin as usize].counts;
                    counts.closed_received += c.conn.st.received;
                    counts.closed_sent += c.conn.st.out.sent;
                    match c.conn.tls_done() {
                        Some(true) => counts.closed_tls_done += 1,
                        Some(false) => counts.closed_tls_failed += 1,
                        None => {}
                    }
                    self.connection_slot_freed(f as usize);
                }
                let mut d = Driver::new(&self.handle, &mut self.read_buf, &self.cfg);
                let fin_carried = c.conn.st.half_closed();
                c.conn.lost(&mut *c.proto, &mut d, &reason);
                self.relay_side_closed(&c.conn.st, &reason, fin_carried);
                if matches!(reason, Reason::Aborted)
                    && c.conn.st.wants_reset()
                    && let Some(s) = c.conn.socket.stream()
                {
                    s.reset_on_close();
                }
                // The socket closes here, after the protocol heard.
                drop(c);
            }
            Entry::Connecting(c) => {
                *entry = Entry::Connecting(c);
                if let Some(c) = self.take_connecting(key) {
                    let e = std::io::Error::other(reason.to_string());
                    self.connect_failed(c.attempt, crate::client::ConnectError::Io(e));
                }
            }
            other => {
                *entry = other;
                return;
            }
        }
        self.to_free.push(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compact relay's sides are bare streams: their idle check must see what the kernel
    /// still holds for a reader that has not taken it (it saw 0 before, and cut slow
    /// readers).
    #[test]
    fn a_bare_stream_reports_what_its_peer_has_not_read() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        a.set_nonblocking(true).expect("nonblocking");
        let mut s = Stream::Unix(mio::net::UnixStream::from_std(a));
        assert_eq!(Socket::queued_out(&mut s), 0);
        let n = Socket::send(&mut s, &[1u8; 1000], false).expect("sent");
        assert_eq!(n, 1000);
        // A UNIX socket counts the memory its unread messages hold: at least the bytes.
        assert!(Socket::queued_out(&mut s) >= 1000);
    }
}
