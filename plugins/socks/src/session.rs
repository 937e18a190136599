//! One client connection: the negotiation (`crate::negotiate`), then its request carried out
//! on the reactor. CONNECT becomes a core relay (`Transport::connect_relay`), BIND a one-shot
//! listener whose connection is joined to the client (`crate::bind`), UDP ASSOCIATE a UDP
//! port (`crate::udp`) that lives as long as this connection.
//!
//! A host name is resolved on a worker thread and the rules are checked on the addresses it
//! gives, so no name lookup ever runs on the reactor thread and no rule can be passed by
//! naming a denied address. Every outcome is one line in the connection log.

use std::any::Any;
use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

use twistrs_core::client::ConnectError;
use twistrs_core::relay::{OnEnd, Outgoing, RelayEnd, RelayOptions, RelayRequest};
use twistrs_core::timer::later;
use twistrs_core::{Address, DelayedCall, OwnedPort, Protocol, Reason, STOP_GRACE, Transport};

use crate::bind::{BindEvent, BindFactory};
use crate::config::Config;
use crate::connlog::{ConnLog, Entry};
use crate::negotiate::{Cmd, Failure, Host, Negotiator, Refusal, Request, Step, Version, reply};
use crate::udp::{Activity, Association};

/// Addresses of one name tried at most, in turn.
const MAX_ADDRESSES: usize = 8;

/// `call_later` keys.
const REQUEST_TIMER: u64 = 1;
/// The most a BIND's client may send before its peer connects (RFC 1928 says to wait for
/// the second reply): kept for the peer; past it, reading pauses until the join.
const MAX_EARLY: usize = 64 * 1024;
const RESOLVE_TIMER: u64 = 2;

/// What a relay's `on_end` keeps to write its line when both sides have closed: the
/// request, and the bytes the client is sent before the join (the SOCKS replies), which are
/// not relayed bytes. The client's address and the address connected to come back with the
/// end, so an idle relay keeps this one allocation and no text (issue 11).
struct Head {
    version: Option<Version>,
    cmd: Option<Cmd>,
    target: Option<crate::negotiate::Target>,
    user: Option<Box<str>>,
    replies: u64,
}

/// Where a connection is. The passing states are boxed, so a relayed connection, which
/// keeps its protocol for the life of the relay, carries 16 bytes of state.
enum State {
    Negotiating(Box<Negotiator>),
    /// The host name of a CONNECT or BIND is resolving on a worker thread; reading is paused.
    Resolving(Box<Resolving>),
    /// `connect_relay` was asked; the relay's `on_end` will have the entry once joined.
    Connecting(Box<Connecting>),
    /// Joined: the bytes flow without this protocol; `on_end` logs.
    Relaying,
    /// A BIND's port waits for its peer.
    BindWaiting(Box<BindWaiting>),
    /// A UDP association, open while this connection is.
    Udp(Box<(OwnedPort, Rc<RefCell<Association>>)>),
    /// Refused, failed or closing.
    Done,
}

struct Resolving {
    req: Request,
    rest: Vec<u8>,
    deadline: Instant,
}

/// If the connection fails, the next address of `next` (in reverse order) is tried while
/// time is left.
struct Connecting {
    version: Version,
    next: Vec<SocketAddr>,
    rest: Vec<u8>,
    deadline: Instant,
}

/// The peer is expected at `expected` (any, if unspecified).
struct BindWaiting {
    version: Version,
    expected: IpAddr,
    port: OwnedPort,
    rest: Vec<u8>,
}

/// The SOCKS protocol of one client connection.
pub struct Socks {
    cfg: Rc<Config>,
    state: State,
    /// The log line being built; `None` once handed to a relay's `on_end` (or written).
    entry: Option<Box<Entry>>,
    started: Instant,
    timer: Option<DelayedCall>,
}

/// The outcome of a host-name lookup on a worker thread.
type Resolved = Result<Vec<SocketAddr>, twistrs_core::Failure>;

fn resolve(name: String, port: u16) -> Resolved {
    use std::net::ToSocketAddrs;
    Ok((name.as_str(), port).to_socket_addrs()?.collect())
}

