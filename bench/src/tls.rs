//! The client side of the TLS benchmark: a rustls (ring) client that always makes a full
//! TLS 1.3 handshake, and one non-blocking TLS connection on mio.
//!
//! Resumption is off (no session cache, tickets ignored), so every connection pays for a
//! whole handshake on the server, as the benchmark's "full handshakes/s" means. The server
//! is recognised by its certificate's bytes (the file the server was given); checking the
//! handshake signature as well is optional, since it is client work (an ECDSA verify costs
//! the client more than the signature costs the server) that would make the client, not the
//! server, the limit on the 2-core bench machine.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Interest, Poll, Token};
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

/// The name sent in SNI (the bench certificate has `DNS:localhost`).
const SERVER_NAME: &str = "localhost";

/// A client config: TLS 1.3 only, no resumption, the server known by its certificate.
pub fn client_config(cert: &Path, verify_signatures: bool) -> Result<Arc<ClientConfig>, String> {
    let der = CertificateDer::from_pem_file(cert)
        .map_err(|e| format!("{}: no certificate read: {e}", cert.display()))?;
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = SameCert {
        der: der.as_ref().to_vec(),
        algs: provider.signature_verification_algorithms,
        verify_signatures,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS client config: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Accepts exactly the certificate the server was given, byte for byte.
#[derive(Debug)]
struct SameCert {
    der: Vec<u8>,
    algs: WebPkiSupportedAlgorithms,
    verify_signatures: bool,
}

impl ServerCertVerifier for SameCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server sent another certificate than the one given".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if self.verify_signatures {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
        } else {
            Ok(HandshakeSignatureValid::assertion())
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if self.verify_signatures {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
        } else {
            Ok(HandshakeSignatureValid::assertion())
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// One TLS connection in progress: the socket and rustls's state.
pub struct TlsConn {
    pub sock: TcpStream,
    pub tls: ClientConnection,
    connected: bool,
    /// The peer closed (TCP EOF, or close_notify).
    pub eof: bool,
    /// Bytes came in after the handshake (session tickets, if nothing else).
    pub read_after_handshake: bool,
}

impl TlsConn {
    /// Starts a connection (TCP_NODELAY, registered readable and writable as `token`).
    pub fn start(
        poll: &Poll,
        addr: SocketAddr,
        token: Token,
        config: &Arc<ClientConfig>,
    ) -> Result<TlsConn, String> {
        let mut sock = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        sock.set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        poll.registry()
            .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| format!("epoll_ctl: {e}"))?;
        let name = ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
        let tls =
            ClientConnection::new(config.clone(), name).map_err(|e| format!("TLS client: {e}"))?;
        Ok(TlsConn {
            sock,
            tls,
            connected: false,
            eof: false,
            read_after_handshake: false,
        })
    }

    /// Moves bytes both ways until the socket would block (epoll is edge-triggered) and
    /// hands the plaintext that arrived to `sink`. A failed connect, a TLS alert or an
    /// error from `sink` is an error; the peer closing sets `eof`.
    pub fn pump(
        &mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        if !self.connected {
            if !connected(&self.sock).map_err(|e| format!("connect: {e}"))? {
                return Ok(());
            }
            self.connected = true;
        }
        let mut buf = [0u8; 16 * 1024];
        // Each pass moves bytes or ends the loop; a bound keeps a misbehaving peer finite.
        for _ in 0..1_000_000 {
            let mut moved = false;
            while self.tls.wants_write() {
                match self.tls.write_tls(&mut self.sock) {
                    Ok(0) => return Err("write: wrote nothing".into()),
                    Ok(_) => moved = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("write: {e}")),
                }
            }
            if !self.eof && self.tls.wants_read() {
                match self.tls.read_tls(&mut self.sock) {
                    Ok(0) => self.eof = true,
                    Ok(_) => {
                        self.read_after_handshake |= !self.tls.is_handshaking();
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => moved = true,
                    Err(e) => return Err(format!("read: {e}")),
                }
                self.tls
                    .process_new_packets()
                    .map_err(|e| format!("TLS: {e}"))?;
            }
            loop {
                match self.tls.reader().read(&mut buf) {
                    Ok(0) => {
                        self.eof = true; // close_notify
                        break;
                    }
                    Ok(n) => sink(&buf[..n])?,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // TCP closed without close_notify: an EOF all the same here.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        self.eof = true;
                        break;
                    }
                    Err(e) => return Err(format!("TLS read: {e}")),
                }
            }
            if !moved {
                return Ok(());
            }
        }
        Err("the peer kept sending without end".into())
    }

    /// The handshake is over and the client's last flight has gone out.
    pub fn established(&self) -> bool {
        self.connected && !self.tls.is_handshaking() && !self.tls.wants_write()
    }
}

/// mio's recipe: a pending error means failure, a peer address means connected.
fn connected(s: &TcpStream) -> io::Result<bool> {
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    match s.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Opens `n` connections to `addr` and completes a TLS handshake on each, at most
/// `inflight` at a time (below the server's listen backlog: a finished handshake means the
/// server accepted the connection, so no probe is needed as for plain TCP). Connection `i`
/// stays registered on `poll` as `Token(i)`; only its socket is kept (rustls's state is
/// dropped: the connection is never used again), with whether it already read bytes after
/// its handshake (tickets). A failed attempt is retried up to 4 times.
pub fn establish_all(
    poll: &mut Poll,
    addr: SocketAddr,
    n: usize,
    inflight: usize,
    config: &Arc<ClientConfig>,
    timeout: std::time::Duration,
) -> Result<Vec<(TcpStream, bool)>, String> {
    use std::time::{Duration, Instant};
    const TRIES: u32 = 5;
    const ATTEMPT: Duration = Duration::from_secs(20);
    let deadline = Instant::now() + timeout;
    let mut done: Vec<Option<(TcpStream, bool)>> = (0..n).map(|_| None).collect();
    let mut tries = vec![0u32; n];
    let mut queue: std::collections::VecDeque<usize> = (0..n).collect();
    let mut active: Vec<Option<(TlsConn, Instant)>> = (0..n).map(|_| None).collect();
    let mut in_flight = 0usize;
    let mut finished = 0usize;
    let mut events = mio::Events::with_capacity(1024);
    let mut fail = |i: usize, e: String, queue: &mut std::collections::VecDeque<usize>| {
        tries[i] += 1;
        if tries[i] >= TRIES {
            return Err(format!("connection {i} failed {TRIES} times, last: {e}"));
        }
        queue.push_back(i);
        Ok(())
    };
    while finished < n {
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "{finished} of {n} handshakes done after {timeout:?}; giving up"
            ));
        }
        while in_flight < inflight {
            let Some(i) = queue.pop_front() else { break };
            match TlsConn::start(poll, addr, Token(i), config) {
                Ok(c) => {
                    active[i] = Some((c, now));
                    in_flight += 1;
                }
                Err(e) => fail(i, e, &mut queue)?,
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .or_else(|e| crate::connect::ignore_eintr(e, "epoll_wait"))?;
        let mut ready: Vec<usize> = events.iter().map(|ev| ev.token().0).collect();
        // Handshakes that hang are retried; looked at on every pass.
        let now = Instant::now();
        ready.extend(
            active
                .iter()
                .enumerate()
                .filter(|(_, a)| a.as_ref().is_some_and(|(_, t)| now - *t > ATTEMPT))
                .map(|(i, _)| i),
        );
        for i in ready {
            let Some(Some((conn, started))) = active.get_mut(i) else {
                continue;
            };
            let result = match conn.pump(&mut |_| Ok(())) {
                Err(e) => Err(e),
                Ok(()) if conn.established() => Ok(true),
                Ok(()) if conn.eof => Err("the server closed during the handshake".into()),
                Ok(()) if now - *started > ATTEMPT => Err("handshake timed out".into()),
                Ok(()) => Ok(false),
            };
            match result {
                Ok(false) => {}
                Ok(true) => {
                    if let Some((c, _)) = active[i].take() {
                        done[i] = Some((c.sock, c.read_after_handshake));
                        in_flight -= 1;
                        finished += 1;
                    }
                }
                Err(e) => {
                    if let Some((mut c, _)) = active[i].take() {
                        let _ = poll.registry().deregister(&mut c.sock);
                        in_flight -= 1;
                    }
                    fail(i, e, &mut queue)?;
                }
            }
        }
    }
    Ok(done.into_iter().flatten().collect())
}
