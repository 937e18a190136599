//! The TLS layer as a [`Socket`]: plaintext for the protocol above, TLS records on the socket
//! below, without ever blocking, and without a buffer while idle.
//!
//! rustls runs unbuffered (`UnbufferedServerConnection`): the session keeps its keys and its
//! handshake state, and the ciphertext lives in buffers of ours. Records are read into, and
//! sealed in, scratch buffers of the thread (the reactor's); a connection keeps only what is
//! left over (part of a record received, records the socket did not take, plaintext beyond the
//! reader's buffer, plaintext written before the handshake ended), each freed as soon as it
//! empties. rustls's buffered connection keeps a 4 KiB receive buffer for its whole life,
//! about half of what an idle TLS connection cost (bench/README.md, "TLS").
//!
//! Reading pulls records from the socket and returns the plaintext they held, filling the
//! caller's buffer as a plain socket read does (so a short read still means the socket is
//! drained, which edge-triggered polling relies on). Sending seals the plaintext and writes the
//! records at once; while records still wait for room in the socket, a send would block, so
//! the plaintext stays in the connection's output buffer and backpressure bounds both. Files go
//! through in chunks read with pread. Shutting down the write side sends close_notify, then
//! the TCP FIN once it has left.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read};
use std::mem;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::ServerName;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, ReadEarlyData, UnbufferedStatus, WriteTraffic,
};
use rustls::{ClientConfig, ServerConfig};

use crate::output::Socket;

/// The most plaintext sealed at once: a send, or a chunk of a file.
const SEAL_CHUNK: usize = 64 * 1024;
/// The most ciphertext read from the socket at once.
const READ_CHUNK: usize = 64 * 1024;
/// The largest record on the wire (TLS 1.2's limit, above 1.3's): a read reaches at least this
/// far past the reader's room, so one record more than fits is all that can be left over.
const MAX_RECORD: usize = 5 + 16 * 1024 + 2048;
/// The most plaintext held while the handshake ends (what rustls's own buffer allowed).
const BUFFER_LIMIT: usize = 64 * 1024;

/// The write side's scratch: a chunk of a file, and the records sealed from it or a send.
#[derive(Default)]
struct SealScratch {
    file: Vec<u8>,
    sealed: Vec<u8>,
}

thread_local! {
    /// The read side's scratch: what a connection had left over, then what the socket gave.
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static SEAL: RefCell<SealScratch> = RefCell::default();
}

/// A side of an unbuffered rustls session: the server's (accepted connections) or the
/// client's (outgoing ones). rustls gives each its own `process_tls_records`; the stream is
/// the same for both.
pub(crate) trait Session {
    type Data;
    /// A server's session (a listener's), not a client's (a relay's `ssl:` destination): the
    /// likely cause of a failure differs.
    const SERVER: bool;
    fn process<'c, 'i>(&'c mut self, input: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn is_handshaking(&self) -> bool;
    fn wants_write(&self) -> bool;
    /// Drops early data (never offered: a server's max_early_data_size is 0, a client sends
    /// none).
    fn discard_early(early: &mut ReadEarlyData<'_, '_, Self::Data>);
}

impl Session for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    const SERVER: bool = true;
    fn process<'c, 'i>(&'c mut self, input: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(input)
    }
    fn is_handshaking(&self) -> bool {
        (**self).is_handshaking()
    }
    fn wants_write(&self) -> bool {
        (**self).wants_write()
    }
    fn discard_early(early: &mut ReadEarlyData<'_, '_, Self::Data>) {
        while early.next_record().is_some() {}
    }
}

impl Session for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    const SERVER: bool = false;
    fn process<'c, 'i>(&'c mut self, input: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(input)
    }
    fn is_handshaking(&self) -> bool {
        (**self).is_handshaking()
    }
    fn wants_write(&self) -> bool {
        (**self).wants_write()
    }
    /// rustls hands early data to servers only.
    fn discard_early(_early: &mut ReadEarlyData<'_, '_, Self::Data>) {}
}