/// 0.0.0.0, `::` or `::ffff:0.0.0.0`: what a connect or a datagram sends to this host.
pub(crate) fn unspecified(ip: IpAddr) -> bool {
    ip.to_canonical().is_unspecified()
}

/// The failure a relay's connect error stands for.
fn failure_of(e: &ConnectError) -> Failure {
    match e {
        ConnectError::NameNotResolved { .. } => Failure::HostUnreachable,
        ConnectError::TimedOut(_) => Failure::TtlExpired,
        ConnectError::Io(e) => Failure::of_io(e),
    }
}

impl Socks {
    pub fn new(cfg: Rc<Config>) -> Self {
        let neg = Negotiator::new(cfg.creds.clone());
        Socks {
            cfg,
            state: State::Negotiating(Box::new(neg)),
            entry: Some(Box::default()),
            started: Instant::now(),
            timer: None,
        }
    }

    fn entry(&mut self) -> &mut Entry {
        self.entry.get_or_insert_with(Box::default)
    }

    fn cancel_timer(&mut self) {
        if let Some(t) = self.timer.take() {
            t.cancel();
        }
    }

    /// Ends the connection with `answer` (maybe empty), logging `result` and `why`.
    fn finish(&mut self, t: &mut Transport<'_>, answer: &[u8], result: &'static str, why: String) {
        self.cancel_timer();
        t.write(answer);
        t.lose_connection();
        let e = self.entry();
        e.result = result;
        e.reason = Some(why);
        self.state = State::Done;
    }

    /// Refuses or fails the request with `f`'s reply.
    fn fail(&mut self, t: &mut Transport<'_>, version: Version, f: Failure, why: String) {
        crate::metrics::with(|m| m.failure(f));
        let result = match f {
            Failure::NotAllowed
            | Failure::CommandNotSupported
            | Failure::AddressTypeNotSupported => "refused",
            _ => "failed",
        };
        self.finish(t, &reply(version, Err(f)), result, why);
    }

    /// Runs the negotiation over what has arrived.
    fn negotiate(&mut self, t: &mut Transport<'_>) {
        loop {
            let State::Negotiating(n) = &mut self.state else {
                return;
            };
            match n.next_step() {
                None => return,
                Some(Step::Send(b)) => t.write(&b),
                Some(Step::Close(b, why)) => {
                    crate::metrics::with(|m| m.refusal(&why));
                    let refused = n.take_refused();
                    let (v, e) = (b.first().copied(), self.entry());
                    e.version = match v {
                        Some(0) => Some(Version::V4),
                        Some(_) => Some(Version::V5),
                        None => None,
                    };
                    // What the line can say of who asked for what.
                    if let Some(req) = refused {
                        e.cmd = Some(req.cmd);
                        e.target = Some(req.target);
                        e.user = req.user.filter(|u| !u.is_empty());
                    }
                    if let Refusal::AuthFailed(user) = &why {
                        e.user = Some(user.clone());
                    }
                    return self.finish(t, &b, "refused", why.to_string());
                }
                Some(Step::Request(req)) => {
                    let rest = n.take_rest();
                    self.cancel_timer();
                    return self.request(t, req, rest);
                }
            }
        }
    }

    fn request(&mut self, t: &mut Transport<'_>, req: Request, rest: Vec<u8>) {
        let e = self.entry();
        e.version = Some(req.version);
        e.cmd = Some(req.cmd);
        crate::metrics::with(|m| m.request(req.version, req.cmd));
        e.target = Some(req.target.clone());
        e.user = req.user.clone().filter(|u| !u.is_empty());
        // Nothing more is read until the request is carried out (the relay resumes it).
        t.pause_producing();
        if req.cmd == Cmd::UdpAssociate {
            return self.associate(t, req);
        }
        match &req.target.host {
            Host::Ip(ip) => {
                let addr = SocketAddr::new(*ip, req.target.port);
                let deadline = later(Instant::now(), self.cfg.connect_timeout);
                self.resolved(t, req, rest, vec![addr], deadline);
            }
            Host::Name(name) => {
                let (name, port) = (name.clone(), req.target.port);
                t.call_in_thread_abandonable(move || resolve(name, port));
                self.timer = Some(t.call_later(self.cfg.connect_timeout, RESOLVE_TIMER));
                self.state = State::Resolving(Box::new(Resolving {
                    req,
                    rest,
                    deadline: later(Instant::now(), self.cfg.connect_timeout),
                }));
            }
        }
    }

