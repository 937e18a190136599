//! Listening ports: binding endpoints, accepting with a connection limit, closing; and
//! hand-off ports, whose accepted sockets go out as descriptors (inetd's `nowait` children).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::{Interest, Token};
use socket2::{Domain, Socket, Type};

use super::conn::{NetSocket, Stream};
use super::sockfile::SocketFile;
use super::stats;
use super::{Entry, FactoryId, Reactor};
use crate::address::Address;
use crate::endpoint::{Endpoint, SystemdDomain};
use crate::protocol::Room;
use crate::throttle::LogThrottle;
use crate::timer::Tick;
use crate::tls::TlsContext;
use crate::tls::stream::TlsStream;
use crate::transport::{ConnId, ConnState};
use std::rc::Rc;

/// Identifies a listening port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerId(pub(crate) usize);

/// A port could not be opened; `Display` is twistd's one-line `Couldn't listen on ...`.
#[derive(Debug)]
pub struct ListenError {
    /// What could not be listened on: a port, or a socket path.
    pub what: String,
    /// Why (address in use, permission denied, ...).
    pub error: io::Error,
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Couldn't listen on {}: {}.", self.what, self.error)
    }
}

impl std::error::Error for ListenError {}

pub(crate) enum ListenSock {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

/// Whether a listener takes connections, and if not, what brings it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Accepting {
    /// Accepting as connections arrive.
    Open,
    /// At its factory's connection limit: resumed when one of those connections closes, or
    /// when the factory said one may be given up (`Room::After`).
    AtLimit,
    /// accept(2) ran out of descriptors or memory: retried after a pause, or as soon as a
    /// connection closes and gives one back.
    BackingOff,
}

/// What the oldest handshake of a factory at its limit allows
/// ([`Reactor::stalled_handshake`]).
enum Stalled {
    /// It has passed [`HANDSHAKE_GRACE`]: closed once a client is accepted for its slot.
    Due(ConnId),
    /// It passes the grace then, if still handshaking.
    At(Instant),
    /// None is handshaking.
    None,
}

/// Whether `id` is still a live connection in its TLS handshake.
fn still_handshaking(entries: &slab::Slab<Entry>, id: ConnId) -> bool {
    handshake_activity(entries, id).is_some()
}

/// The last activity of `id` (its accept, or the last bytes it sent: handshake records
/// count, `Conn::took_input`), if it is still a live connection in its TLS handshake.
fn handshake_activity(entries: &slab::Slab<Entry>, id: ConnId) -> Option<Tick> {
    match entries.get(id.key as usize) {
        Some(Entry::Conn(c))
            if c.conn.st.id == id && crate::output::Socket::handshaking(&c.conn.socket) =>
        {
            Some(c.conn.st.last_activity)
        }
        _ => None,
    }
}

/// The kernel's retransmission timeout for connection `id`, if it is a live TCP one.
fn retransmit_timeout(entries: &slab::Slab<Entry>, id: ConnId) -> Option<Duration> {
    match entries.get(id.key as usize) {
        Some(Entry::Conn(c)) if c.conn.st.id == id => c.conn.socket.retransmit_timeout(),
        _ => None,
    }
}

/// How long a handshake may be silent before it is closed for room: [`HANDSHAKE_GRACE`],
/// or twice the connection's retransmission timeout where that is longer. A segment the
/// client sent and the path lost arrives a retransmission timeout late (the client's, about
/// the server's own: both follow the round trip), and until then the handshake looks
/// silent; a grace of 1 s closed about 1 in 20 honest handshakes at 600 ms and 3% loss. On
/// loopback and LANs the timeout is the kernel's minimum, 200 ms, and the grace stays 1 s;
/// on a slow path a silent client keeps its slot a few seconds longer, never past the
/// handshake's 10 s deadline.
fn handshake_grace(rto: Option<Duration>) -> Duration {
    rto.map_or(HANDSHAKE_GRACE, |rto| HANDSHAKE_GRACE.max(rto * 2))
}

/// What a connection a factory names for room allows ([`Reactor::for_room`]).
enum ForRoom {
    /// It may be closed: nothing would be lost.
    Quiet,
    /// It stays open: its socket still has bytes to deliver or unread input.
    NotQuiet,
    /// Not a live connection of that factory's: nothing to do.
    NotOurs,
}

/// The connection the accept gives up for the client it takes, once accept(2) has it.
#[derive(Clone, Copy)]
enum Evict {
    /// The oldest stalled handshake ([`Reactor::stalled_handshake`]).
    Stalled(ConnId),
    /// The one the factory named, found quiet ([`Reactor::give_room`]).
    Room(ConnId),
}

/// How many connections a factory may name that are not quiet, per listener and turn,
/// before the listener pauses for [`ROOM_RETRY`] (so a factory naming the same one again
/// does not spin).
const ROOM_DECLINES_PER_TURN: usize = 8;
/// How soon a listener whose factory named only connections still delivering asks again.
const ROOM_RETRY: Duration = Duration::from_millis(50);

/// How long a connection accepted on a TLS listener may go without sending anything during
/// its handshake before, with its factory at its limit and a client waiting, the reactor
/// closes it to let the client in ([`Reactor::stalled_handshake`]). Silence, not age: on a
/// slow link an honest handshake lasts several round trips (TLS 1.3's client sends its
/// request right behind its Finished, and the server waits a whole round trip for it; a
/// lost segment adds a retransmission), and an age limit of a second closed 1 in 8 of them
/// at 600 ms and 3% loss. What the rule is for is unchanged: a client that sends nothing, or
/// half a ClientHello and then nothing, is silent and goes after the grace as before. One
/// that keeps sending a byte now and then keeps its slot at most until the 10 s deadline
/// (nginx has no such rule at all: a handshake holds its slot until its timeout). Not
/// shorter, for the reason of the metrics responder's head grace: a client let in by a
/// burst of newcomers must not be closed by the next ones (up to 128 accepts a turn) before
/// its ClientHello has arrived.
const HANDSHAKE_GRACE: Duration = Duration::from_secs(1);

/// How long a listener out of descriptors waits before it tries again.
const BACKOFF: Duration = Duration::from_millis(100);
/// The most often the log says a listener paused at its connection limit (each pause is
/// counted in `limit_pauses`, the metrics' `twistrs_connection_limit_pauses_total`).
const LIMIT_LOG_EVERY: Duration = Duration::from_secs(60);
/// Connections one listener accepts per reactor turn before the others have their go.
const ACCEPTS_PER_TURN: usize = 128;

/// accept(2) errors that concern only the connection being accepted (the peer went away, or
/// a network error already pending on it, per accept(2)'s notes): take the next one.
fn retry_at_once(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EINTR
                | libc::EPROTO
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETDOWN
                | libc::ENETUNREACH
        )
    )
}

/// True if a client waits in `sock`'s backlog (a listening socket polls readable then).
fn pending(sock: &ListenSock) -> bool {
    use std::os::fd::AsRawFd;
    let fd = match sock {
        ListenSock::Tcp(s) => s.as_raw_fd(),
        ListenSock::Unix(s) => s.as_raw_fd(),
    };
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one initialised pollfd, for the duration of the call; no wait.
    unsafe { libc::poll(&mut pfd, 1, 0) == 1 && pfd.revents & libc::POLLIN != 0 }
}

/// A connection accepted by a hand-off port ([`Reactor::adopt_handoff_port`]).
pub struct Accepted {
    /// The connected socket, in blocking mode (what a child process expects on its stdin)
    /// and close-on-exec. Closing it is a plain close(2): nothing is shut down, so a copy
    /// given to a child stays connected.
    pub socket: OwnedFd,
    /// The client's address.
    pub peer: Address,
    /// Our side's address (the one the client reached).
    pub host: Address,
}

/// What a hand-off port does with each connection it accepts.
pub type OnAccept = Box<dyn FnMut(Accepted)>;

/// What a listener does with the connections it accepts.
pub(crate) enum Target {
    /// Builds a protocol with this factory: the usual listener.
    Factory(usize),
    /// Gives the socket away (no protocol, no connection in the reactor).
    HandOff { name: String, on_accept: OnAccept },
}

/// The name of a listener in log lines: its factory's, or its hand-off name.
fn target_name<'a>(factories: &'a [super::FactorySlot], t: &'a Target) -> &'a str {
    match t {
        Target::Factory(f) => factories[*f].factory.name(),
        Target::HandOff { name, .. } => name,
    }
}

