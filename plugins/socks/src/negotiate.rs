//! The SOCKS negotiation, sans-IO: the client's bytes go in with `feed`, and `next_step` gives
//! what to send back and, at the end, the one request to carry out.
//!
//! SOCKS4 (CONNECT, BIND), SOCKS4a (a host name behind the user id) and SOCKS5 (RFC 1928:
//! the method selection, RFC 1929's username/password, CONNECT, BIND and UDP ASSOCIATE with
//! IPv4, IPv6 and domain-name addresses). Every decision is taken on a complete message, so
//! the outcome is the same however the input is cut. Bytes that follow the request (a client
//! that sends before the reply) stay buffered for the relay (`take_rest`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

use twistrs_core::auth::Credentials;
use twistrs_core::line::InputBuffer;

/// The longest SOCKS4 user id and SOCKS4a host name taken, without their NUL (SOCKS5's
/// fields are at most 255 bytes by their length byte): a request is at most 520 bytes.
pub const MAX_FIELD: usize = 255;

/// RFC 1928 method numbers.
const NO_AUTH: u8 = 0x00;
const USER_PASS: u8 = 0x02;
const NO_ACCEPTABLE: u8 = 0xFF;

/// The protocol a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V4,
    V5,
}

/// What the client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    Connect,
    Bind,
    UdpAssociate,
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cmd::Connect => "CONNECT",
            Cmd::Bind => "BIND",
            Cmd::UdpAssociate => "UDP",
        })
    }
}

/// A destination host as the client named it: an address, or a name to resolve (SOCKS4a,
/// SOCKS5 ATYP 3), as core's outgoing connections take it.
pub use twistrs_core::client::Host;

/// A destination host and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

impl Target {
    pub fn ip(addr: SocketAddr) -> Target {
        Target {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }

    /// The address when it is one already (no name to resolve).
    pub fn addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Name(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(n) => write!(f, "{n}:{}", self.port),
        }
    }
}

/// A complete request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub version: Version,
    pub cmd: Cmd,
    pub target: Target,
    /// SOCKS4's user id, or the SOCKS5 user who authenticated.
    pub user: Option<String>,
}

/// Why a request failed, in terms that each protocol turns into its own reply code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    General,
    NotAllowed,
    NetworkUnreachable,
    HostUnreachable,
    Refused,
    /// The connect timed out (SOCKS5 names it "TTL expired").
    TtlExpired,
    CommandNotSupported,
    AddressTypeNotSupported,
}

impl Failure {
    /// The SOCKS5 REP code (RFC 1928, section 6).
    pub fn code5(self) -> u8 {
        match self {
            Failure::General => 0x01,
            Failure::NotAllowed => 0x02,
            Failure::NetworkUnreachable => 0x03,
            Failure::HostUnreachable => 0x04,
            Failure::Refused => 0x05,
            Failure::TtlExpired => 0x06,
            Failure::CommandNotSupported => 0x07,
            Failure::AddressTypeNotSupported => 0x08,
        }
    }

    /// The failure an outgoing connect's error stands for.
    pub fn of_io(e: &std::io::Error) -> Failure {
        use std::io::ErrorKind::*;
        match e.kind() {
            ConnectionRefused => Failure::Refused,
            TimedOut => Failure::TtlExpired,
            HostUnreachable => Failure::HostUnreachable,
            NetworkUnreachable | AddrNotAvailable => Failure::NetworkUnreachable,
            _ => Failure::General,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::General => "general failure",
            Failure::NotAllowed => "not allowed by the rules",
            Failure::NetworkUnreachable => "network unreachable",
            Failure::HostUnreachable => "host unreachable",
            Failure::Refused => "connection refused",
            Failure::TtlExpired => "connect timed out",
            Failure::CommandNotSupported => "command not supported",
            Failure::AddressTypeNotSupported => "address type not supported",
        })
    }
}

/// The reply to a request: success (`Ok` with the address to report) or a failure.
pub fn reply(version: Version, outcome: Result<SocketAddr, Failure>) -> Vec<u8> {
    match version {
        Version::V4 => reply4(outcome.ok()),
        Version::V5 => match outcome {
            Ok(a) => reply5(0, a),
            Err(f) => reply5(f.code5(), UNSPECIFIED),
        },
    }
}

const UNSPECIFIED: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// `VER REP RSV ATYP BND.ADDR BND.PORT`.
pub fn reply5(code: u8, bound: SocketAddr) -> Vec<u8> {
    let mut r = vec![5, code, 0];
    push_addr(&mut r, bound);
    r
}