    /// The destination's addresses are known: those the rules allow are tried in turn, all
    /// within `deadline` (`--connect-timeout` from the request on, the lookup included).
    fn resolved(
        &mut self,
        t: &mut Transport<'_>,
        req: Request,
        rest: Vec<u8>,
        mut addrs: Vec<SocketAddr>,
        deadline: Instant,
    ) {
        // The unspecified address (0.0.0.0, ::, ::ffff:0.0.0.0) is no host's: a connect to it
        // reaches this host, past the rules that keep clients off the loopback (dante refuses
        // it too). For BIND it means any peer, and stays.
        if req.cmd == Cmd::Connect && addrs.iter().any(|a| unspecified(a.ip())) {
            addrs.retain(|a| !unspecified(a.ip()));
            if addrs.is_empty() {
                let why = format!("{} is the unspecified address: no host's", req.target);
                return self.fail(t, req.version, Failure::NotAllowed, why);
            }
        }
        let mut allowed: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| self.cfg.rules.allows(*a))
            .take(MAX_ADDRESSES)
            .collect();
        if allowed.is_empty() {
            let (f, why) = match addrs.first() {
                None => (
                    Failure::HostUnreachable,
                    format!("{} has no address", req.target),
                ),
                Some(a) => (
                    Failure::NotAllowed,
                    match self.cfg.rules.decide(*a) {
                        Some(rule) => format!("{a} is refused by {rule}"),
                        None => format!("{a} is refused by the rules"),
                    },
                ),
            };
            return self.fail(t, req.version, f, why);
        }
        match req.cmd {
            Cmd::Bind => self.bind(t, req.version, allowed[0].ip(), rest),
            _ => {
                allowed.reverse();
                self.connect(t, req.version, allowed, rest, deadline)
            }
        }
    }

    /// Connects to the last of `next` (they are in reverse order), within `deadline`.
    fn connect(
        &mut self,
        t: &mut Transport<'_>,
        version: Version,
        mut next: Vec<SocketAddr>,
        rest: Vec<u8>,
        deadline: Instant,
    ) {
        let Some(addr) = next.pop() else {
            return;
        };
        self.entry().address = Some(addr);
        // The client is sent the reply to this request before any relayed byte: its length
        // depends only on the address family of the connection made (BND.ADDR's).
        let replies = t.bytes_written() + reply(version, Ok(addr)).len() as u64;
        t.connect_relay(
            RelayRequest::new(addr.into())
                .connect_timeout(deadline.saturating_duration_since(Instant::now()))
                .idle_timeout(Some(self.cfg.idle_timeout))
                .forward(rest.clone())
                .on_end(self.on_end(replies)),
        );
        self.state = State::Connecting(Box::new(Connecting {
            version,
            next,
            rest,
            deadline,
        }));
    }

    /// What writes this connection's line when its relay ends, `replies` being the bytes
    /// the client is sent before the join: `up` is what reached the destination, `down`
    /// what reached the client after the SOCKS replies.
    fn on_end(&self, replies: u64) -> impl FnOnce(&RelayEnd) + 'static {
        let e = self.entry.as_deref();
        let head = Head {
            version: e.and_then(|e| e.version),
            cmd: e.and_then(|e| e.cmd),
            target: e.and_then(|e| e.target.clone()),
            user: e.and_then(|e| e.user.as_deref()).map(Box::from),
            replies,
        };
        let (log, started) = (self.cfg.log.clone(), self.started);
        move |end: &RelayEnd| {
            crate::metrics::with(|m| m.relays.ended(end));
            let e = Entry {
                client: end.client.socket_addr(),
                version: head.version,
                cmd: head.cmd,
                target: head.target,
                address: end.dest.socket_addr(),
                user: head.user.map(String::from),
                ..Entry::default()
            };
            let mut line = String::new();
            ConnLog::format_head(&e, &mut line);
            log.borrow_mut().log_relay(
                &line,
                if end.joined { "ok" } else { "failed" },
                end.to_dest,
                end.to_client.saturating_sub(head.replies),
                started.elapsed(),
                (!end.clean).then(|| end.why()).as_deref(),
            );
        }
    }

    fn bind(&mut self, t: &mut Transport<'_>, version: Version, expected: IpAddr, rest: Vec<u8>) {
        let Some(local) = t.host().socket_addr() else {
            let why = "BIND needs a TCP connection to the proxy".to_string();
            return self.fail(t, version, Failure::General, why);
        };
        let factory = BindFactory::new(t.id(), t.handle().clone(), self.cfg.connect_timeout);
        let at = SocketAddr::new(local.ip(), 0);
        match t
            .handle()
            .accept_one(at, Box::new(factory), self.cfg.connect_timeout)
        {
            Ok(port) => {
                let bound = port.local_addr();
                t.write(&reply(version, Ok(bound)));
                // The port the peer is awaited on, until it comes (then the peer's address).
                self.entry().address = Some(bound);
                self.state = State::BindWaiting(Box::new(BindWaiting {
                    version,
                    expected,
                    port,
                    rest,
                }));
                // Read while the peer is awaited, or a client that leaves (a close, a reset)
                // would hold its connection and the BIND's port until --connect-timeout.
                // What it sends meanwhile is kept for the peer, up to `MAX_EARLY`.
                t.resume_producing();
            }
            Err(e) => self.fail(
                t,
                version,
                Failure::General,
                format!("cannot listen on {at}: {e}"),
            ),
        }
    }

    /// The BIND's peer connected (or did not in time).
    fn bind_event(&mut self, t: &mut Transport<'_>, ev: BindEvent) {
        let State::BindWaiting(b) = std::mem::replace(&mut self.state, State::Done) else {
            if let BindEvent::Incoming { conn, .. } = ev {
                t.handle().abort_connection(conn);
            }
            return;
        };
        let BindWaiting {
            version,
            expected,
            port,
            rest,
        } = *b;
        drop(port);
        let (conn, peer, joined) = match ev {
            BindEvent::Incoming { conn, peer, joined } => (conn, peer, joined),
            BindEvent::Failed(why) => {
                return self.fail(t, version, Failure::TtlExpired, why);
            }
        };
        let expected_ok =
            expected.is_unspecified() || expected.to_canonical() == peer.ip().to_canonical();
        if !expected_ok || !self.cfg.rules.allows(peer) {
            t.handle().abort_connection(conn);
            let why = if expected_ok {
                format!("the peer {peer} is refused by the rules")
            } else {
                format!("the peer {peer} is not the one expected ({expected})")
            };
            return self.fail(t, version, Failure::NotAllowed, why);
        }
        t.write(&reply(version, Ok(peer)));
        if !rest.is_empty() {
            t.handle().write_to(conn, rest);
        }
        self.entry().address = Some(peer);
        let on_end = self.on_end(t.bytes_written());
        // A join the core cannot make does not know the address of the side gone first:
        // this connection knew both.
        let client = t.peer().socket_addr();
        let on_end = move |end: &RelayEnd| match end.joined {
            true => on_end(end),
            false => {
                let mut end = end.clone();
                if let (None, Some(c)) = (end.client.socket_addr(), client) {
                    end.client = Address::Tcp(c);
                }
                if end.dest.socket_addr().is_none() {
                    end.dest = Address::Tcp(peer);
                }
                on_end(&end)
            }
        };
        // The relay's `on_end` writes the line now.
        self.entry = None;
        joined.set(true);
        // Counted once joined: a join the core cannot make (the peer closed first) calls
        // only `on_end`, with `joined` false, and is neither a relay nor an open one.
        let options = RelayOptions {
            idle_timeout: Some(self.cfg.idle_timeout),
            on_end: Some(OnEnd::Once(Box::new(on_end))),
            on_join: Some(Box::new(|| crate::metrics::with(|m| m.relays.joined()))),
        };
        t.handle().join(t.id(), conn, options);
        self.state = State::Relaying;
    }

    fn associate(&mut self, t: &mut Transport<'_>, req: Request) {
        let (Some(local), Some(client)) = (t.host().socket_addr(), t.peer().socket_addr()) else {
            let why = "UDP ASSOCIATE needs a TCP connection to the proxy".to_string();
            return self.fail(t, req.version, Failure::General, why);
        };
        let client_port = (req.target.port != 0).then_some(req.target.port);
        let assoc = Association::new(
            self.cfg.clone(),
            client.ip(),
            client_port,
            t.id(),
            t.handle().clone(),
        );
        let at = SocketAddr::new(local.ip(), 0);
        match t
            .handle()
            .open_owned_udp(at, Box::new(Association::port_protocol(&assoc)))
        {
            Ok(port) => {
                assoc.borrow_mut().set_sender(port.sender());
                let bound = port.local_addr();
                t.write(&reply(req.version, Ok(bound)));
                let e = self.entry();
                e.address = Some(bound);
                e.result = "ok";
                // The connection now only says how long the association lives: read on (and
                // drop what comes) to see it close.
                t.resume_producing();
                t.set_timeout(Some(self.cfg.idle_timeout));
                self.state = State::Udp(Box::new((port, assoc)));
            }
            Err(e) => self.fail(
                t,
                req.version,
                Failure::General,
                format!("cannot open a UDP port on {at}: {e}"),
            ),
        }
    }

    /// A negotiation cut short (EOF, or out of time) gets the refusal of the message it was in.
    fn cut_short(&mut self, t: &mut Transport<'_>, why: String) {
        if let State::Negotiating(n) = &mut self.state {
            // A SOCKS5 greeting (or a SOCKS4 request's first byte) already said the version.
            let version = n.version();
            let answer = n.cut_short();
            self.entry().version = version;
            self.finish(t, &answer, "refused", why);
        }
    }
}