/// A listening stream port.
pub(crate) struct Listener {
    sock: ListenSock,
    target: Target,
    pub(crate) accepting: Accepting,
    host: Address,
    /// What the "starting on" and "Closed" lines name: a port number or a quoted path.
    label: String,
    /// A UNIX socket file and lock link to remove when closing.
    cleanup: Option<SocketFile>,
    /// The endpoint string, to match the socket up with a successor's listener.
    endpoint: String,
    /// TLS for every connection it accepts.
    tls: Option<Rc<TlsContext>>,
    /// Its endpoint's index in its factory's `origins` (the metrics' per-listener counts).
    pub(crate) origin: u32,
    /// How often the log says this listener paused at its limit: a service churning at the
    /// limit pauses once per connection, and the log would say each one.
    limit_log: LogThrottle,
    /// How often the log says a handshake was given up for a client of this listener (a
    /// flood of stalled handshakes would have a line per close).
    stalled_log: LogThrottle,
}

impl Listener {
    /// The factory it builds protocols with; none for a hand-off port.
    pub(crate) fn factory(&self) -> Option<usize> {
        match self.target {
            Target::Factory(f) => Some(f),
            Target::HandOff { .. } => None,
        }
    }

    /// Its TLS context, for a `ssl:` or `tls:` listener.
    pub(crate) fn tls(&self) -> Option<&TlsContext> {
        self.tls.as_deref()
    }
}

/// A listening socket with what the listener table keeps about it: its local address, the
/// label of its log lines, and a UNIX socket file (and lock) to remove when it closes.
type Opened = (ListenSock, Address, String, Option<SocketFile>);

/// A TCP listener, its local address read back (the real port after port 0).
fn adopt_tcp(l: mio::net::TcpListener, what: &str) -> Result<Opened, ListenError> {
    let local = l.local_addr().map_err(|e| listen_err(what, e))?;
    Ok((
        ListenSock::Tcp(l),
        Address::Tcp(local),
        local.port().to_string(),
        None,
    ))
}

fn listen_err(what: impl Into<String>, error: io::Error) -> ListenError {
    ListenError {
        what: what.into(),
        error,
    }
}

fn bind_tcp(addr: SocketAddr, backlog: u32) -> io::Result<mio::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.set_cloexec(true)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog.min(i32::MAX as u32) as i32)?;
    sock.set_nonblocking(true)?;
    Ok(mio::net::TcpListener::from_std(sock.into()))
}

/// A socket standing in for `ep` in a dry run ([`Reactor::check_only`]): bound where the
/// endpoint would be but on port 0 (a UNIX one at an abstract address), after the checks
/// binding the real one makes. With `probe`, a TCP or UDP endpoint's own port is bound for
/// a moment first (never listened on, so no connection is taken), which tells a port in use
/// or one that needs privileges. A systemd socket is systemd's to check: a TCP stand-in.
fn standin(ep: &Endpoint, probe: bool) -> io::Result<OwnedFd> {
    let any = |v6: bool| {
        if v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
    };
    let (addr, kind) = match ep {
        Endpoint::Tcp { interface, v6, .. } => {
            let ip = match interface {
                Some(i) => i.resolve(*v6)?,
                None => any(*v6),
            };
            (SocketAddr::new(ip, 0), Type::STREAM)
        }
        Endpoint::Udp { interface, .. } => {
            let ip = match interface {
                Some(i) => i.resolve(false)?,
                None => any(false),
            };
            (SocketAddr::new(ip, 0), Type::DGRAM)
        }
        Endpoint::Systemd { .. } => (
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            Type::STREAM,
        ),
        Endpoint::Unix { path, lockfile, .. } => return unix_standin(path, *lockfile, probe),
    };
    if probe && let Endpoint::Tcp { port, .. } | Endpoint::Udp { port, .. } = ep {
        probe_port(SocketAddr::new(addr.ip(), *port), kind)?;
    }
    let sock = Socket::new(Domain::for_address(addr), kind, None)?;
    sock.set_cloexec(true)?;
    sock.bind(&addr.into())?;
    if kind == Type::STREAM {
        sock.listen(1)?;
    }
    Ok(sock.into())
}

/// Binds `addr` for a moment as a start would (SO_REUSEADDR for TCP, as `bind_tcp`), without
/// listening: fails as the start's bind would, with the port in use or privileged. Port 0
/// is always free.
pub(crate) fn probe_port(addr: SocketAddr, kind: Type) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let sock = Socket::new(Domain::for_address(addr), kind, None)?;
    sock.set_cloexec(true)?;
    if kind == Type::STREAM {
        sock.set_reuse_address(true)?;
    }
    sock.bind(&addr.into())
}

/// Checks that a UNIX socket could be made at `path` (a directory there that we may write,
/// no other kind of file in the way, a name that fits), then binds an abstract stand-in.
/// With `probe` (no server of ours runs), a socket file already there fails as the start's
/// bind would: always without `lockfile`, and with it while its lock names a live process.
fn unix_standin(path: &Path, lockfile: bool, probe: bool) -> io::Result<OwnedFd> {
    use std::os::linux::net::SocketAddrExt;
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    socket2::SockAddr::unix(path)?;
    crate::plugin::writable_dir(crate::plugin::dir_of(path))?;
    let there = std::fs::symlink_metadata(path).ok();
    if there.as_ref().is_some_and(|md| !md.file_type().is_socket()) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way",
        ));
    }
    if probe && there.is_some() {
        let live = lock_owner(&lock_path(path)).is_some_and(|pid| pid != std::process::id());
        if !lockfile || live {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                if lockfile {
                    "in use: its lock names a running process"
                } else {
                    "Address already in use: the socket file is there (lockfile=1 replaces a stale one)"
                },
            ));
        }
    }
    let name = format!(
        "twistrs-check-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    Ok(std::os::unix::net::UnixListener::bind_addr(&addr)?.into())
}

/// `PATH.lock`, the symlink naming the process that holds a UNIX socket's path.
fn lock_path(path: &Path) -> PathBuf {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    PathBuf::from(lock)
}

/// The live process the lock `lock` names, if any (one we may not signal is alive too), and
/// if the lock could be its own: a link made by root, by us, or by the user that process
/// runs as. One the service user put in its own directory naming another user's process
/// (`PATH.lock -> 1`) would otherwise refuse every start on that path.
fn lock_owner(lock: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let made_by = std::fs::symlink_metadata(lock).ok()?.uid();
    let pid = std::fs::read_link(lock)
        .ok()?
        .to_str()?
        .parse::<i32>()
        .ok()?;
    let alive = crate::owner::alive(pid);
    let its_own = crate::owner::trusted(made_by)
        || crate::owner::effective_ids(pid).is_some_and(|(uid, _)| uid == made_by);
    (alive && its_own).then_some(pid as u32)
}

/// Takes the `PATH.lock` symlink (Twisted's `FilesystemLock`): a lock naming a live process
/// means the socket is in use; a stale one is replaced, and so is a stale socket file.
fn lock_unix_path(path: &Path) -> io::Result<PathBuf> {
    let lock = lock_path(path);
    let me = std::process::id().to_string();
    for _ in 0..3 {
        match std::os::unix::fs::symlink(&me, &lock) {
            Ok(()) => {
                if let Ok(md) = std::fs::symlink_metadata(path)
                    && md.file_type().is_socket()
                {
                    std::fs::remove_file(path)?;
                }
                return Ok(lock);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if lock_owner(&lock).is_some_and(|pid| pid != std::process::id()) {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("locked by a running process ({})", lock.display()),
                    ));
                }
                let _ = std::fs::remove_file(&lock);
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("could not take the lock {}", lock.display()),
    ))
}

/// Binds a UNIX socket at `path` whose file has the permissions `mode`, made so by the umask
/// around bind(2), not by a chmod(2) after it (as twistd does): chmod follows a link, and in
/// between whoever may write the directory (the service user, in a /run directory of its
/// own, while a restart binds as root) could put one at `path` and have root chmod any file.
/// Listeners are bound at start, before any request is served, so no other thread of ours
/// is making files under the brief umask.
fn bind_unix(path: &Path, mode: u32, backlog: u32) -> io::Result<mio::net::UnixListener> {
    use nix::sys::stat::{Mode, umask};
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    sock.set_cloexec(true)?;
    let addr = socket2::SockAddr::unix(path)?;
    let before = umask(Mode::from_bits_truncate(!mode & 0o777));
    let bound = sock.bind(&addr);
    umask(before);
    bound?;
    sock.listen(backlog.min(i32::MAX as u32) as i32)?;
    sock.set_nonblocking(true)?;
    Ok(mio::net::UnixListener::from_std(sock.into()))
}

