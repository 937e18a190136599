//! The output side of a connection: bytes and file regions queued in order, flushed to a
//! [`Socket`] until it would block.
//!
//! Bytes written while no file is queued go to one buffer; once a file region is queued,
//! what follows it waits in a queue behind it, so the peer receives everything in the order
//! it was written. File regions go out with sendfile(2) (no copy through user space), with
//! TCP_CORK on while they do and MSG_MORE on the bytes right before one, so a response head
//! and its body leave in full segments (nginx's `tcp_nopush`).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::rc::Rc;

/// What a connection's bytes go through: a TCP or UNIX socket in the reactor, a string of
/// bytes in tests (and later a TLS session).
pub(crate) trait Socket: io::Read {
    /// Sends some of `buf`; `more` says more data follows at once (MSG_MORE).
    fn send(&mut self, buf: &[u8], more: bool) -> io::Result<usize>;
    /// Sends up to `len` bytes of `file` from `offset` (sendfile(2)); 0 means the file ended.
    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize>;
    /// Holds partial segments back while a file goes out (TCP_CORK); a no-op where there are
    /// no segments.
    fn set_cork(&mut self, on: bool);
    /// Shuts our sending side down (TCP FIN; TLS's close_notify first).
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// Sends what the socket holds of its own (TLS records); `Ok(false)` if it would block.
    fn flush_pending(&mut self) -> io::Result<bool> {
        Ok(true)
    }

    /// True while the socket holds output of its own (TLS records) not yet sent.
    fn pending(&self) -> bool {
        false
    }

    /// True if the last read stopped short of something the socket already holds (TLS: a
    /// close_notify or an error that came behind the data returned): read again without
    /// waiting for readiness, which will not come for it.
    fn read_ahead(&self) -> bool {
        false
    }

    /// True until a TLS handshake has completed (never, for a plain socket).
    fn handshaking(&self) -> bool {
        false
    }

    /// True if the last read took bytes from the socket though it returned none (TLS:
    /// handshake records, alerts, a ticket): the peer is sending, which is activity for the
    /// idle timeout and progress for a handshake. A plain socket returns what it takes, so it
    /// never has to say.
    fn took_input(&self) -> bool {
        false
    }

    /// The bytes of output the kernel still holds for the peer (0 where there is no kernel
    /// socket): what the idle timeout watches leave (`ConnState::output_moving`).
    fn queued_out(&mut self) -> u32 {
        0
    }

    /// Becomes a TLS server session in place (STARTTLS); what was read before stays read.
    fn start_tls(&mut self, _config: std::sync::Arc<rustls::ServerConfig>) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this connection cannot start TLS",
        ))
    }
}

/// Output queued behind a file: more bytes, or a file region.
enum Chunk {
    Bytes(Vec<u8>),
    File {
        file: Rc<File>,
        offset: u64,
        len: u64,
    },
}

/// What is at the head of the queue once the byte buffer is empty.
enum Next {
    /// More bytes moved into the buffer.
    Bytes,
    File(Rc<File>, u64, u64),
    /// Nothing left.
    Empty,
}

/// What waits behind the first queued file; boxed and absent until then, so a connection that
/// never sends a file carries 8 bytes for it.
#[derive(Default)]
struct Queue {
    chunks: VecDeque<Chunk>,
    /// Bytes in `chunks`, file bytes included.
    bytes: u64,
    /// TCP_CORK is set while the queue's files go out.
    corked: bool,
}

/// One connection's unsent output: 16 bytes while nothing waits (an idle connection holds no
/// buffer), the bytes and the file queue boxed from the first byte that waits until the
/// last has left.
#[derive(Default)]
pub(crate) struct Output {
    waiting: Option<Box<Waiting>>,
    /// Bytes (files included) that left for the peer since the connection opened.
    pub(crate) sent: u64,
}

/// Output written and not yet sent.
#[derive(Default)]
struct Waiting {
    /// Bytes to send first; everything written while no file is queued lands here.
    buf: Vec<u8>,
    pos: usize,
    queue: Option<Box<Queue>>,
}