/// `ATYP ADDR PORT` (RFC 1928's address, also the UDP header's). An IPv4-mapped address (an
/// IPv4 peer of a dual-stack socket) is written as the IPv4 address it is.
pub fn push_addr(r: &mut Vec<u8>, a: SocketAddr) {
    match a.ip().to_canonical() {
        IpAddr::V4(ip) => {
            r.push(1);
            r.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            r.push(4);
            r.extend_from_slice(&ip.octets());
        }
    }
    r.extend_from_slice(&a.port().to_be_bytes());
}

/// `VN=0 CD DSTPORT DSTIP`: 90 granted with the address (IPv4, or IPv4-mapped; else zeros),
/// or 91.
pub fn reply4(granted: Option<SocketAddr>) -> Vec<u8> {
    let mut r = vec![0, if granted.is_some() { 90 } else { 91 }];
    match granted.map(|a| (a.ip().to_canonical(), a.port())) {
        Some((IpAddr::V4(ip), port)) => {
            r.extend_from_slice(&port.to_be_bytes());
            r.extend_from_slice(&ip.octets());
        }
        _ => r.extend_from_slice(&[0; 6]),
    }
    r
}

/// Why a negotiation was cut off, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The first byte is no SOCKS version (an HTTP request, TLS, garbage).
    NotSocks(u8),
    /// None of the offered methods is the one required.
    NoMethod {
        auth_required: bool,
    },
    AuthFailed(String),
    BadAuthVersion(u8),
    BadRequestVersion(u8),
    /// `--auth` is set and SOCKS4 cannot carry a password.
    Socks4WithAuth,
    TooLong(&'static str),
    Command(u8),
    AddressType(u8),
    BadName,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotSocks(b) => write!(f, "not a SOCKS request (first byte 0x{b:02x})"),
            Refusal::NoMethod {
                auth_required: true,
            } => f.write_str("the client does not offer username/password authentication"),
            Refusal::NoMethod {
                auth_required: false,
            } => f.write_str("the client does not offer the method \"no authentication\""),
            Refusal::AuthFailed(u) => write!(f, "authentication failed for user {u:?}"),
            Refusal::BadAuthVersion(v) => write!(f, "username/password version {v} (not 1)"),
            Refusal::BadRequestVersion(v) => write!(f, "request version {v} (not 5)"),
            Refusal::Socks4WithAuth => {
                f.write_str("SOCKS4 refused: authentication is required and SOCKS4 has no password")
            }
            Refusal::TooLong(what) => write!(f, "{what} longer than {MAX_FIELD} bytes"),
            Refusal::Command(c) => write!(f, "command {c} not supported"),
            Refusal::AddressType(a) => write!(f, "address type {a} not supported"),
            Refusal::BadName => f.write_str("an empty or malformed host name"),
        }
    }
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes and read on.
    Send(Vec<u8>),
    /// The request is complete: carry it out and answer with [`reply`].
    Request(Request),
    /// Send these bytes (maybe none) and close.
    Close(Vec<u8>, Refusal),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Version,
    Methods,
    Auth,
    Request5,
    Request4,
    Done,
}

/// One client's negotiation.
pub struct Negotiator {
    input: InputBuffer,
    state: State,
    creds: Option<Rc<Credentials>>,
    user: Option<String>,
    /// A complete request refused for who asked, not for what (SOCKS4 where a login is
    /// required), for the log.
    refused: Option<Request>,
}