/// The descriptor systemd passed for `index`, checked against LISTEN_PID and LISTEN_FDS.
/// Unlike twistd, LISTEN_FDNAMES is not required.
fn systemd_fd(index: u32) -> io::Result<RawFd> {
    let pid = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|v| v.parse::<u32>().ok());
    let fds = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok());
    match (pid, fds) {
        (Some(p), Some(n)) if p == std::process::id() && index < n => Ok(3 + index as RawFd),
        (Some(p), Some(_)) if p == std::process::id() => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("systemd passed fewer than {} sockets", index + 1),
        )),
        _ => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no sockets were passed by systemd (LISTEN_PID/LISTEN_FDS unset or for another process)",
        )),
    }
}

impl Reactor {
    /// Opens a stream endpoint for `factory`. Logs twistd's `Echo starting on 8080`.
    pub fn listen(&mut self, ep: &Endpoint, factory: FactoryId) -> Result<ListenerId, ListenError> {
        let key = ep.to_string();
        // Certificates first: a bad file is a start-up error before anything is bound.
        let tls = self.tls_for(ep, factory.0)?;
        if let Some(fd) = self.take_inherited(&key) {
            return self.listen_inherited(ep, fd, Target::Factory(factory.0), tls);
        }
        if self.check_only && !ep.is_datagram() {
            self.check_twice(ep)?;
            let fd = standin(ep, self.probe_ports).map_err(|e| listen_err(key, e))?;
            let id = self.listen_inherited(ep, fd, Target::Factory(factory.0), tls)?;
            // What the service reads back is the port it asked for, not the stand-in's.
            if let Endpoint::Tcp { port, .. } = ep
                && let Some(Entry::Listener(l)) = self.entries.get_mut(id.0)
                && let Address::Tcp(a) = &mut l.host
                && *port != 0
            {
                a.set_port(*port);
            }
            return Ok(id);
        }
        let (sock, host, label, cleanup) = match ep {
            Endpoint::Tcp {
                port,
                interface,
                backlog,
                v6,
                ..
            } => {
                let ip = match interface {
                    Some(i) => i.resolve(*v6).map_err(|e| listen_err(key.clone(), e))?,
                    None if *v6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                };
                let addr = SocketAddr::new(ip, *port);
                let l = bind_tcp(addr, *backlog).map_err(|e| listen_err(addr.to_string(), e))?;
                adopt_tcp(l, &addr.to_string())?
            }
            Endpoint::Unix {
                path,
                mode,
                backlog,
                lockfile,
            } => {
                let what = path.display().to_string();
                let lock = if *lockfile {
                    Some(lock_unix_path(path).map_err(|e| listen_err(&what, e))?)
                } else {
                    None
                };
                let l = bind_unix(path, *mode, *backlog).map_err(|e| {
                    if let Some(l) = &lock {
                        let _ = std::fs::remove_file(l);
                    }
                    listen_err(&what, e)
                })?;
                let noted = SocketFile::note(path, lock.as_deref());
                (
                    ListenSock::Unix(l),
                    Address::Unix(Some(path.clone())),
                    format!("'{}'", path.display()),
                    noted,
                )
            }
            Endpoint::Systemd { domain, index, .. } => {
                let what = ep.to_string();
                let fd = systemd_fd(*index).map_err(|e| listen_err(&what, e))?;
                // SAFETY: systemd hands these descriptors to us; each index is taken once.
                let sock = unsafe { Socket::from_raw_fd(fd) };
                let _ = sock.set_cloexec(true);
                sock.set_nonblocking(true)
                    .map_err(|e| listen_err(&what, e))?;
                match domain {
                    SystemdDomain::Unix => {
                        let l = mio::net::UnixListener::from_std(sock.into());
                        let path = l
                            .local_addr()
                            .ok()
                            .and_then(|a| a.as_pathname().map(Path::to_path_buf));
                        let label =
                            format!("'{}'", path.as_deref().unwrap_or(Path::new("")).display());
                        (ListenSock::Unix(l), Address::Unix(path), label, None)
                    }
                    SystemdDomain::Inet | SystemdDomain::Inet6 => {
                        adopt_tcp(mio::net::TcpListener::from_std(sock.into()), &what)?
                    }
                }
            }
            Endpoint::Udp { .. } => {
                return Err(listen_err(
                    ep.to_string(),
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a datagram endpoint needs a datagram protocol",
                    ),
                ));
            }
        };
        self.add_listener(
            sock,
            Target::Factory(factory.0),
            host,
            label,
            cleanup,
            key,
            tls,
        )
    }

    /// Hands a predecessor's listening socket for `endpoint` to the next `listen` of it.
    pub fn inherit_listener(&mut self, endpoint: String, fd: std::os::fd::OwnedFd) {
        // At once, not when it is listened on: a child started meanwhile must not get it.
        let _ = nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        self.inherited.push((endpoint, fd));
    }

    /// The first socket handed over under `endpoint`. Sockets of one endpoint string (port 0,
    /// given twice) are taken in the order they were handed over, which is the order the
    /// predecessor listened in: `remove`, not `swap_remove`, which would move a later one of
    /// three ahead of the second.
    pub(crate) fn take_inherited(&mut self, endpoint: &str) -> Option<std::os::fd::OwnedFd> {
        let i = self.inherited.iter().position(|(e, _)| e == endpoint)?;
        Some(self.inherited.remove(i).1)
    }

    /// Serves a listening socket the caller opened (Twisted's `adoptStreamPort`), for
    /// sockets that endpoints cannot describe (inetd's IPv6-only ones). `ep` names it: the
    /// "starting on" line, and the key a restart's successor finds it under
    /// ([`Reactor::take_inherited_socket`]).
    pub fn adopt_stream_port(
        &mut self,
        fd: OwnedFd,
        ep: &Endpoint,
        factory: FactoryId,
    ) -> Result<ListenerId, ListenError> {
        let tls = self.tls_for(ep, factory.0)?;
        self.listen_inherited(ep, fd, Target::Factory(factory.0), tls)
    }

    /// A listening socket whose connections are handed over instead of served: `on_accept`
    /// gets each accepted socket (see [`Accepted`]), for a child process to take over
    /// (inetd's `nowait` services). Accepting follows the usual rules (a share per turn,
    /// a pause when descriptors run out) with no connection limit of the reactor's. `ep`
    /// names the socket as for [`Reactor::adopt_stream_port`]; TLS endpoints are refused.
    pub fn adopt_handoff_port(
        &mut self,
        fd: OwnedFd,
        ep: &Endpoint,
        name: &str,
        on_accept: OnAccept,
    ) -> Result<ListenerId, ListenError> {
        if ep.tls().is_some() {
            return Err(listen_err(
                ep.to_string(),
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a hand-off port cannot do TLS: its sockets go to other programs",
                ),
            ));
        }
        let target = Target::HandOff {
            name: name.to_string(),
            on_accept,
        };
        self.listen_inherited(ep, fd, target, None)
    }

    /// The socket a restart's predecessor handed over for `ep`, if any: a caller that opens
    /// its own sockets ([`Reactor::adopt_stream_port`]) takes it instead of binding anew.
    /// In a dry run ([`Reactor::check_only`]) it is a stand-in; if none can be made, the
    /// caller's own bind reports why.
    pub fn take_inherited_socket(&mut self, ep: &Endpoint) -> Option<OwnedFd> {
        if self.check_only {
            return standin(ep, self.probe_ports).ok();
        }
        self.take_inherited(&ep.to_string())
    }

    /// In a dry run: fails as the start's bind would for a TCP port this command line
    /// listens on already (the same address, or one its family's wildcard covers, on the
    /// same port). Stand-ins are bound on port 0, so the check would not meet it otherwise.
    fn check_twice(&mut self, ep: &Endpoint) -> Result<(), ListenError> {
        let Endpoint::Tcp {
            port,
            interface,
            v6,
            ..
        } = ep
        else {
            return Ok(());
        };
        if *port == 0 {
            return Ok(());
        }
        let ip = match interface {
            Some(i) => i.resolve(*v6).map_err(|e| listen_err(ep.to_string(), e))?,
            None if *v6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let addr = SocketAddr::new(ip, *port);
        let clash = |a: &SocketAddr| {
            a.port() == addr.port()
                && a.is_ipv4() == addr.is_ipv4()
                && (a.ip() == ip || a.ip().is_unspecified() || ip.is_unspecified())
        };
        if self.checked_tcp.iter().any(clash) {
            return Err(listen_err(
                addr.to_string(),
                io::Error::from_raw_os_error(libc::EADDRINUSE),
            ));
        }
        self.checked_tcp.push(addr);
        Ok(())
    }

    fn listen_inherited(
        &mut self,
        ep: &Endpoint,
        fd: std::os::fd::OwnedFd,
        target: Target,
        tls: Option<Rc<TlsContext>>,
    ) -> Result<ListenerId, ListenError> {
        let what = ep.to_string();
        let sock = Socket::from(fd);
        let _ = sock.set_cloexec(true);
        sock.set_nonblocking(true)
            .map_err(|e| listen_err(&what, e))?;
        let (sock, host, label, cleanup) = match ep {
            Endpoint::Unix { path, lockfile, .. } => {
                // A dry run's stand-in: the real socket file and its lock are the running
                // server's, if any, and left alone; so are a worker's master's.
                let real = !self.check_only && !self.sockets_elsewhere;
                let lock = (*lockfile && real).then(|| {
                    let l = lock_path(path);
                    // The lock names the process that will remove the socket at exit.
                    let _ = std::fs::remove_file(&l);
                    let _ = std::os::unix::fs::symlink(std::process::id().to_string(), &l);
                    l
                });
                let noted = real
                    .then(|| SocketFile::note(path, lock.as_deref()))
                    .flatten();
                (
                    ListenSock::Unix(mio::net::UnixListener::from_std(sock.into())),
                    Address::Unix(Some(path.clone())),
                    format!("'{}'", path.display()),
                    noted,
                )
            }
            _ => adopt_tcp(mio::net::TcpListener::from_std(sock.into()), &what)?,
        };
        self.add_listener(sock, target, host, label, cleanup, what, tls)
    }

    /// Every listening socket with its endpoint string, for a successor to inherit.
    pub fn listener_fds(&self) -> Vec<(String, RawFd)> {
        use std::os::fd::AsRawFd;
        self.entries
            .iter()
            .filter_map(|(_, e)| match e {
                Entry::Listener(l) => Some((
                    l.endpoint.clone(),
                    match &l.sock {
                        ListenSock::Tcp(s) => s.as_raw_fd(),
                        ListenSock::Unix(s) => s.as_raw_fd(),
                    },
                )),
                // A port a protocol opened for itself dies with its connection.
                Entry::Udp(u) if u.owner.is_none() => Some((u.endpoint.clone(), u.raw_fd())),
                Entry::Watched(w) => Some((w.endpoint.clone(), w.raw_fd())),
                _ => None,
            })
            .collect()
    }

    /// The successor owns the sockets now: forget UNIX socket files so closing our copies
    /// leaves them in place.
    pub fn abandon_listeners(&mut self) {
        for (_, e) in self.entries.iter_mut() {
            if let Entry::Listener(l) = e {
                l.cleanup = None;
            }
        }
    }

    /// The UNIX socket files of every listener, taken from them (closing a listener then
    /// leaves its file in place): for a `--workers` master, which binds on a reactor it then
    /// drops and removes the files itself once its last worker is gone.
    pub fn take_socket_files(&mut self) -> Vec<SocketFile> {
        self.entries
            .iter_mut()
            .filter_map(|(_, e)| match e {
                Entry::Listener(l) => l.cleanup.take(),
                _ => None,
            })
            .collect()
    }

    /// The TLS context of a TLS endpoint, its certificates loaded (and reloaded with the log
    /// files: SIGHUP); the factory's ALPN protocols are offered.
    fn tls_for(
        &mut self,
        ep: &Endpoint,
        factory: usize,
    ) -> Result<Option<Rc<TlsContext>>, ListenError> {
        let Some(spec) = ep.tls() else {
            return Ok(None);
        };
        let alpn = self.factories[factory].factory.alpn_protocols();
        let ctx = TlsContext::load(spec, alpn).map_err(|e| {
            listen_err(
                ep.to_string(),
                io::Error::new(io::ErrorKind::InvalidData, e),
            )
        })?;
        let ctx = Rc::new(ctx);
        let reload = ctx.clone();
        self.handle.on_reopen(Box::new(move || reload.reload()));
        Ok(Some(ctx))
    }

    #[allow(clippy::too_many_arguments)]
    fn add_listener(
        &mut self,
        mut sock: ListenSock,
        target: Target,
        host: Address,
        label: String,
        cleanup: Option<SocketFile>,
        endpoint: String,
        tls: Option<Rc<TlsContext>>,
    ) -> Result<ListenerId, ListenError> {
        let key = self.entries.vacant_key();
        let src: &mut dyn mio::event::Source = match &mut sock {
            ListenSock::Tcp(l) => l,
            ListenSock::Unix(l) => l,
        };
        // A listener the poll cannot watch would never accept: a start-up error.
        self.poll
            .registry()
            .register(src, Token(key), Interest::READABLE)
            .map_err(|e| listen_err(&endpoint, e))?;
        // As twistd: `Site (TLS) starting on 8443`.
        let over = if tls.is_some() { " (TLS)" } else { "" };
        let name = target_name(&self.factories, &target);
        log::info!(target: crate::logsys::BARE, "{name}{over} starting on {label}");
        let mut origin = 0;
        if let Target::Factory(f) = target {
            let slot = &mut self.factories[f];
            origin = stats::origin(&mut slot.origins, &endpoint);
            slot.listeners += 1;
            if slot.listeners == 1 && !self.bind_only {
                log::info!(target: crate::logsys::BARE, "Starting factory {}", slot.factory.name());
                slot.factory.start_factory(&self.handle);
            }
        }
        self.listener_keys.push(key);
        self.entries.insert(Entry::Listener(Box::new(Listener {
            sock,
            target,
            accepting: Accepting::Open,
            host,
            label,
            cleanup,
            endpoint,
            tls,
            origin,
            limit_log: LogThrottle::new(LIMIT_LOG_EVERY),
            stalled_log: LogThrottle::new(LIMIT_LOG_EVERY),
        })));
        Ok(ListenerId(key))
    }

    /// The address a listener is bound to (read back after binding port 0).
    pub fn listener_address(&self, id: ListenerId) -> Option<Address> {
        match self.entries.get(id.0) {
            Some(Entry::Listener(l)) => Some(l.host.clone()),
            Some(Entry::Udp(u)) => Some(u.host.clone()),
            Some(Entry::Watched(w)) => Some(w.host.clone()),
            _ => None,
        }
    }

    /// Closes a listening port (stream or datagram). Logs twistd's `(TCP Port 8080 Closed)`.
    pub fn stop_listening(&mut self, id: ListenerId) {
        match self.entries.get(id.0) {
            Some(Entry::Listener(_)) => {}
            Some(Entry::Udp(_)) => return self.stop_udp(id.0),
            Some(Entry::Watched(_)) => return self.stop_watched(id.0),
            _ => return,
        }
        // The slot is freed after the batch: a readiness already collected for this port
        // (a port closed by a service mid-turn, inetd's reload) must reach nothing.
        let Some(entry) = self.entries.get_mut(id.0) else {
            return;
        };
        let Entry::Listener(mut l) = std::mem::replace(entry, Entry::Closed) else {
            return;
        };
        self.to_free.push(id.0);
        self.listener_keys.retain(|&k| k != id.0);
        let kind = match &mut l.sock {
            ListenSock::Tcp(s) => {
                let _ = self.poll.registry().deregister(s);
                if l.tls.is_some() { "TLS" } else { "TCP" }
            }
            ListenSock::Unix(s) => {
                let _ = self.poll.registry().deregister(s);
                "UNIX"
            }
        };
        drop(l.sock);
        if let Some(files) = l.cleanup {
            files.remove();
        }
        log::info!(target: crate::logsys::BARE, "({kind} Port {} Closed)", l.label.trim_matches('\''));
        if let Target::Factory(f) = l.target {
            let slot = &mut self.factories[f];
            slot.listeners -= 1;
            if slot.listeners == 0 && !self.bind_only {
                log::info!(target: crate::logsys::BARE, "Stopping factory {}", slot.factory.name());
                slot.factory.stop_factory();
            }
        }
    }

    /// Accepts until `WouldBlock`, the factory's limit, a descriptor shortage, or this turn's
    /// share (then again next turn: no new readiness edge would come for what is queued).
    pub(crate) fn accept(&mut self, key: usize) {
        let mut declined = 0;
        'accepts: for _ in 0..ACCEPTS_PER_TURN {
            // The connection whose slot the client accepted next takes.
            let mut evict = None;
            let Some(Entry::Listener(l)) = self.entries.get_mut(key) else {
                return;
            };
            if let Target::Factory(f) = l.target {
                let slot = &mut self.factories[f];
                'full: {
                    if slot.max.is_none_or(|m| slot.conns < m) {
                        break 'full;
                    }
                    // Only for a client really waiting: no connection is closed for nobody.
                    let origin = l.origin as usize;
                    let waiting = pending(&l.sock);
                    // First the reactor's own rule: a connection stuck in its TLS handshake
                    // past the grace has given its protocol nothing, and goes before any the
                    // factory would name. It is closed only once the accept below has a
                    // client: under --workers every worker sees the one client waiting on
                    // the shared socket, and only the worker that takes it gives one up.
                    let mut stalled_at = None;
                    if waiting {
                        match self.stalled_handshake(f) {
                            Stalled::Due(id) => {
                                evict = Some(Evict::Stalled(id));
                                break 'full;
                            }
                            Stalled::At(at) => stalled_at = Some(at),
                            Stalled::None => {}
                        }
                    }
                    let slot = &mut self.factories[f];
                    // Over the limit only by a client kept when the connection named for it
                    // had input arrive before its close (`give_room`).
                    let over = slot.max.is_some_and(|m| slot.conns > m);
                    let room = if waiting {
                        slot.factory.make_room()
                    } else {
                        Room::Full
                    };
                    let retry_at = match room {
                        // As for a stalled handshake, closed only once the accept below has
                        // the client, for the same reason: under --workers every worker at
                        // its limit is woken by the one client, and each would close one.
                        Room::Close(id) => match self.for_room(f, id) {
                            // One over: this close is the one owed for the client kept then,
                            // made now, with no client taken for it, which restores the limit.
                            // While over, no client is taken for a factory's choice, so never
                            // more than one over (a stalled handshake's close is certain).
                            ForRoom::Quiet if over => {
                                self.close(id.key as usize, crate::error::Reason::Aborted);
                                self.factories[f].origins[origin].counts.limit_closes += 1;
                                self.factories[f].factory.room_made();
                                continue 'accepts;
                            }
                            ForRoom::Quiet => {
                                evict = Some(Evict::Room(id));
                                break 'full;
                            }
                            // Still delivering or with input waiting: the factory is asked
                            // again (it may name another), a few times a turn, then shortly.
                            ForRoom::NotQuiet if declined < ROOM_DECLINES_PER_TURN => {
                                declined += 1;
                                continue 'accepts;
                            }
                            ForRoom::NotQuiet => Some(self.handle.now() + ROOM_RETRY),
                            ForRoom::NotOurs => None,
                        },
                        Room::After(at) => Some(at),
                        Room::Full => None,
                    };
                    let retry_at = match (retry_at, stalled_at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    if let Some(at) = retry_at {
                        self.accept_retry_at = Some(self.accept_retry_at.map_or(at, |t| t.min(at)));
                    }
                    let Some(Entry::Listener(l)) = self.entries.get_mut(key) else {
                        return;
                    };
                    let slot = &mut self.factories[f];
                    if l.accepting != Accepting::AtLimit {
                        slot.origins[l.origin as usize].counts.limit_pauses += 1;
                        if l.limit_log.allow(self.handle.now()) {
                            log::warn!(target: crate::logsys::BARE,
                                "{}: connection limit ({}) reached; accepting paused",
                                slot.factory.name(), slot.conns);
                        }
                    }
                    l.accepting = Accepting::AtLimit;
                    return;
                }
            }
            let Some(Entry::Listener(l)) = self.entries.get_mut(key) else {
                return;
            };
            let handoff = matches!(l.target, Target::HandOff { .. });
            let accepted = match &l.sock {
                ListenSock::Tcp(s) => s.accept().map(|(s, peer)| {
                    // A socket handed to a program keeps the kernel's defaults.
                    if !handoff {
                        let _ = s.set_nodelay(true);
                    }
                    // Only a wildcard bind needs getsockname to know the local address.
                    let wildcard = l
                        .host
                        .socket_addr()
                        .is_some_and(|a| a.ip().is_unspecified());
                    let host = if wildcard {
                        s.local_addr().map_or(l.host.clone(), Address::Tcp)
                    } else {
                        l.host.clone()
                    };
                    (Stream::Tcp(s), Address::Tcp(peer), host)
                }),
                ListenSock::Unix(s) => s
                    .accept()
                    .map(|(s, _)| (Stream::Unix(s), Address::Unix(None), l.host.clone())),
            };
            match accepted {
                Ok((stream, peer, host)) => {
                    if l.accepting == Accepting::BackingOff {
                        let name = target_name(&self.factories, &l.target);
                        log::info!(target: crate::logsys::BARE, "{name} on {}: accepting again", l.label);
                    }
                    l.accepting = Accepting::Open;
                    match &mut l.target {
                        Target::Factory(f) => {
                            let (factory, origin, tls) = (*f, l.origin, l.tls.clone());
                            self.factories[factory].origins[origin as usize]
                                .counts
                                .accepted += 1;
                            let room = evict.map(|e| (key, e, &mut declined));
                            self.connection_accepted(
                                (factory, origin),
                                stream,
                                peer,
                                host,
                                tls,
                                room,
                            );
                        }
                        Target::HandOff { on_accept, .. } => {
                            let socket = match stream {
                                Stream::Tcp(s) => OwnedFd::from(s),
                                Stream::Unix(s) => OwnedFd::from(s),
                            };
                            // Blocking, as a program expects; the flag belongs to the open
                            // file, which only the program will use.
                            let _ = socket2::SockRef::from(&socket).set_nonblocking(false);
                            on_accept(Accepted { socket, peer, host });
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // accept(2) worked again, the queue is just empty: the shortage is over.
                    if l.accepting == Accepting::BackingOff {
                        let name = target_name(&self.factories, &l.target);
                        log::info!(target: crate::logsys::BARE, "{name} on {}: accepting again", l.label);
                        l.accepting = Accepting::Open;
                    }
                    return;
                }
                Err(e) if retry_at_once(&e) => continue,
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS/ENOMEM: back off instead of spinning on a full
                    // table. Said once when it starts and once when it ends.
                    if l.accepting != Accepting::BackingOff {
                        let name = target_name(&self.factories, &l.target);
                        log::error!(target: crate::logsys::BARE,
                            "{name} on {}: accept failed: {e}; pausing accepts until descriptors free up",
                            l.label);
                    }
                    l.accepting = Accepting::BackingOff;
                    let at = self.handle.now() + BACKOFF;
                    self.accept_retry_at = Some(self.accept_retry_at.map_or(at, |t| t.min(at)));
                    return;
                }
            }
        }
        self.resume_accept.push(key);
    }

    /// Whether `id`, named to make room for a new connection of `factory`
    /// ([`crate::protocol::Factory::make_room`]), may be closed: one of that factory's live
    /// connections whose socket is quiet (nothing left to deliver, nothing unread: see
    /// `Stream::quiet`).
    fn for_room(&mut self, factory: usize, id: ConnId) -> ForRoom {
        let Some(Entry::Conn(c)) = self.entries.get_mut(id.key as usize) else {
            return ForRoom::NotOurs;
        };
        if c.conn.st.id != id || c.factory() != Some(factory as u32) {
            return ForRoom::NotOurs;
        }
        // Nothing may be lost by the close: no output still in the process (the transport's
        // buffer, TLS records to write), none in the kernel, no input unread.
        if c.conn.st.buffered() > 0
            || crate::output::Socket::pending(&c.conn.socket)
            || !c.conn.socket.stream().is_none_or(|s| s.quiet())
        {
            return ForRoom::NotQuiet;
        }
        ForRoom::Quiet
    }

    /// Closes `id`, found quiet before the accept, for the client listener of `factory` has
    /// just taken; counted. Only its input can have changed since (pending output only
    /// drains, and nothing else ran): a request that arrived between the check and now, two
    /// system calls apart, must not be reset away. Then the factory is asked again, within
    /// the turn's [`ROOM_DECLINES_PER_TURN`] (the web plugin names the next idle one); and if
    /// it names none quiet, the client is kept anyway and the worker is one over its limit:
    /// closing the client instead would throw away what it sent, and it has already left
    /// the backlog. The next close for room, with a client waiting, takes no client (see
    /// `accept`), so it is never more than one over, and each close still counts for one
    /// client let in.
    fn give_room(&mut self, (factory, origin): (usize, u32), mut id: ConnId, declined: &mut usize) {
        loop {
            match self.for_room(factory, id) {
                ForRoom::Quiet => {
                    self.close(id.key as usize, crate::error::Reason::Aborted);
                    self.factories[factory].origins[origin as usize]
                        .counts
                        .limit_closes += 1;
                    self.factories[factory].factory.room_made();
                    return;
                }
                ForRoom::NotOurs => return,
                ForRoom::NotQuiet => {}
            }
            if *declined >= ROOM_DECLINES_PER_TURN {
                return;
            }
            *declined += 1;
            match self.factories[factory].factory.make_room() {
                Room::Close(next) => id = next,
                Room::After(_) | Room::Full => return,
            }
        }
    }

    /// The connection of `factory` (at its limit, a client waiting) in its TLS handshake
    /// that has sent nothing for longest, if that is longer than [`HANDSHAKE_GRACE`]: the
    /// accept closes it for the client it takes ([`Reactor::close_stalled_handshake`]). Such
    /// a connection has given its protocol nothing (no early data is taken), so nothing is
    /// lost; left alone it would hold its slot until the 10 s deadline, and a few clients that
    /// send half a ClientHello, or nothing, would keep everyone else out that long. A
    /// connection whose handshake has ended is never named. The queue is in the order of the
    /// times kept: a front entry that sent something since its time goes to the back with
    /// the time of its last bytes (or the back's, if later, which keeps the order and only
    /// ever gives more grace), so each connection is looked at once at the front per
    /// progress it made: O(1) amortised.
    fn stalled_handshake(&mut self, factory: usize) -> Stalled {
        let now = self.handle.tick();
        let queue = &mut self.factories[factory].handshaking;
        while let Some(&(id, at)) = queue.front() {
            let Some(last) = handshake_activity(&self.entries, id) else {
                queue.pop_front();
                continue;
            };
            if last > at {
                // Each entry moves once per call at most: its time is then its last activity.
                queue.pop_front();
                let back = queue.back().map_or(last, |&(_, t)| t.max(last));
                queue.push_back((id, back));
                continue;
            }
            let due = at.after(HANDSHAKE_GRACE);
            if now < due {
                return Stalled::At(self.handle.clock().instant(due));
            }
            // Over a slow path the grace is longer (`handshake_grace`): such a connection goes
            // to the back with the time that makes it due then (or the back's, if later), and
            // is due when it next reaches the front unless it sent something meanwhile.
            let grace = handshake_grace(retransmit_timeout(&self.entries, id));
            if grace > HANDSHAKE_GRACE && now < last.after(grace) {
                let mut at = last.after(grace - HANDSHAKE_GRACE);
                if let Some(&(_, back)) = queue.back() {
                    at = at.max(back);
                }
                queue.pop_front();
                queue.push_back((id, at));
                continue;
            }
            return Stalled::Due(id);
        }
        Stalled::None
    }

    /// Closes `id`, named by [`Reactor::stalled_handshake`] and still at the front of its
    /// factory's queue, for the client listener `key` has just accepted; counted and logged.
    fn close_stalled_handshake(&mut self, key: usize, (factory, origin): (usize, u32), id: ConnId) {
        let queue = &mut self.factories[factory].handshaking;
        if queue.front().is_some_and(|&(front, _)| front == id) {
            queue.pop_front();
        }
        if !still_handshaking(&self.entries, id) {
            return;
        }
        self.close(id.key as usize, crate::error::Reason::Aborted);
        self.factories[factory].origins[origin as usize]
            .counts
            .limit_closes += 1;
        self.log_stalled_close(key, factory);
    }

    /// Says, at most once a minute per listener, that handshakes are being given up at its
    /// factory's limit (each one is counted in `limit_closes`).
    fn log_stalled_close(&mut self, key: usize, factory: usize) {
        let now = self.handle.now();
        let Some(Entry::Listener(l)) = self.entries.get_mut(key) else {
            return;
        };
        if !l.stalled_log.allow(now) {
            return;
        }
        let slot = &self.factories[factory];
        log::warn!(target: crate::logsys::BARE,
            "{}: connection limit ({}) reached; closing connections silent in their TLS \
             handshake for over {HANDSHAKE_GRACE:?} (twice their retransmission timeout on \
             slower paths) to let waiting clients in",
            slot.factory.name(), slot.max.unwrap_or(slot.conns));
    }

    /// Builds the protocol for an accepted connection (TLS over it, on a TLS listener) and
    /// registers it.
    ///
    /// `room` is the connection to close for this client at the limit (from listener `key`,
    /// with the turn's count of names declined): closed only once the factory has built a
    /// protocol for the client, so a client it turns away (an address over its own limit,
    /// TLS that cannot start) costs no other client its connection.
    fn connection_accepted(
        &mut self,
        (factory, origin): (usize, u32),
        stream: Stream,
        peer: Address,
        host: Address,
        tls: Option<Rc<TlsContext>>,
        room: Option<(usize, Evict, &mut usize)>,
    ) {
        let secure = tls.is_some();
        let socket = match tls {
            None => NetSocket::Plain(stream),
            Some(ctx) => match TlsStream::new(stream, ctx.config()) {
                Ok(t) => NetSocket::Tls(Box::new(t)),
                Err(e) => {
                    log::error!(target: "twistrs.tls", "cannot start TLS for {peer}: {e}");
                    return;
                }
            },
        };
        let Some(proto) = self.factories[factory].factory.build_protocol(&peer) else {
            return;
        };
        match room {
            Some((key, Evict::Stalled(id), _)) => {
                self.close_stalled_handshake(key, (factory, origin), id);
            }
            Some((_, Evict::Room(id), declined)) => {
                self.give_room((factory, origin), id, declined);
            }
            None => {}
        }
        let slot = &mut self.factories[factory];
        let session = slot.sessions;
        slot.sessions = slot.sessions.wrapping_add(self.session_step);
        slot.conns += 1;
        let name = slot.factory.name();
        let key = self.entries.insert(Entry::Closed);
        let id = self.next_id(key);
        let st = ConnState::new(id, peer, host, name, session, self.handle.tick());
        if let Err(e) = self.add_connection(key, socket, proto, st, Some((factory as u32, origin)))
        {
            log::error!(target: "twistrs.reactor", "cannot register connection: {e}");
            self.factories[factory].conns -= 1;
            self.entries.remove(key);
            return;
        }
        // Only what a limit can need: without one, or without TLS, nothing is kept.
        let slot = &mut self.factories[factory];
        if let (true, Some(max)) = (secure, slot.max) {
            slot.handshaking.push_back((id, self.handle.tick()));
            // Those behind a handshake still going are dropped only once it is the front:
            // past twice the limit, sweep them all (at least `max` pushes apart, so still
            // O(1) amortised), which keeps the queue within about that.
            if slot.handshaking.len() > max.saturating_mul(2).saturating_add(16) {
                let entries = &self.entries;
                slot.handshaking
                    .retain(|&(id, _)| still_handshaking(entries, id));
            }
        }
    }

    /// A connection of `factory` closed: its listeners at the limit may accept again, and so
    /// may any listener out of descriptors (one was just given back).
    pub(crate) fn connection_slot_freed(&mut self, factory: usize) {
        let slot = &mut self.factories[factory];
        slot.conns -= 1;
        let below_limit = slot.max.is_none_or(|m| slot.conns < m);
        for &k in &self.listener_keys {
            if let Some(Entry::Listener(l)) = self.entries.get(k) {
                let resume = match l.accepting {
                    Accepting::Open => false,
                    Accepting::AtLimit => {
                        below_limit && matches!(l.target, Target::Factory(f) if f == factory)
                    }
                    Accepting::BackingOff => true,
                };
                if resume {
                    self.resume_accept.push(k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_lock_stands_only_if_made_by_root_us_or_the_process_it_names() {
        use std::os::unix::process::CommandExt;
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_path(&dir.path().join("s.sock"));
        let plant = |target: &str, owner: u32| {
            let _ = std::fs::remove_file(&lock);
            std::os::unix::fs::symlink(target, &lock).unwrap();
            std::os::unix::fs::lchown(&lock, Some(owner), Some(owner)).unwrap();
        };
        // PID 1 is root's: a lock of 65534's naming it is not its lock.
        plant("1", 65534);
        assert_eq!(lock_owner(&lock), None);
        plant("1", 0);
        assert_eq!(lock_owner(&lock), Some(1));
        // A process of 65534's, named by a lock of 65534's (a daemon that dropped to it and
        // made the lock again at a restart): it stands.
        let mut sleeper = std::process::Command::new("sleep")
            .arg("10")
            .uid(65534)
            .gid(65534)
            .spawn()
            .unwrap();
        plant(&sleeper.id().to_string(), 65534);
        let owner = lock_owner(&lock);
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        assert_eq!(owner, Some(sleeper.id()));
    }

    #[test]
    fn a_unix_socket_has_its_mode_from_the_bind_and_the_umask_is_given_back() {
        use nix::sys::stat::{Mode, umask};
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let before = umask(Mode::from_bits_truncate(0o022));
        for mode in [0o640, 0o666, 0o600, 0o777] {
            let path = dir.path().join(format!("s{mode:o}"));
            let l = bind_unix(&path, mode, 5).unwrap();
            let md = std::fs::symlink_metadata(&path).unwrap();
            assert!(md.file_type().is_socket());
            assert_eq!(md.permissions().mode() & 0o7777, mode, "{mode:o}");
            drop(l);
        }
        let now = umask(before);
        assert_eq!(now.bits(), 0o022, "the umask is the process's again");
    }

    /// A service that never writes, with at most `max` connections.
    struct Mute(Option<usize>);
    struct MuteConn;
    impl crate::protocol::Protocol for MuteConn {
        fn data_received(&mut self, _t: &mut crate::transport::Transport<'_>, _d: &[u8]) {}
    }
    impl crate::protocol::Factory for Mute {
        fn name(&self) -> &'static str {
            "Mute"
        }
        fn build_protocol(
            &mut self,
            _peer: &Address,
        ) -> Option<Box<dyn crate::protocol::Protocol>> {
            Some(Box::new(MuteConn))
        }
        fn max_connections(&self) -> Option<usize> {
            self.0
        }
    }

    /// A reactor serving [`Mute`] (limit `max`) on `ssl:0` (a certificate made now by the
    /// `openssl` command) or `tcp:0`; `None` without the command.
    fn mute_server(
        dir: &Path,
        max: Option<usize>,
        tls: bool,
    ) -> Option<(Reactor, usize, SocketAddr)> {
        let ep = if tls {
            let (k, c) = crate::tls::test_cert(dir)?;
            let (k, c) = (k.display(), c.display());
            format!("ssl:0:privateKey={k}:certKey={c}:interface=127.0.0.1")
        } else {
            "tcp:0:interface=127.0.0.1".to_string()
        };
        let mut r = Reactor::new().unwrap();
        let f = r.add_factory(Box::new(Mute(max)));
        let id = r.listen(&ep.parse().unwrap(), f).unwrap();
        let addr = r.listener_address(id).unwrap().socket_addr().unwrap();
        Some((r, f.0, addr))
    }

    /// Turns `r` until factory `f` has `n` connections (bounded: 5 s).
    fn turn_until_conns(r: &mut Reactor, f: usize, n: usize) {
        let end = Instant::now() + Duration::from_secs(5);
        while r.factories[f].conns != n {
            assert!(
                Instant::now() < end,
                "{} connections, not {n}",
                r.factories[f].conns
            );
            r.turn(Some(Duration::from_millis(10))).unwrap();
        }
    }

    /// Connections in accept order, as a [`Roomy`] factory and its protocols share them.
    type Live = Rc<std::cell::RefCell<std::collections::VecDeque<ConnId>>>;

    thread_local! {
        /// Whether this test's [`Roomy`] turns clients away (`build_protocol` gives none), as
        /// a factory does to an address over its own limit.
        static ROOMY_REFUSES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        /// How often this test's [`Roomy`] heard that a connection it named was closed.
        static ROOMY_MADE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }

    /// A service that never writes and, at its limit, names its connections in turn, as the
    /// web plugin names the next idle one after one left open.
    struct Roomy(Live);
    struct RoomyConn(Live);
    impl crate::protocol::Protocol for RoomyConn {
        fn connection_made(&mut self, t: &mut crate::transport::Transport<'_>) {
            self.0.borrow_mut().push_back(t.id());
        }
        fn data_received(&mut self, _t: &mut crate::transport::Transport<'_>, _d: &[u8]) {}
        fn connection_lost(
            &mut self,
            t: &mut crate::transport::Transport<'_>,
            _r: &crate::error::Reason,
        ) {
            let id = t.id();
            self.0.borrow_mut().retain(|&c| c != id);
        }
    }
    impl crate::protocol::Factory for Roomy {
        fn name(&self) -> &'static str {
            "Roomy"
        }
        fn build_protocol(
            &mut self,
            _peer: &Address,
        ) -> Option<Box<dyn crate::protocol::Protocol>> {
            if ROOMY_REFUSES.get() {
                return None;
            }
            Some(Box::new(RoomyConn(self.0.clone())))
        }
        fn make_room(&mut self) -> Room {
            let mut live = self.0.borrow_mut();
            match live.pop_front() {
                Some(id) => {
                    live.push_back(id);
                    Room::Close(id)
                }
                None => Room::Full,
            }
        }
        fn room_made(&mut self) {
            ROOMY_MADE.set(ROOMY_MADE.get() + 1);
        }
    }

    /// A reactor serving [`Roomy`] on `tcp:0` with no limit yet (a test sets one once its
    /// connections are in), its listener's key and address, and its connections.
    fn roomy_server() -> (Reactor, usize, usize, SocketAddr, Live) {
        let live = Live::default();
        let mut r = Reactor::new().unwrap();
        let f = r.add_factory(Box::new(Roomy(live.clone())));
        let id = r
            .listen(&"tcp:0:interface=127.0.0.1".parse().unwrap(), f)
            .unwrap();
        let addr = r.listener_address(id).unwrap().socket_addr().unwrap();
        (r, f.0, id.0, addr, live)
    }

    /// Connects `n` clients to `addr` one by one, each accepted before the next.
    fn clients(r: &mut Reactor, f: usize, addr: SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
        (0..n)
            .map(|_| {
                let c = std::net::TcpStream::connect(addr).unwrap();
                let want = r.factories[f].conns + 1;
                turn_until_conns(r, f, want);
                c
            })
            .collect()
    }

    /// Sends a byte on `c` and waits until the server's side of `id` has it unread.
    fn unread_input(r: &mut Reactor, f: usize, c: &mut std::net::TcpStream, id: ConnId) {
        use std::io::Write;
        c.write_all(b"x").unwrap();
        let end = Instant::now() + Duration::from_secs(5);
        while matches!(r.for_room(f, id), ForRoom::Quiet) {
            assert!(Instant::now() < end, "the byte never arrived");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until a client waits in listener `key`'s backlog.
    fn until_pending(r: &Reactor, key: usize) {
        let Some(Entry::Listener(l)) = r.entries.get(key) else {
            panic!("no listener");
        };
        let end = Instant::now() + Duration::from_secs(5);
        while !pending(&l.sock) {
            assert!(Instant::now() < end, "no client waiting");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn limit_closes(r: &Reactor, f: usize) -> u64 {
        r.factories[f].origins[0].counts.limit_closes
    }

    #[test]
    fn a_connection_named_for_room_that_got_input_after_the_accept_stays_open() {
        let (mut r, f, _key, addr, live) = roomy_server();
        let mut c = clients(&mut r, f, addr, 2);
        r.factories[f].max = Some(2);
        let a = live.borrow()[0];
        // A request reaches `a` between the check before the accept and its close: the
        // factory is asked again (it names `a` once more, then `b`) and `b`, quiet, goes
        // instead.
        unread_input(&mut r, f, &mut c[0], a);
        let mut declined = 0;
        r.give_room((f, 0), a, &mut declined);
        assert_eq!(*live.borrow(), [a], "b closed, a kept");
        assert_eq!((declined, limit_closes(&r, f)), (2, 1));
        assert_eq!(
            ROOMY_MADE.get(),
            1,
            "told of the close once, not of each name"
        );
        // With none quiet left, nothing is closed and the asking stays bounded: the client
        // is kept, one over.
        let mut declined = 0;
        r.give_room((f, 0), a, &mut declined);
        assert_eq!(*live.borrow(), [a]);
        assert_eq!((declined, limit_closes(&r, f)), (ROOM_DECLINES_PER_TURN, 1));
        assert_eq!(ROOMY_MADE.get(), 1, "nothing closed, nothing said");
    }

    #[test]
    fn a_client_the_factory_turns_away_costs_no_connection_its_room() {
        let (mut r, f, key, addr, live) = roomy_server();
        let _c = clients(&mut r, f, addr, 2);
        r.factories[f].max = Some(2);
        let before: Vec<ConnId> = live.borrow().iter().copied().collect();
        ROOMY_REFUSES.set(true);
        let _waiting = std::net::TcpStream::connect(addr).unwrap();
        until_pending(&r, key);
        r.accept(key);
        ROOMY_REFUSES.set(false);
        // The client was taken from the backlog and turned away; both connections stay.
        let now: Vec<ConnId> = live.borrow().iter().copied().collect();
        assert_eq!(now.len(), 2, "{now:?}");
        assert!(
            before.iter().all(|c| now.contains(c)),
            "{before:?} -> {now:?}"
        );
        assert_eq!((r.factories[f].conns, limit_closes(&r, f)), (2, 0));
        assert_eq!(ROOMY_MADE.get(), 0);
    }

    #[test]
    fn one_over_the_limit_the_next_close_for_room_takes_no_client() {
        let (mut r, f, key, addr, live) = roomy_server();
        // Two connections with a limit of one: as after a client kept by `give_room`.
        let _c = clients(&mut r, f, addr, 2);
        r.factories[f].max = Some(1);
        let (a, b) = (live.borrow()[0], live.borrow()[1]);
        let _waiting = std::net::TcpStream::connect(addr).unwrap();
        until_pending(&r, key);
        r.accept(key);
        // `a` closed for the client kept before, `b` for this one, which is in: at the
        // limit again, each close counted once.
        let now: Vec<ConnId> = live.borrow().iter().copied().collect();
        assert_eq!(now.len(), 1, "{now:?}");
        assert!(!now.contains(&a) && !now.contains(&b), "{now:?}");
        assert_eq!((r.factories[f].conns, limit_closes(&r, f)), (1, 2));
        assert_eq!(ROOMY_MADE.get(), 2, "each close told");
    }

    #[test]
    fn the_handshake_queue_stays_within_twice_the_limit_behind_a_stalled_front() {
        let dir = tempfile::tempdir().unwrap();
        let Some((mut r, f, addr)) = mute_server(dir.path(), Some(2), true) else {
            eprintln!("SKIP: no openssl command");
            return;
        };
        // A client that never sends its ClientHello stays at the front for 10 s.
        let _stalled = std::net::TcpStream::connect(addr).unwrap();
        turn_until_conns(&mut r, f, 1);
        let mut longest = 0;
        for _ in 0..100 {
            let c = std::net::TcpStream::connect(addr).unwrap();
            turn_until_conns(&mut r, f, 2);
            drop(c);
            turn_until_conns(&mut r, f, 1);
            longest = longest.max(r.factories[f].handshaking.len());
        }
        // Without the sweep it would hold all 101.
        assert!(longest <= 2 * 2 + 16 + 1, "{longest}");
        // The stalled one is still there, at the front.
        let &(front, _) = r.factories[f].handshaking.front().unwrap();
        assert!(still_handshaking(&r.entries, front));
    }

    /// The live connection `id`'s last activity.
    fn activity(r: &Reactor, id: ConnId) -> Tick {
        match r.entries.get(id.key as usize) {
            Some(Entry::Conn(c)) if c.conn.st.id == id => c.conn.st.last_activity,
            _ => panic!("{id:?} is gone"),
        }
    }

    /// Silence, not age: the handshake accepted first but still sending is passed over for
    /// one silent since its accept, and goes to the back of the queue with the time of its
    /// bytes; silent for the grace in its turn, it is the one named.
    #[test]
    fn the_stalled_handshake_is_the_one_silent_longest_not_the_oldest() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let Some((mut r, f, addr)) = mute_server(dir.path(), Some(2), true) else {
            eprintln!("SKIP: no openssl command");
            return;
        };
        let mut a = std::net::TcpStream::connect(addr).unwrap();
        turn_until_conns(&mut r, f, 1);
        let _b = std::net::TcpStream::connect(addr).unwrap();
        turn_until_conns(&mut r, f, 2);
        let ids: Vec<ConnId> = r.factories[f].handshaking.iter().map(|e| e.0).collect();
        assert!(matches!(r.stalled_handshake(f), Stalled::At(_)));
        std::thread::sleep(Duration::from_millis(600));
        // `a` sends the start of its ClientHello: taken by the TLS layer, no plaintext.
        let before = activity(&r, ids[0]);
        a.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
            .unwrap();
        let end = Instant::now() + Duration::from_secs(5);
        while activity(&r, ids[0]) == before {
            assert!(Instant::now() < end, "a's bytes were never read");
            r.turn(Some(Duration::from_millis(10))).unwrap();
        }
        std::thread::sleep(Duration::from_millis(600));
        r.turn(Some(Duration::ZERO)).unwrap();
        // Both accepted over a second ago: `b` has said nothing since, `a` for 0.6 s.
        match r.stalled_handshake(f) {
            Stalled::Due(id) => assert_eq!(id, ids[1], "b, silent, not a"),
            _ => panic!("b is past the grace"),
        }
        let queue: Vec<_> = r.factories[f].handshaking.iter().copied().collect();
        assert_eq!(
            queue,
            [(ids[1], queue[0].1), (ids[0], activity(&r, ids[0]))]
        );
        // `b` gone (as its close for a client would do), `a` is next once silent for the grace.
        r.close(ids[1].key as usize, crate::error::Reason::Aborted);
        assert!(matches!(r.stalled_handshake(f), Stalled::At(_)));
        std::thread::sleep(Duration::from_millis(500));
        r.turn(Some(Duration::ZERO)).unwrap();
        assert!(matches!(r.stalled_handshake(f), Stalled::Due(id) if id == ids[0]));
    }

    #[test]
    fn nothing_is_kept_without_a_limit_or_without_tls() {
        let dir = tempfile::tempdir().unwrap();
        for (max, tls) in [(None, true), (Some(4), false)] {
            let Some((mut r, f, addr)) = mute_server(dir.path(), max, tls) else {
                eprintln!("SKIP: no openssl command");
                return;
            };
            let _c: Vec<_> = (0..3)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            turn_until_conns(&mut r, f, 3);
            assert!(r.factories[f].handshaking.is_empty(), "{max:?} {tls}");
        }
    }

    #[test]
    fn per_connection_accept_errors_are_retried_shortages_are_not() {
        for e in [
            libc::ECONNABORTED,
            libc::EPROTO,
            libc::ENETUNREACH,
            libc::EINTR,
        ] {
            assert!(retry_at_once(&io::Error::from_raw_os_error(e)), "{e}");
        }
        for e in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(!retry_at_once(&io::Error::from_raw_os_error(e)), "{e}");
        }
    }

    #[test]
    fn sockets_handed_over_under_one_endpoint_are_taken_in_their_order() {
        use std::os::fd::AsRawFd;
        let mut r = Reactor::new().unwrap();
        let mut raw = Vec::new();
        for ep in ["tcp:0", "unix:/x", "tcp:0", "tcp:0"] {
            let fd: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
            raw.push(fd.as_raw_fd());
            r.inherit_listener(ep.to_string(), fd);
        }
        let taken: Vec<_> = (0..3)
            .map(|_| r.take_inherited("tcp:0").unwrap().as_raw_fd())
            .collect();
        assert_eq!(taken, [raw[0], raw[2], raw[3]]);
        assert!(r.take_inherited("tcp:0").is_none());
        assert_eq!(
            r.take_inherited("unix:/x").map(|f| f.as_raw_fd()),
            Some(raw[1])
        );
    }
}