impl Output {
    /// Bytes written (files included) and not yet sent.
    pub(crate) fn buffered(&self) -> usize {
        self.waiting.as_ref().map_or(0, |w| {
            w.buf.len() - w.pos + w.queue.as_ref().map_or(0, |q| q.bytes as usize)
        })
    }

    /// The bytes to send first (up to the first queued file).
    pub(crate) fn pending(&self) -> &[u8] {
        self.waiting.as_ref().map_or(&[], |w| &w.buf[w.pos..])
    }

    pub(crate) fn write(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let w = self.waiting.get_or_insert_with(Default::default);
        match &mut w.queue {
            None => {
                // Bytes already sent make no room: what waits moves to the front rather than
                // the buffer growing round them (a slow reader's buffer held up to 64 KiB of
                // sent bytes besides the high-water mark and a read: 190 KiB for an echo).
                // Only when that frees at least as much as it moves (as `consumed` does), so
                // a byte sent at a time cannot make each write copy the whole buffer.
                if w.pos > 0
                    && w.pos * 2 >= w.buf.len()
                    && w.buf.len() + data.len() > w.buf.capacity()
                {
                    w.buf.drain(..w.pos);
                    w.pos = 0;
                }
                w.buf.extend_from_slice(data)
            }
            Some(q) => {
                q.bytes += data.len() as u64;
                match q.chunks.back_mut() {
                    Some(Chunk::Bytes(b)) => b.extend_from_slice(data),
                    _ => q.chunks.push_back(Chunk::Bytes(data.to_vec())),
                }
            }
        }
    }

    /// Sends `data` straight to `s` when nothing is queued before it, and queues what the
    /// socket does not take (all of it if something is queued: order is kept).
    pub(crate) fn write_through<S: Socket>(&mut self, s: &mut S, data: &[u8]) -> io::Result<()> {
        let mut off = 0;
        if self.buffered() == 0 && !s.pending() {
            while off < data.len() {
                match s.send(&data[off..], false) {
                    Ok(0) => break,
                    Ok(n) => {
                        off += n;
                        self.sent += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.write(&data[off..]);
                        return Err(e);
                    }
                }
            }
        }
        self.write(&data[off..]);
        Ok(())
    }

    pub(crate) fn send_file(&mut self, file: Rc<File>, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let w = self.waiting.get_or_insert_with(Default::default);
        let q = w.queue.get_or_insert_with(Default::default);
        q.bytes += len;
        q.chunks.push_back(Chunk::File { file, offset, len });
    }

    /// Writes the output to `s` until it would block: bytes, then each queued file region,
    /// in the order they were queued. Once everything has left, the buffer goes.
    pub(crate) fn flush<S: Socket>(&mut self, s: &mut S) -> io::Result<()> {
        // What the socket itself still holds (TLS records) leaves before anything new.
        if !s.flush_pending()? {
            return Ok(());
        }
        let Some(w) = self.waiting.as_mut() else {
            return Ok(());
        };
        if w.flush(s, &mut self.sent)? {
            self.waiting = None;
        }
        Ok(())
    }
}

impl Waiting {
    /// Records that `n` buffered bytes were sent; frees the buffer when it empties.
    fn consumed(&mut self, n: usize, sent: &mut u64) {
        *sent += n as u64;
        self.pos += n;
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            // An idle connection should hold no large buffer.
            if self.buf.capacity() > 64 * 1024 {
                self.buf = Vec::new();
            }
        } else if self.pos >= 64 * 1024 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Moves the next queued bytes into the buffer, or says which file is at the head.
    fn advance(&mut self) -> Next {
        let Some(q) = self.queue.as_mut() else {
            return Next::Empty;
        };
        match q.chunks.front_mut() {
            None => Next::Empty,
            Some(Chunk::Bytes(b)) => {
                q.bytes -= b.len() as u64;
                self.buf = std::mem::take(b);
                self.pos = 0;
                q.chunks.pop_front();
                Next::Bytes
            }
            Some(Chunk::File { file, offset, len }) => Next::File(file.clone(), *offset, *len),
        }
    }

    /// Records that `n` bytes of the file at the queue's head were sent.
    fn file_sent(&mut self, n: u64, sent: &mut u64) {
        *sent += n;
        if let Some(q) = self.queue.as_mut() {
            q.bytes -= n;
            if let Some(Chunk::File { offset, len, .. }) = q.chunks.front_mut() {
                *offset += n;
                *len -= n;
                if *len == 0 {
                    q.chunks.pop_front();
                }
            }
        }
    }