impl Protocol for Socks {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        self.entry().client = t.peer().socket_addr();
        self.timer = Some(t.call_later(self.cfg.request_timeout, REQUEST_TIMER));
    }

    fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
        match &mut self.state {
            State::Negotiating(n) => {
                n.feed(data);
                self.negotiate(t);
            }
            // Read before the pause took hold: it follows the request to the destination.
            State::Resolving(r) => r.rest.extend_from_slice(data),
            State::BindWaiting(b) => {
                b.rest.extend_from_slice(data);
                if b.rest.len() >= MAX_EARLY {
                    t.pause_producing();
                }
            }
            // A UDP association's connection carries nothing (RFC 1928): dropped.
            _ => {}
        }
    }

    fn read_eof(&mut self, t: &mut Transport<'_>) {
        if matches!(self.state, State::Negotiating(_)) {
            return self.cut_short(
                t,
                "the client closed before its request was complete".into(),
            );
        }
        t.lose_connection();
    }

    fn timer_fired(&mut self, t: &mut Transport<'_>, key: u64) {
        let secs = |d: std::time::Duration| d.as_secs();
        match (key, &self.state) {
            (REQUEST_TIMER, State::Negotiating(_)) => {
                let why = format!(
                    "the request did not arrive within {} s",
                    secs(self.cfg.request_timeout)
                );
                self.cut_short(t, why);
            }
            (RESOLVE_TIMER, State::Resolving(r)) => {
                let (version, why) = (
                    r.req.version,
                    format!(
                        "{} did not resolve within {} s",
                        r.req.target,
                        secs(self.cfg.connect_timeout)
                    ),
                );
                self.fail(t, version, Failure::TtlExpired, why);
            }
            _ => {}
        }
    }

    fn notified(&mut self, t: &mut Transport<'_>, msg: Box<dyn Any>) {
        let msg = match msg.downcast::<Resolved>() {
            Ok(r) => {
                if let State::Resolving(_) = self.state
                    && let State::Resolving(res) = std::mem::replace(&mut self.state, State::Done)
                {
                    let Resolving {
                        req,
                        rest,
                        deadline,
                    } = *res;
                    self.cancel_timer();
                    match *r {
                        Ok(addrs) => self.resolved(t, req, rest, addrs, deadline),
                        Err(e) => {
                            let why = format!("cannot resolve {}: {e}", req.target);
                            self.fail(t, req.version, Failure::HostUnreachable, why);
                        }
                    }
                }
                return;
            }
            Err(other) => other,
        };
        let msg = match msg.downcast::<BindEvent>() {
            Ok(ev) => return self.bind_event(t, *ev),
            Err(other) => other,
        };
        if msg.is::<Activity>() {
            t.reset_timeout();
        }
    }

    fn relay_connected(&mut self, t: &mut Transport<'_>, out: &Outgoing) {
        let State::Connecting(c) = std::mem::replace(&mut self.state, State::Relaying) else {
            return;
        };
        let Connecting { version, .. } = *c;
        let bound = out
            .host
            .socket_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        t.write(&reply(version, Ok(bound)));
        // The relay's `on_end` writes the line now.
        self.entry = None;
        crate::metrics::with(|m| m.relays.joined());
    }

    fn relay_connection_failed(&mut self, t: &mut Transport<'_>, error: &ConnectError) {
        let State::Connecting(c) = std::mem::replace(&mut self.state, State::Done) else {
            return t.lose_connection();
        };
        let Connecting {
            version,
            next,
            rest,
            deadline,
            ..
        } = *c;
        crate::metrics::with(|m| m.relays.connect_failed(error));
        let timed_out = matches!(error, ConnectError::TimedOut(_));
        if !next.is_empty() && !timed_out && Instant::now() < deadline {
            return self.connect(t, version, next, rest, deadline);
        }
        self.fail(t, version, failure_of(error), error.to_string());
    }

    /// A joined CONNECT has handed its log entry to the relay's `on_end` and its timers are
    /// cancelled: nothing here is called again, so an idle relay need not keep it (issue 11).
    fn done_when_joined(&self) -> bool {
        matches!(self.state, State::Relaying) && self.entry.is_none()
    }

    fn stop_requested(&mut self, t: &mut Transport<'_>) {
        match &self.state {
            // A client in the middle of its request may still finish it.
            State::Negotiating(_) => t.set_timeout(Some(STOP_GRACE)),
            // A request under way is carried out (a name's lookup, then its connect, within
            // --connect-timeout), and its relay drains, all within the shutdown deadline.
            State::Resolving(_) | State::Connecting(_) | State::Relaying => {}
            // No new port is waited on: the BIND gets its failure reply.
            State::BindWaiting(b) => {
                let version = b.version;
                let why = "the server stopped before the peer connected".to_string();
                self.fail(t, version, Failure::General, why);
            }
            State::Udp(_) => {
                self.entry().reason = Some("closed as the server stopped".into());
                t.lose_connection();
            }
            State::Done => t.lose_connection(),
        }
    }

    fn connection_lost(&mut self, t: &mut Transport<'_>, reason: &Reason) {
        let udp = match &self.state {
            State::Udp(u) => Some(u.1.borrow().counters()),
            _ => None,
        };
        self.state = State::Done;
        let Some(mut e) = self.entry.take() else {
            return;
        };
        if let Some((up, down)) = udp {
            e.up = up;
            e.down = down;
        }
        if e.result.is_empty() && e.cmd.is_some() {
            e.result = "failed";
            e.reason = Some(match reason {
                // The shutdown deadline passed first (a lookup or a connect still under way).
                Reason::Shutdown => {
                    "the server stopped before the request was carried out".to_string()
                }
                _ => format!("the client left before the request was carried out: {reason}"),
            });
        } else if e.result.is_empty() {
            e.result = "refused";
            e.reason = Some(format!("closed before a request: {reason}"));
        } else if e.result == "ok" && !reason.is_clean() {
            e.reason = Some(reason.to_string());
        }
        let _ = t;
        e.duration = self.started.elapsed();
        self.cfg.log.borrow_mut().log(&e);
    }
}

#[cfg(test)]
mod tests;