/// A TLS session over the socket `S`: a server's unless `C` says otherwise.
pub(crate) struct TlsStream<S, C = UnbufferedServerConnection> {
    sock: S,
    conn: C,
    /// Ciphertext received and not yet processed: part of a record or of a handshake message,
    /// or records behind a reader's full buffer.
    incoming: Vec<u8>,
    /// Records not yet written, from `out_pos`.
    outgoing: Vec<u8>,
    out_pos: usize,
    /// Plaintext decrypted that the reader had no room for.
    plain: Vec<u8>,
    /// Plaintext written before the handshake ended, sealed once it has.
    held: Vec<u8>,
    /// Our side is closing: close_notify goes out once the handshake is done, and the TCP
    /// FIN once the records have left.
    closing: bool,
    /// close_notify was queued.
    notified: bool,
    /// The FIN went out.
    shut: bool,
    /// The peer's close_notify came: the end of the plaintext.
    peer_closed: bool,
    /// A fatal error to report on the next read (after a TLS error's alert was sent).
    failed: Option<(io::ErrorKind, String)>,
    /// The last read returned data with the end (close_notify, EOF or an error) behind it.
    ahead: bool,
    /// The last read took bytes from the socket (`Socket::took_input`).
    took: bool,
}

/// What a [`TlsStream::pump`] is for, once rustls has processed the input it has.
enum Want<'a> {
    /// Plaintext only.
    Read,
    /// `data` sealed into `into` (from its start), once application data may flow.
    Seal(&'a [u8], &'a mut Vec<u8>),
    /// close_notify, into `outgoing`.
    CloseNotify,
}

/// Where a [`TlsStream::pump`] stopped.
enum Pumped {
    /// rustls needs more input (the handshake waits, or every record was read), or the
    /// session is closed.
    Drained,
    /// The reader's buffer is full.
    Full,
    /// The seal or close asked for is done: this many bytes of records.
    Done(usize),
}

/// Why a read of the socket failed.
enum ReadFailed {
    Io(io::Error),
    Tls(rustls::Error),
}

/// The reader's buffer, filled from `total` on.
struct Plain<'b> {
    buf: &'b mut [u8],
    total: usize,
}

impl Plain<'_> {
    fn room(&self) -> usize {
        self.buf.len() - self.total
    }

    fn full(&self) -> bool {
        self.room() == 0
    }

    /// Copies what fits of `data`; the rest goes to the end of `rest`.
    fn put(&mut self, data: &[u8], rest: &mut Vec<u8>) {
        let n = data.len().min(self.room());
        self.buf[self.total..self.total + n].copy_from_slice(&data[..n]);
        self.total += n;
        rest.extend_from_slice(&data[n..]);
    }

    /// Moves what fits of `plain` here; frees it once empty.
    fn take(&mut self, plain: &mut Vec<u8>) {
        if plain.is_empty() {
            return;
        }
        let n = plain.len().min(self.room());
        self.buf[self.total..self.total + n].copy_from_slice(&plain[..n]);
        self.total += n;
        plain.drain(..n);
        if plain.is_empty() {
            *plain = Vec::new();
        }
    }
}

impl<S: Socket> TlsStream<S> {
    pub(crate) fn new(sock: S, config: Arc<ServerConfig>) -> io::Result<TlsStream<S>> {
        let conn = UnbufferedServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsStream::over(sock, conn))
    }
}

impl<S: Socket> TlsStream<S, UnbufferedClientConnection> {
    /// The client side of a session with the server `name` (verified against its
    /// certificate, and sent as SNI when a name, not an address). The ClientHello is queued
    /// at once: the client speaks first, and the connection's first flush sends it.
    pub(crate) fn client(
        sock: S,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<Self> {
        let conn = UnbufferedClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut t = TlsStream::over(sock, conn);
        if let Err(e) = t.pump_kept(&mut Want::Read) {
            return Err(io::Error::other(e));
        }
        Ok(t)
    }
}

impl<S: Socket, C: Session> TlsStream<S, C> {
    fn over(sock: S, conn: C) -> Self {
        TlsStream {
            sock,
            conn,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            out_pos: 0,
            plain: Vec::new(),
            held: Vec::new(),
            closing: false,
            notified: false,
            shut: false,
            peer_closed: false,
            failed: None,
            ahead: false,
            took: false,
        }
    }

