//! The TLS layer as a [`Socket`]: plaintext for the protocol above, TLS records on the socket
//! below, without ever blocking.
//!
//! Reading pulls records from the socket into rustls and returns the plaintext they held,
//! filling the caller's buffer as a plain socket read does (so a short read still means the
//! socket is drained, which edge-triggered polling relies on). Sending encrypts into rustls
//! and writes the records out at once; while records are still waiting for room in the
//! socket, a send would block, so the plaintext stays in the connection's output buffer and
//! backpressure bounds both. Files go through in chunks read with pread. Shutting down the
//! write side sends close_notify, then the TCP FIN once it has left.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

use crate::output::Socket;

/// How much of a file is read and encrypted at once.
const FILE_CHUNK: usize = 64 * 1024;
/// What rustls may hold: plaintext before the handshake ends, and records not yet written.
const BUFFER_LIMIT: usize = 64 * 1024;

/// A server-side TLS session over the socket `S`.
pub(crate) struct TlsStream<S> {
    sock: S,
    conn: ServerConnection,
    /// Our side is closing: close_notify goes out once the handshake is done, and the TCP
    /// FIN once the records have left.
    closing: bool,
    /// close_notify was queued.
    notified: bool,
    /// The FIN went out.
    shut: bool,
    /// A fatal TLS error to report on the next read (after its alert was sent).
    failed: Option<String>,
    /// The last read returned data with the end (close_notify, EOF or an error) behind it.
    ahead: bool,
}

impl<S: Socket> TlsStream<S> {
    pub(crate) fn new(sock: S, config: Arc<ServerConfig>) -> io::Result<TlsStream<S>> {
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(TlsStream {
            sock,
            conn,
            closing: false,
            notified: false,
            shut: false,
            failed: None,
            ahead: false,
        })
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

    /// Writes records rustls has ready; `Ok(false)` if the socket would block first.
    fn write_records(&mut self) -> io::Result<bool> {
        loop {
            while self.conn.wants_write() {
                match self.conn.write_tls(&mut SocketWriter(&mut self.sock)) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            // A close asked for during the handshake waits for its end: the plaintext written
            // before it (a greeting, a daytime line) goes out when the handshake completes.
            if self.closing && !self.notified && !self.conn.is_handshaking() {
                self.notified = true;
                self.conn.send_close_notify();
                continue;
            }
            break;
        }
        if self.notified && !self.shut {
            self.shut = true;
            self.sock.shutdown_write()?;
        }
        Ok(true)
    }

    /// Reads records from the socket into rustls; `Ok(false)` at the socket's EOF.
    fn read_records(&mut self) -> io::Result<bool> {
        loop {
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => return Ok(false),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if let Err(e) = self.conn.process_new_packets() {
            // The alert rustls queued for the peer goes out before the close.
            let _ = self.write_records();
            return Err(io::Error::new(io::ErrorKind::InvalidData, explain(&e)));
        }
        // The handshake may have answers to send.
        self.write_records()?;
        Ok(true)
    }
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

/// Lets rustls write records through our `Socket` (plain sends, no MSG_MORE).
struct SocketWriter<'a, S>(&'a mut S);

impl<S: Socket> Write for SocketWriter<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf, false)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: Socket> Read for TlsStream<S> {
    /// Plaintext, as much as fits in `buf` or the socket holds; WouldBlock when none.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.ahead = false;
        if let Some(e) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e.clone()));
        }
        let mut total = 0;
        let mut eof = false;
        loop {
            match self.conn.reader().read(&mut buf[total..]) {
                // close_notify: the end of the plaintext.
                Ok(0) if total < buf.len() => return Ok(self.returned(total)),
                Ok(n) => {
                    total += n;
                    if total == buf.len() {
                        return Ok(total);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed the TCP connection without close_notify: an end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(self.returned(total));
                }
                Err(e) => return Err(e),
            }
            if eof {
                return Ok(self.returned(total));
            }
            match self.read_records() {
                Ok(true) => {}
                Ok(false) => eof = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return if total > 0 { Ok(total) } else { Err(e) };
                }
                Err(e) => {
                    self.failed = Some(e.to_string());
                    return if total > 0 {
                        Ok(self.returned(total))
                    } else {
                        Err(e)
                    };
                }
            }
        }
    }
}

impl<S> TlsStream<S> {
    /// `total` bytes read with the end of the input behind them: if there are any, the end
    /// waits for the next read, which the caller must make without readiness.
    fn returned(&mut self, total: usize) -> usize {
        self.ahead = total > 0;
        total
    }
}

impl<S: Socket> Socket for TlsStream<S> {
    fn send(&mut self, buf: &[u8], _more: bool) -> io::Result<usize> {
        // Records from earlier sends first: while they wait, so does new plaintext.
        if !self.write_records()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.conn.writer().write(buf)?;
        if n == 0 && !buf.is_empty() {
            // rustls' buffer is full (the handshake has not finished yet).
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.write_records()?;
        Ok(n)
    }

    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        if !self.write_records()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut chunk = vec![0u8; len.min(FILE_CHUNK)];
        let n = file.read_at(&mut chunk, offset)?;
        if n == 0 {
            return Ok(0);
        }
        // What rustls does not take now is read again next time (at the new offset).
        self.send(&chunk[..n], false)
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
        self.conn.wants_write() || (self.closing && !self.shut)
    }
}