    /// Sends the buffered bytes; `Ok(false)` if the socket would block first.
    fn flush_bytes<S: Socket>(&mut self, s: &mut S, sent: &mut u64) -> io::Result<bool> {
        // Bytes right before a file (an HTTP head) go with MSG_MORE, so the kernel sends them
        // in the file's first full packet instead of a small one of their own.
        let more = matches!(
            self.queue.as_ref().and_then(|q| q.chunks.front()),
            Some(Chunk::File { .. })
        );
        while self.pos < self.buf.len() {
            match s.send(&self.buf[self.pos..], more) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.consumed(n, sent),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Sends a region of the file at the queue's head; `Ok(false)` if the socket would block.
    fn flush_file<S: Socket>(
        &mut self,
        s: &mut S,
        sent: &mut u64,
        file: &File,
        offset: u64,
        len: u64,
    ) -> io::Result<bool> {
        let count = len.min(1 << 30) as usize;
        loop {
            match s.send_file(file, offset, count) {
                // The file shrank under us: the promised length cannot be sent.
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file ended before its length was sent (it shrank while being sent)",
                    ));
                }
                Ok(n) => {
                    self.file_sent(n as u64, sent);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends until `s` would block; true once everything has left (the cork is off again).
    fn flush<S: Socket>(&mut self, s: &mut S, sent: &mut u64) -> io::Result<bool> {
        loop {
            if !self.flush_bytes(s, sent)? {
                return Ok(false);
            }
            match self.advance() {
                Next::Bytes => {}
                Next::Empty => {
                    // Everything went out: the queue goes, and the cork with it.
                    if self.queue.take().is_some_and(|q| q.corked) {
                        s.set_cork(false);
                    }
                    return Ok(true);
                }
                Next::File(file, offset, len) => {
                    // As nginx's tcp_nopush: while a file goes out, only full segments leave.
                    if let Some(q) = self.queue.as_mut()
                        && !q.corked
                    {
                        q.corked = true;
                        s.set_cork(true);
                    }
                    if !self.flush_file(s, sent, &file, offset, len)? {
                        return Ok(false);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes `room` more bytes, and keeps them.
    #[derive(Default)]
    struct Sink {
        room: usize,
        got: Vec<u8>,
    }

    impl io::Read for Sink {
        fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    impl Socket for Sink {
        fn send(&mut self, buf: &[u8], _more: bool) -> io::Result<usize> {
            let n = buf.len().min(self.room);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn send_file(&mut self, _: &File, _: u64, _: usize) -> io::Result<usize> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn set_cork(&mut self, _on: bool) {}
        fn shutdown_write(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A slow reader takes part of the output; the next write must grow the buffer: the bytes
    /// already sent go first, so the buffer holds only what waits. Kept, they made an echo's
    /// buffer (the high-water mark and one read) up to 192 KiB.
    #[test]
    fn sent_bytes_make_way_before_the_buffer_grows() {
        let mut o = Output::default();
        let mut s = Sink::default();
        let (a, b) = (vec![b'a'; 64 * 1024], vec![b'b'; 64 * 1024]);
        o.write(&a);
        s.room = 40 * 1024;
        o.flush(&mut s).unwrap();
        o.write(&b);
        let w = o.waiting.as_ref().unwrap();
        assert_eq!(
            (w.buf.len(), o.buffered()),
            (88 * 1024, 88 * 1024),
            "no sent bytes kept"
        );
        // Written again while the buffer has room: nothing moves (no copy per write).
        s.room = 8 * 1024;
        o.flush(&mut s).unwrap();
        o.write(b"c");
        let w = o.waiting.as_ref().unwrap();
        assert_eq!(w.pos, 8 * 1024, "sent bytes stay while there is room");
        s.room = usize::MAX;
        o.flush(&mut s).unwrap();
        assert_eq!(
            s.got,
            [a, b, b"c".to_vec()].concat(),
            "every byte, in order"
        );
        assert_eq!(o.buffered(), 0);
    }
}