    /// The socket under the session, to ask the kernel about it.
    pub(crate) fn socket(&self) -> &S {
        &self.sock
    }

    pub(crate) fn socket_mut(&mut self) -> &mut S {
        &mut self.sock
    }

    /// True until the handshake has completed.
    pub(crate) fn handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The last read returned data and the end is already here: the next read returns it.
    pub(crate) fn read_ahead(&self) -> bool {
        self.ahead
    }

    /// Runs rustls over `input` until it needs more, the reader's buffer `out` is full (only
    /// for [`Want::Read`]), or what `want` asks for is done. Plaintext goes to `out` (what does
    /// not fit, to `plain`), handshake records and alerts to `outgoing`. Returns how much of
    /// `input` rustls is done with: the rest must come first in the next call's input.
    fn pump(
        &mut self,
        input: &mut [u8],
        out: &mut Plain<'_>,
        want: &mut Want<'_>,
    ) -> (usize, Result<Pumped, rustls::Error>) {
        let mut used = 0;
        // Each turn takes a record or a message out of rustls, or stops.
        loop {
            // A full reader stops the reading, not what rustls has to send without input (a
            // client's ClientHello, queued before any reader exists).
            if matches!(want, Want::Read) && out.full() && used < input.len() {
                return (used, Ok(Pumped::Full));
            }
            let start = used.min(input.len());
            let UnbufferedStatus { discard, state } = self.conn.process(&mut input[start..]);
            used += discard;
            let state = match state {
                Ok(state) => state,
                Err(e) => return (used, Err(e)),
            };
            match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        match record {
                            Ok(r) => {
                                used += r.discard;
                                out.put(r.payload, &mut self.plain);
                            }
                            Err(e) => return (used, Err(e)),
                        }
                    }
                }
                ConnectionState::EncodeTlsData(mut msg) => {
                    if let Err(e) = append(&mut self.outgoing, 1024, |b| msg.encode(b), encode_room)
                    {
                        return (used, Err(e));
                    }
                }
                // The records wait in `outgoing`, in order, and leave before anything newer.
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::PeerClosed => self.peer_closed = true,
                ConnectionState::WriteTraffic(mut w) => {
                    let done = match want {
                        Want::Read => return (used, Ok(Pumped::Drained)),
                        Want::Seal(data, into) => seal(&mut w, data, into),
                        Want::CloseNotify => append(
                            &mut self.outgoing,
                            64,
                            |b| w.queue_close_notify(b),
                            encrypt_room,
                        ),
                    };
                    return (used, done.map(Pumped::Done));
                }
                // Never offered (the config's max_early_data_size is 0): dropped if it came.
                ConnectionState::ReadEarlyData(mut early) => C::discard_early(&mut early),
                // BlockedHandshake (more input needed), Closed (both close_notify sent).
                _ => return (used, Ok(Pumped::Drained)),
            }
        }
    }

    /// [`TlsStream::pump`] over the input kept, for the write side (plaintext decrypted on the
    /// way waits in `plain` for the next read).
    fn pump_kept(&mut self, want: &mut Want<'_>) -> Result<Pumped, rustls::Error> {
        let mut input = mem::take(&mut self.incoming);
        let mut out = Plain {
            buf: &mut [],
            total: 0,
        };
        let (used, r) = self.pump(&mut input, &mut out, want);
        input.drain(..used.min(input.len()));
        self.keep(input);
        r
    }

    /// Keeps `rest` as the input not yet processed (freed if empty).
    fn keep(&mut self, rest: Vec<u8>) {
        self.incoming = if rest.is_empty() { Vec::new() } else { rest };
    }

    /// A fatal TLS error: the alert rustls queued goes to `outgoing` (written by the caller),
    /// and every later read reports the error.
    fn fail(&mut self, e: &rustls::Error) -> io::Error {
        // rustls hands out what it queued before it looks at input again, so no input is
        // needed (nor safe to give: it already said no to it).
        for _ in 0..8 {
            if !self.conn.wants_write() {
                break;
            }
            let UnbufferedStatus { state, .. } = self.conn.process(&mut []);
            match state {
                Ok(ConnectionState::EncodeTlsData(mut msg)) => {
                    let _ = append(&mut self.outgoing, 64, |b| msg.encode(b), encode_room);
                }
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while records.next_record().is_some() {}
                }
                _ => break,
            }
        }
        let text = if C::SERVER {
            explain(e)
        } else {
            explain_to_client(e)
        };
        self.failed = Some((io::ErrorKind::InvalidData, text.clone()));
        io::Error::new(io::ErrorKind::InvalidData, text)
    }

    /// Reads ciphertext from the socket behind what was kept, and processes it; `Ok(false)` at
    /// the socket's EOF.
    fn read_socket(&mut self, out: &mut Plain<'_>) -> Result<bool, ReadFailed> {
        INPUT.with_borrow_mut(|scratch| {
            let kept = self.incoming.len();
            let want = kept + (out.room() + MAX_RECORD).min(READ_CHUNK);
            if scratch.len() < want {
                scratch.resize(want, 0);
            }
            scratch[..kept].copy_from_slice(&self.incoming);
            let n = self
                .sock
                .read(&mut scratch[kept..want])
                .map_err(ReadFailed::Io)?;
            if n == 0 {
                return Ok(false);
            }
            self.took = true;
            let end = kept + n;
            let (used, r) = self.pump(&mut scratch[..end], out, &mut Want::Read);
            let mut rest = mem::take(&mut self.incoming);
            rest.clear();
            rest.extend_from_slice(&scratch[used.min(end)..end]);
            self.keep(rest);
            r.map(|_| true).map_err(ReadFailed::Tls)
        })
    }

    /// A read failed with `e` after `total` bytes: those are returned first, `e` next time.
    fn read_failed(&mut self, e: io::Error, total: usize) -> io::Result<usize> {
        if self.failed.is_none() {
            self.failed = Some((e.kind(), e.to_string()));
        }
        if total > 0 {
            Ok(self.returned(total))
        } else {
            Err(e)
        }
    }

    /// Writes `outgoing` until the socket would block (`Ok(false)`); frees it once sent.
    fn flush_outgoing(&mut self) -> io::Result<bool> {
        while self.out_pos < self.outgoing.len() {
            match self.sock.send(&self.outgoing[self.out_pos..], false) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.outgoing = Vec::new();
        self.out_pos = 0;
        Ok(true)
    }

    /// Writes the records waiting; seals the plaintext held for the handshake's end once it
    /// has ended; carries out a close (close_notify, then the FIN once the records have
    /// left). `Ok(false)` if the socket would block first.
    fn write_records(&mut self) -> io::Result<bool> {
        loop {
            if !self.flush_outgoing()? {
                return Ok(false);
            }
            if !self.held.is_empty() && self.failed.is_none() {
                let held = mem::take(&mut self.held);
                let mut sealed = Vec::new();
                match self.pump_kept(&mut Want::Seal(&held, &mut sealed)) {
                    Ok(Pumped::Done(n)) => {
                        sealed.truncate(n);
                        self.outgoing.extend_from_slice(&sealed);
                        continue;
                    }
                    Ok(_) => self.held = held,
                    Err(e) => return Err(self.fail(&e)),
                }
            }
            // A close asked for during the handshake waits for its end: the plaintext written
            // before it (a greeting, a daytime line) goes out when the handshake completes.
            if self.closing
                && !self.notified
                && (self.failed.is_some() || !self.conn.is_handshaking())
            {
                self.notified = true;
                if self.failed.is_none() {
                    if let Err(e) = self.pump_kept(&mut Want::CloseNotify) {
                        return Err(self.fail(&e));
                    }
                    continue;
                }
            }
            break;
        }
        if self.notified && !self.shut {
            self.shut = true;
            self.sock.shutdown_write()?;
        }
        Ok(true)
    }

    /// Sends `records`: what the socket does not take waits in `outgoing`.
    fn send_records(&mut self, records: &[u8]) -> io::Result<()> {
        let mut sent = 0;
        if self.flush_outgoing()? {
            while sent < records.len() {
                match self.sock.send(&records[sent..], false) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.outgoing.extend_from_slice(&records[sent..]);
        Ok(())
    }

    /// Seals `data` (in `sealed`) and sends it; holds it instead while the handshake has not
    /// ended. How much of `data` was taken; WouldBlock while records wait for the socket.
    fn send_plain(&mut self, data: &[u8], sealed: &mut Vec<u8>) -> io::Result<usize> {
        if let Some((kind, text)) = &self.failed {
            return Err(io::Error::new(*kind, text.clone()));
        }
        // Records from earlier sends first: while they wait, so does new plaintext.
        if !self.write_records()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if self.held.is_empty() {
            match self.pump_kept(&mut Want::Seal(data, sealed)) {
                Ok(Pumped::Done(n)) => {
                    self.send_records(&sealed[..n.min(sealed.len())])?;
                    return Ok(data.len());
                }
                Ok(_) => {}
                Err(e) => {
                    let e = self.fail(&e);
                    let _ = self.flush_outgoing();
                    return Err(e);
                }
            }
        }
        // The handshake has not ended: the plaintext waits for it, as much as rustls's own
        // buffer took.
        let n = data.len().min(BUFFER_LIMIT.saturating_sub(self.held.len()));
        if n == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.held.extend_from_slice(&data[..n]);
        Ok(n)
    }
}

/// Seals `data` into `into`, from its start (grown if rustls asks for more room, never
/// shrunk: it is a scratch buffer); the bytes of records written.
fn seal<D>(
    w: &mut WriteTraffic<'_, D>,
    data: &[u8],
    into: &mut Vec<u8>,
) -> Result<usize, rustls::Error> {
    // A record per 16 KiB, each with a header, a content type and a tag (22 bytes in TLS 1.3,
    // up to 29 in 1.2); a key update waiting makes it more, and rustls says so.
    let mut room = data.len() + (data.len() / (16 * 1024) + 1) * 64;
    for _ in 0..2 {
        if into.len() < room {
            into.resize(room, 0);
        }
        match w.encrypt(data, into) {
            Ok(n) => return Ok(n),
            Err(e) => match encrypt_room(&e) {
                Some(r) if r > into.len() => room = r,
                _ => return Err(rustls::Error::General(e.to_string())),
            },
        }
    }
    Err(rustls::Error::General("no room to seal a record".into()))
}

/// The room rustls asks for, from an error of sealing.
fn encrypt_room(e: &EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

/// The room rustls asks for, from an error of encoding a handshake record.
fn encode_room(e: &EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

/// Appends to `out` what `write` puts in a slice of `room` bytes (more if `needs` says the
/// error asked for more); the bytes appended.
fn append<E: std::fmt::Display>(
    out: &mut Vec<u8>,
    room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needs: impl Fn(&E) -> Option<usize>,
) -> Result<usize, rustls::Error> {
    let start = out.len();
    let mut room = room;
    for _ in 0..2 {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n.min(room));
                return Ok(n);
            }
            Err(e) => {
                out.truncate(start);
                match needs(&e) {
                    Some(r) if r > room => room = r,
                    _ => return Err(rustls::Error::General(e.to_string())),
                }
            }
        }
    }
    Err(rustls::Error::General("no room for a record".into()))
}

/// What a failed session means, for the log: rustls' words, with the likely cause of the
/// failures an operator sees most (nginx names plain HTTP on an HTTPS port the same way).
fn explain(e: &rustls::Error) -> String {
    use rustls::{Error, InvalidMessage, PeerIncompatible as P};
    match e {
        Error::InvalidMessage(InvalidMessage::InvalidContentType) => {
            format!("not TLS (plaintext, such as HTTP, sent to a TLS port?): {e}")
        }
        // A TLS 1.0 or 1.1 ClientHello has no signature_algorithms extension.
        Error::PeerIncompatible(
            P::SignatureAlgorithmsExtensionRequired
            | P::Tls12NotOffered
            | P::Tls12NotOfferedOrEnabled
            | P::SupportedVersionsExtensionRequired,
        ) => format!(
            "the client offers no protocol version this listener speaks (TLS 1.2 and 1.3, or \
             what sslmethod allows; an old client?): {e}"
        ),
        _ => e.to_string(),
    }
}

/// What a failed session with a server (an `ssl:` destination) means, for the log: a
/// plaintext answer is a destination that does not speak TLS, not a client at a TLS port.
fn explain_to_client(e: &rustls::Error) -> String {
    use rustls::{Error, InvalidMessage};
    match e {
        Error::InvalidMessage(InvalidMessage::InvalidContentType) => {
            format!("the destination does not speak TLS (a plaintext port?): {e}")
        }
        _ => e.to_string(),
    }
}

impl<S: Socket, C: Session> Read for TlsStream<S, C> {
    /// Plaintext, as much as fits in `buf` or the socket holds; WouldBlock when none.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.ahead = false;
        self.took = false;
        if let Some((kind, text)) = &self.failed {
            return Err(io::Error::new(*kind, text.clone()));
        }
        let mut out = Plain { buf, total: 0 };
        out.take(&mut self.plain);
        // Records that came behind a full buffer last time.
        if !self.incoming.is_empty() && !self.peer_closed && !out.full() {
            let mut input = mem::take(&mut self.incoming);
            let (used, r) = self.pump(&mut input, &mut out, &mut Want::Read);
            input.drain(..used.min(input.len()));
            self.keep(input);
            if let Err(e) = r {
                let e = self.fail(&e);
                let _ = self.flush_outgoing();
                return self.read_failed(e, out.total);
            }
        }
        let mut eof = false;
        loop {
            if out.full() {
                return Ok(out.total);
            }
            if self.peer_closed || eof {
                // What follows close_notify is not read.
                self.incoming = Vec::new();
                return Ok(self.returned(out.total));
            }
            // The handshake's answers, tickets, and plaintext held for the handshake's end.
            if let Err(e) = self.write_records() {
                return self.read_failed(e, out.total);
            }
            match self.read_socket(&mut out) {
                Ok(true) => {}
                // The peer closed the TCP connection without close_notify: an end all the same.
                Ok(false) => eof = true,
                Err(ReadFailed::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return if out.total > 0 { Ok(out.total) } else { Err(e) };
                }
                Err(ReadFailed::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(ReadFailed::Io(e)) => return self.read_failed(e, out.total),
                Err(ReadFailed::Tls(e)) => {
                    // The alert rustls queued for the peer goes out before the close.
                    let e = self.fail(&e);
                    let _ = self.flush_outgoing();
                    return self.read_failed(e, out.total);
                }
            }
        }
    }
}

impl<S, C> TlsStream<S, C> {
    /// `total` bytes read with the end of the input behind them: if there are any, the end
    /// waits for the next read, which the caller must make without readiness.
    fn returned(&mut self, total: usize) -> usize {
        self.ahead = total > 0;
        total
    }
}

impl<S: Socket, C: Session> Socket for TlsStream<S, C> {
    fn send(&mut self, buf: &[u8], _more: bool) -> io::Result<usize> {
        let data = &buf[..buf.len().min(SEAL_CHUNK)];
        SEAL.with_borrow_mut(|s| self.send_plain(data, &mut s.sealed))
    }

    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        if !self.write_records()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        SEAL.with_borrow_mut(|s| {
            let SealScratch {
                file: chunk,
                sealed,
            } = s;
            let want = len.min(SEAL_CHUNK);
            if chunk.len() < want {
                chunk.resize(want, 0);
            }
            let n = file.read_at(&mut chunk[..want], offset)?;
            if n == 0 {
                return Ok(0);
            }
            // What is not taken now is read again next time (at the new offset).
            self.send_plain(&chunk[..n], sealed)
        })
    }

    fn set_cork(&mut self, on: bool) {
        self.sock.set_cork(on);
    }

    /// close_notify (once the handshake is done), then the FIN once the records have left.
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.closing = true;
        self.write_records().map(|_| ())
    }

    fn flush_pending(&mut self) -> io::Result<bool> {
        self.write_records()
    }

    fn pending(&self) -> bool {
        self.out_pos < self.outgoing.len() || (self.closing && !self.shut)
    }

    fn took_input(&self) -> bool {
        self.took
    }
}

#[cfg(test)]
mod tests;