/// Where a NUL-terminated field starting at `from` ends: `Ok(Some(nul))`, `Ok(None)` to wait
/// for more, `Err` once it passed `MAX_FIELD` bytes without its NUL.
fn nul_field(buf: &[u8], from: usize) -> Result<Option<usize>, ()> {
    let window = buf.get(from..).unwrap_or_default();
    match window.iter().take(MAX_FIELD + 1).position(|b| *b == 0) {
        Some(i) => Ok(Some(from + i)),
        None if window.len() > MAX_FIELD => Err(()),
        None => Ok(None),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A host name as a target: an address literal becomes the address (no resolver), and a name
/// must be one a resolver could take (no NUL, no space, no control character).
fn host_of(name: &[u8]) -> Option<Host> {
    let s = std::str::from_utf8(name).ok()?;
    let ok = !s.is_empty() && s.bytes().all(|b| b > b' ' && b != 0x7f);
    ok.then(|| Host::parse(s))
}

/// What [`read_addr`] found at the start of its input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Addr {
    /// Cut short: more is to come (a request), or nothing will (a datagram).
    Short,
    /// An address type other than IPv4 (1), a name (3) or IPv6 (4).
    Type(u8),
    /// The host (`None`: an empty or malformed name), the port, and the bytes they took.
    Read(Option<Host>, u16, usize),
}

/// RFC 1928's `ATYP ADDR PORT`, read alike in a request and in a UDP datagram's header.
pub(crate) fn read_addr(b: &[u8]) -> Addr {
    let Some(&atyp) = b.first() else {
        return Addr::Short;
    };
    let (start, len) = match (atyp, b.get(1)) {
        (1, _) => (1, 4),
        (4, _) => (1, 16),
        (3, Some(n)) => (2, usize::from(*n)),
        (3, None) => return Addr::Short,
        (a, _) => return Addr::Type(a),
    };
    let end = start + len;
    let (Some(addr), Some(&[hi, lo])) = (b.get(start..end), b.get(end..end + 2)) else {
        return Addr::Short;
    };
    let host = if atyp == 3 {
        host_of(addr)
    } else {
        <[u8; 4]>::try_from(addr)
            .map(IpAddr::from)
            .or_else(|_| <[u8; 16]>::try_from(addr).map(IpAddr::from))
            .ok()
            .map(Host::Ip)
    };
    Addr::Read(host, u16::from_be_bytes([hi, lo]), end + 2)
}

/// Compares without stopping at the first difference (a password check).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Negotiator {
    /// A negotiation; with `creds`, SOCKS5 clients must log in (RFC 1929) and SOCKS4 is refused.
    pub fn new(creds: Option<Rc<Credentials>>) -> Self {
        Negotiator {
            input: InputBuffer::new(),
            state: State::Version,
            creds,
            user: None,
            refused: None,
        }
    }

    /// Bytes from the client.
    pub fn feed(&mut self, data: &[u8]) {
        self.input.feed(data);
    }

    /// True once the request was given (or the negotiation refused).
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// What the client sent after its request, for the destination.
    pub fn take_rest(&mut self) -> Vec<u8> {
        let rest = self.input.peek().to_vec();
        self.input.clear();
        rest
    }

    /// The version the client has spoken so far (its first byte said it: a SOCKS5 greeting,
    /// or a SOCKS4 request's `VN`), for the log of a negotiation cut short; `None` before
    /// any byte, and once done (the request or the refusal said it).
    pub fn version(&self) -> Option<Version> {
        match self.state {
            State::Methods | State::Auth | State::Request5 => Some(Version::V5),
            State::Request4 => Some(Version::V4),
            State::Version | State::Done => None,
        }
    }

    /// The request a refusal cut off when it was complete (its command and destination are
    /// known), once.
    pub fn take_refused(&mut self) -> Option<Request> {
        self.refused.take()
    }

    /// Bytes buffered and not yet taken.
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    /// What to send a client that stopped in the middle (EOF, or out of time): the refusal of
    /// the message it was sending, in its protocol.
    pub fn cut_short(&mut self) -> Vec<u8> {
        let r = match self.state {
            State::Version | State::Done => Vec::new(),
            State::Methods => vec![5, NO_ACCEPTABLE],
            State::Auth => vec![1, 1],
            State::Request5 => reply5(Failure::General.code5(), UNSPECIFIED),
            State::Request4 => reply4(None),
        };
        self.state = State::Done;
        r
    }

    fn close(&mut self, reply: Vec<u8>, why: Refusal) -> Option<Step> {
        self.state = State::Done;
        Some(Step::Close(reply, why))
    }

    /// The next thing to do, or `None` until more input arrives.
    pub fn next_step(&mut self) -> Option<Step> {
        loop {
            match self.state {
                State::Done => return None,
                State::Version => {
                    let v = *self.input.peek().first()?;
                    self.state = match v {
                        4 => State::Request4,
                        5 => State::Methods,
                        _ => return self.close(Vec::new(), Refusal::NotSocks(v)),
                    };
                }
                State::Methods => return self.methods(),
                State::Auth => return self.auth(),
                State::Request5 => return self.request5(),
                State::Request4 => return self.request4(),
            }
        }
    }

    /// `VER NMETHODS METHODS`: "no authentication" without `--auth`, username/password with.
    fn methods(&mut self) -> Option<Step> {
        let buf = self.input.peek();
        let n = usize::from(*buf.get(1)?);
        let offered = buf.get(2..2 + n)?;
        let want = if self.creds.is_some() {
            USER_PASS
        } else {
            NO_AUTH
        };
        let ok = offered.contains(&want);
        self.input.consume(2 + n);
        if !ok {
            return self.close(
                vec![5, NO_ACCEPTABLE],
                Refusal::NoMethod {
                    auth_required: want == USER_PASS,
                },
            );
        }
        self.state = if want == USER_PASS {
            State::Auth
        } else {
            State::Request5
        };
        Some(Step::Send(vec![5, want]))
    }

    /// RFC 1929: `VER ULEN UNAME PLEN PASSWD`, answered `1 0` (accepted) or `1 1` and a close.
    fn auth(&mut self) -> Option<Step> {
        let buf = self.input.peek();
        let ver = *buf.first()?;
        let ulen = usize::from(*buf.get(1)?);
        let plen = usize::from(*buf.get(2 + ulen)?);
        let pass = buf.get(3 + ulen..3 + ulen + plen)?;
        let user = &buf[2..2 + ulen];
        let ok = ver == 1
            && self
                .creds
                .as_ref()
                .and_then(|c| c.get(std::str::from_utf8(user).ok()?))
                .is_some_and(|p| same(p.as_bytes(), pass));
        let user = text(user);
        self.input.consume(3 + ulen + plen);
        if ver != 1 {
            return self.close(vec![1, 1], Refusal::BadAuthVersion(ver));
        }
        if !ok {
            return self.close(vec![1, 1], Refusal::AuthFailed(user));
        }
        self.user = Some(user);
        self.state = State::Request5;
        Some(Step::Send(vec![1, 0]))
    }

    /// `VER CMD RSV ATYP DST.ADDR DST.PORT`.
    fn request5(&mut self) -> Option<Step> {
        let fail = |f: Failure| reply5(f.code5(), UNSPECIFIED);
        let buf = self.input.peek();
        let ver = *buf.first()?;
        if ver != 5 {
            return self.close(fail(Failure::General), Refusal::BadRequestVersion(ver));
        }
        let cmd = *buf.get(1)?;
        let (host, port, len) = match read_addr(buf.get(3..).unwrap_or_default()) {
            Addr::Short => return None,
            Addr::Type(atyp) => {
                return self.close(
                    fail(Failure::AddressTypeNotSupported),
                    Refusal::AddressType(atyp),
                );
            }
            Addr::Read(host, port, len) => (host, port, len),
        };
        self.input.consume(3 + len);
        let cmd = match cmd {
            1 => Cmd::Connect,
            2 => Cmd::Bind,
            3 => Cmd::UdpAssociate,
            c => return self.close(fail(Failure::CommandNotSupported), Refusal::Command(c)),
        };
        let Some(host) = host else {
            return self.close(fail(Failure::HostUnreachable), Refusal::BadName);
        };
        self.state = State::Done;
        Some(Step::Request(Request {
            version: Version::V5,
            cmd,
            target: Target { host, port },
            user: self.user.take(),
        }))
    }

    /// `VN CD DSTPORT DSTIP USERID NUL`, and SOCKS4a's `HOSTNAME NUL` when DSTIP is 0.0.0.x.
    fn request4(&mut self) -> Option<Step> {
        let buf = self.input.peek();
        let head = buf.get(..8)?;
        let cd = head[1];
        let port = u16::from_be_bytes([head[2], head[3]]);
        let ip = Ipv4Addr::new(head[4], head[5], head[6], head[7]);
        let user_end = match nul_field(buf, 8) {
            Ok(end) => end?,
            Err(()) => return self.close(reply4(None), Refusal::TooLong("SOCKS4 user id")),
        };
        let user = text(&buf[8..user_end]);
        let socks4a = head[4..7] == [0, 0, 0] && head[7] != 0;
        let (host, end) = if socks4a {
            let name_end = match nul_field(buf, user_end + 1) {
                Ok(end) => end?,
                Err(()) => return self.close(reply4(None), Refusal::TooLong("SOCKS4a host name")),
            };
            (host_of(&buf[user_end + 1..name_end]), name_end + 1)
        } else {
            (Some(Host::Ip(ip.into())), user_end + 1)
        };
        self.input.consume(end);
        let cmd = match cd {
            1 => Cmd::Connect,
            2 => Cmd::Bind,
            c => return self.close(reply4(None), Refusal::Command(c)),
        };
        if self.creds.is_some() {
            self.refused = host.map(|host| Request {
                version: Version::V4,
                cmd,
                target: Target { host, port },
                user: Some(user),
            });
            return self.close(reply4(None), Refusal::Socks4WithAuth);
        }
        let Some(host) = host else {
            return self.close(reply4(None), Refusal::BadName);
        };
        self.state = State::Done;
        Some(Step::Request(Request {
            version: Version::V4,
            cmd,
            target: Target { host, port },
            user: Some(user),
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests;
