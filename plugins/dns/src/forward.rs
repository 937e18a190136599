//! `-r`: questions outside the zones go to the name servers of resolv.conf, over UDP from
//! ports of their own (a random source port per address family its servers need, and a random
//! id, per question, as Twisted's client does): the servers are asked in turn, each try a
//! fraction of the deadline after the one before, and every server asked is still listened
//! to, until [`DEADLINE`]; then over TCP when the answer is truncated. A question asked again
//! while it is on its way (a client's retry, or another client's) joins it, and one that ran
//! out its deadline gets SERVFAIL at once for [`FAILURE_MEMORY`] ([`Failures`]).
//!
//! The forwarder is sans-IO: it is told what happened (a port opened, a datagram came, a timer
//! fired, a TCP answer came or failed) and answers with [`Action`]s for the reactor glue.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use domain::base::iana::Rcode;
use twistrs_core::{ConnId, PortId};

use crate::cache::{Bad, Cache, Key, Upstream};
use crate::responder::Forward;

/// Twisted's and glibc's default when resolv.conf names no server.
pub const DEFAULT_SERVER: &str = "127.0.0.1:53";
/// Clients waiting for a forwarded answer at most, and so questions in flight, each with a
/// port of its own: beyond it (a flood of questions, spoofed sources) SERVFAIL, before the
/// ports take every descriptor the listeners need (Unbound's num-queries-per-thread). A
/// client joining a question in flight counts too (BIND's recursive-clients), so joining
/// does not let a flood hold more than this many clients' requests.
pub const MAX_PENDING: usize = 1024;

/// How long a forwarded question may take, every try included, before SERVFAIL: under the
/// 5 s a stub resolver waits for an answer (glibc's `timeout:5`, dig's `+time=5`), so that a
/// client whose upstreams are all dead gets SERVFAIL on its first try, not a timeout and a
/// retry. BIND gives up on dead forwarders after 10 s, twistd's client after 60 s a server.
pub const DEADLINE: Duration = Duration::from_secs(4);
/// Clients waiting for one question in flight at most (BIND's `max-clients-per-query`): more
/// asking the same get SERVFAIL at once.
pub const MAX_JOINED: usize = 100;

/// How long the same question gets SERVFAIL at once after one ran out its deadline (BIND's
/// `servfail-ttl` default; RFC 2308 7.1 allows up to 5 minutes): glibc asks again at once
/// after a SERVFAIL, which without it started a second 4 s round (`getent hosts` took 8 s).
pub const FAILURE_MEMORY: Duration = Duration::from_secs(1);
/// Failures remembered at most, the oldest dropped first: as many as questions may be in
/// flight, so every failure of the last second is there but under a flood.
pub const MAX_FAILURES: usize = MAX_PENDING;

/// resolv.conf is a few lines (the C library uses three name servers): 1 MiB is plenty.
pub const RESOLV_CONF_MAX: u64 = 1 << 20;

/// The name servers to forward to, and how patiently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvConf {
    pub servers: Vec<SocketAddr>,
    /// How long a try waits before the next goes out (`options timeout:N`), unless the
    /// tries would not fit in [`DEADLINE`]: see [`ResolvConf::interval`].
    pub timeout: Duration,
    /// Rounds over the servers (`options attempts:N`).
    pub attempts: u32,
}

impl ResolvConf {
    pub fn load(path: &Path) -> Result<ResolvConf, String> {
        let text = twistrs_core::files::read_config_string(path, RESOLV_CONF_MAX)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(ResolvConf::parse(&text))
    }

    /// resolv.conf(5): `nameserver ADDR` lines (port 53; twistrs also takes `ADDR#PORT` and
    /// `[ADDR]:PORT`), `options timeout:N attempts:N`. Defaults: 2 s, 2 rounds (glibc's are
    /// 5 s and 2, longer than a client such as dig waits for its answer).
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf {
            servers: Vec::new(),
            timeout: Duration::from_secs(2),
            attempts: 2,
        };
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    // A server listed twice is one server: asked once a round, and its
                    // failure counted (a second entry kept it "outstanding" for good).
                    if let Some(a) = words.next().and_then(parse_server)
                        && !conf.servers.contains(&a)
                    {
                        conf.servers.push(a);
                    }
                }
                Some("options") => {
                    for w in words {
                        if let Some(n) = w.strip_prefix("timeout:").and_then(|n| n.parse().ok()) {
                            conf.timeout = Duration::from_secs(u64::clamp(n, 1, 30));
                        }
                        if let Some(n) = w.strip_prefix("attempts:").and_then(|n| n.parse().ok()) {
                            conf.attempts = u32::clamp(n, 1, 5);
                        }
                    }
                }
                _ => {}
            }
        }
        if conf.servers.is_empty()
            && let Ok(a) = DEFAULT_SERVER.parse()
        {
            conf.servers.push(a);
        }
        conf
    }

    /// Tries in all: every server, `attempts` rounds.
    pub fn tries(&self) -> u32 {
        self.attempts * self.servers.len().max(1) as u32
    }

    /// The time from one try to the next, and from the last to SERVFAIL: `timeout`, or less
    /// so that every try goes out within [`DEADLINE`] (3 servers, 2 rounds: 0.67 s).
    /// Earlier servers are still listened to, so a slow one (an answer after 2 s) is still
    /// heard while the next are asked, as BIND asks its forwarders.
    pub fn interval(&self) -> Duration {
        self.timeout.min(DEADLINE / self.tries())
    }
}

fn parse_server(s: &str) -> Option<SocketAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    if let Some((ip, port)) = s.split_once('#') {
        return Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?));
    }
    s.parse().ok()
}

/// An address family: a question has a UDP port for each its servers need, as glibc has a
/// socket per server of its family; an IPv4 server cannot be asked from an IPv6 port (the
/// kernel sends from a dual-stack one, but the answer comes back from a mapped address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: SocketAddr) -> Family {
        match addr {
            SocketAddr::V4(_) => Family::V4,
            SocketAddr::V6(_) => Family::V6,
        }
    }

    /// Where its port binds: any address, a port the kernel picks at random.
    pub fn any(self) -> SocketAddr {
        match self {
            Family::V4 => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            Family::V6 => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Who asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// Over UDP: the answer leaves from the listener it came to.
    Udp { port: PortId, addr: SocketAddr },
    /// Over TCP: the answer goes to the connection's protocol; `peer` is for the log.
    Tcp { conn: ConnId, peer: IpAddr },
}

impl Client {
    /// Who asked, for the log line of the answer.
    pub fn peer(&self) -> IpAddr {
        match self {
            Client::Udp { addr, .. } => addr.ip(),
            Client::Tcp { peer, .. } => *peer,
        }
    }
}

/// What the reactor glue is to do.
#[derive(Debug)]
pub enum Action {
    /// Open a UDP port of `family` (bound to [`Family::any`]) for question `token`.
    OpenUdp {
        token: u64,
        family: Family,
    },
    /// Send a datagram from a port.
    Send {
        port: PortId,
        bytes: Vec<u8>,
        to: SocketAddr,
    },
    /// Call `timed_out(token, step)` after `after`.
    Arm {
        token: u64,
        step: u32,
        after: Duration,
    },
    /// Ask over TCP: connect, send `bytes` (unframed), hand the answer to `tcp_answer`.
    Connect {
        token: u64,
        to: SocketAddr,
        bytes: Vec<u8>,
        timeout: Duration,
    },
    Close(PortId),
    /// The client's answer.
    Reply {
        client: Client,
        bytes: Vec<u8>,
    },
    /// An upstream answer to keep (`-c`).
    Keep {
        req: Forward,
        answer: Rc<Upstream>,
    },
    /// The question ran out its deadline: remember it in [`Failures`].
    Failed {
        key: Key,
    },
}

/// A question's UDP port of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    /// No try of this family was due yet.
    Unopened,
    /// Asked for: the try due waits for it.
    Opening,
    Open(PortId),
    /// It could not be opened: each try of this family fails at once.
    Failed,
}

struct Pending {
    /// Who waits for the answer: the client that asked first, and those whose same question
    /// (the cache's key) came while it was on its way, each answered with its own id,
    /// question and size.
    waiters: Vec<(Client, Forward)>,
    key: Key,
    query: Vec<u8>,
    /// The UDP ports, by [`Family::index`]: opened when a try of that family is first due,
    /// closed once the question went over TCP.
    ports: [Port; 2],
    /// Gone over TCP after a truncated answer.
    tcp: bool,
    /// Tries sent: try `k` went to server `k % n`.
    sent: u32,
    /// Per server: asked, and not answered with a failure since, so it may still answer.
    outstanding: Vec<bool>,
}

/// Questions on their way upstream.
pub struct Forwarder {
    pub conf: ResolvConf,
    pending: HashMap<u64, Pending>,
    /// The question in flight for each key, which the same question joins.
    in_flight: HashMap<Key, u64>,
    /// Clients waiting, over every question.
    waiting: usize,
    next: u64,
}

/// A random 16-bit id (getrandom(2); the time if that fails).
fn random_id() -> u16 {
    let mut b = [0u8; 2];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 2 {
        u16::from_be_bytes(b)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u16)
    }
}

impl Forwarder {
    pub fn new(conf: ResolvConf) -> Forwarder {
        Forwarder {
            conf,
            pending: HashMap::new(),
            in_flight: HashMap::new(),
            waiting: 0,
            next: 0,
        }
    }

    /// Questions in flight.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Our question to the upstream server: a new id, RD, the client's question, CD and DO
    /// (so that a validating client gets the RRSIGs and NSECs it needs, as from BIND's or
    /// dnsmasq's forwarding), and an OPT offering our payload size.
    fn query(req: &Forward) -> Vec<u8> {
        let mut q = Vec::with_capacity(12 + req.question.len() + 11);
        q.extend_from_slice(&random_id().to_be_bytes());
        q.extend_from_slice(&[0x01, if req.cd { 0x10 } else { 0 }, 0, 1, 0, 0, 0, 0, 0, 1]);
        q.extend_from_slice(&req.question);
        q.extend_from_slice(&crate::cache::opt_record(
            req.edns.is_some_and(|e| e.dnssec_ok),
        ));
        q
    }

    /// A question from a client. The same question already on its way is joined (as
    /// twistd's client and BIND join it), so a stub resolver's retry does not start a second
    /// round of tries that ends after its last retry gave up; the same client asking again
    /// with the same id gets the one answer. Otherwise a port is opened for its first try.
    pub fn start(&mut self, req: Forward, client: Client) -> Vec<Action> {
        self.start_by(Cache::key(&req), req, client)
    }

    /// `start`, with `req`'s key (`Cache::key`) built already.
    pub fn start_by(&mut self, key: Key, req: Forward, client: Client) -> Vec<Action> {
        if let Some(p) = self
            .in_flight
            .get(&key)
            .and_then(|t| self.pending.get_mut(t))
        {
            // A UDP client's retry (same port, same id) waits for the one answer. Over TCP
            // the same id twice is two pipelined questions, each owed its answer (the
            // connection counts them, and reads no more until they are answered).
            if matches!(client, Client::Udp { .. })
                && p.waiters
                    .iter()
                    .any(|(c, r)| *c == client && r.id == req.id)
            {
                return Vec::new();
            }
            if p.waiters.len() >= MAX_JOINED || self.waiting >= MAX_PENDING {
                return vec![servfail(client, &req)];
            }
            p.waiters.push((client, req));
            self.waiting += 1;
            return Vec::new();
        }
        if self.conf.servers.is_empty() || self.waiting >= MAX_PENDING {
            return vec![servfail(client, &req)];
        }
        let token = self.next;
        self.next += 1;
        let query = Forwarder::query(&req);
        self.in_flight.insert(key.clone(), token);
        self.waiting += 1;
        self.pending.insert(
            token,
            Pending {
                waiters: vec![(client, req)],
                key,
                query,
                ports: [Port::Unopened; 2],
                tcp: false,
                sent: 0,
                outstanding: vec![false; self.conf.servers.len()],
            },
        );
        self.send_next(token)
    }

    /// Sends the next try, and arms the timer for the one after it (after the last, the
    /// deadline). A try whose family has no port yet asks for one and waits for it (the
    /// reactor opens it at once); one whose port could not be opened fails at once, and the
    /// try after it goes out instead, as glibc skips a server it cannot make a socket for.
    fn send_next(&mut self, token: u64) -> Vec<Action> {
        let interval = self.conf.interval();
        let tries = self.conf.tries();
        let servers = &self.conf.servers;
        let Some(p) = self.pending.get_mut(&token) else {
            return Vec::new();
        };
        if p.tcp || servers.is_empty() {
            return Vec::new();
        }
        while p.sent < tries {
            let server = p.sent as usize % servers.len();
            let to = servers[server];
            let family = Family::of(to);
            match p.ports[family.index()] {
                Port::Unopened => {
                    p.ports[family.index()] = Port::Opening;
                    return vec![Action::OpenUdp { token, family }];
                }
                Port::Opening => return Vec::new(),
                Port::Open(port) => {
                    if let Some(o) = p.outstanding.get_mut(server) {
                        *o = true;
                    }
                    p.sent += 1;
                    return vec![
                        Action::Send {
                            port,
                            bytes: p.query.clone(),
                            to,
                        },
                        Action::Arm {
                            token,
                            step: p.sent,
                            after: interval,
                        },
                    ];
                }
                Port::Failed => p.sent += 1,
            }
        }
        // The last tries failed at once: the servers asked before them have until the
        // deadline, if any may still answer.
        if p.outstanding.contains(&true) {
            vec![Action::Arm {
                token,
                step: p.sent,
                after: interval,
            }]
        } else {
            self.finish(token, None)
        }
    }

    /// The question's port of `family` is open: the try that waited for it.
    pub fn opened(&mut self, token: u64, family: Family, port: PortId) -> Vec<Action> {
        match self.pending.get_mut(&token) {
            Some(p) if !p.tcp && p.ports[family.index()] == Port::Opening => {
                p.ports[family.index()] = Port::Open(port);
                self.send_next(token)
            }
            // Answered meanwhile, or gone over TCP.
            _ => vec![Action::Close(port)],
        }
    }

    /// No port of `family` could be opened (no IPv6 on this host; no descriptor left): the
    /// try that waited for it fails, and so will every other try of that family; the next
    /// try goes out at once.
    pub fn open_failed(&mut self, token: u64, family: Family) -> Vec<Action> {
        match self.pending.get_mut(&token) {
            Some(p) if p.ports[family.index()] == Port::Opening => {
                p.ports[family.index()] = Port::Failed;
                self.send_next(token)
            }
            _ => Vec::new(),
        }
    }

    /// A try could not leave its port (`to` unreachable: IPv6 switched off, no route): that
    /// server failed, as glibc moves on when it cannot connect its socket to a server.
    pub fn send_failed(&mut self, token: u64, to: SocketAddr) -> Vec<Action> {
        let Some(p) = self.pending.get(&token).filter(|p| !p.tcp) else {
            return Vec::new();
        };
        let asked = p.sent.min(self.conf.servers.len() as u32) as usize;
        match self.conf.servers[..asked].iter().position(|s| *s == to) {
            Some(server) => self.server_failed(token, server),
            None => Vec::new(),
        }
    }

    /// A datagram on the question's port of `family`: an answer counts from any server asked
    /// so far, if it came to the port that server was asked from.
    pub fn datagram(
        &mut self,
        token: u64,
        family: Family,
        from: SocketAddr,
        msg: &[u8],
    ) -> Vec<Action> {
        let Some(p) = self.pending.get(&token) else {
            return Vec::new();
        };
        let asked = p.sent.min(self.conf.servers.len() as u32) as usize;
        let Some(server) = self.conf.servers[..asked]
            .iter()
            .position(|s| *s == from && Family::of(*s) == family)
        else {
            return Vec::new(); // not from a server asked: ignored (spoofing)
        };
        match Upstream::parse(msg, &p.query) {
            Ok(up) if next_server(msg, &up) => self.server_failed(token, server),
            Ok(up) => self.finish(token, Some(up)),
            Err(Bad::NotOurs) => Vec::new(),
            // Already over TCP: the answer it gives is the one.
            Err(Bad::Truncated) if p.tcp => Vec::new(),
            Err(Bad::Truncated) => {
                let timeout = self.tcp_timeout(p.sent);
                let Some(p) = self.pending.get_mut(&token) else {
                    return Vec::new();
                };
                p.tcp = true;
                let mut out = close_ports(&mut p.ports);
                out.push(Action::Connect {
                    token,
                    to: from,
                    bytes: p.query.clone(),
                    timeout,
                });
                out
            }
            Err(Bad::Malformed) => self.server_failed(token, server),
        }
    }

    /// The TCP question after a truncated answer gets what is left of the deadline (at
    /// least what the tries not yet sent would have had), and at least a second.
    fn tcp_timeout(&self, sent: u32) -> Duration {
        let left = self.conf.tries().saturating_sub(sent);
        (self.conf.interval() * left).max(Duration::from_secs(1))
    }

    /// Server `server` answered with its failure: the next try goes out at once, as glibc's
    /// resolver moves on at once; once every try is out, SERVFAIL as soon as no server asked
    /// may still answer.
    fn server_failed(&mut self, token: u64, server: usize) -> Vec<Action> {
        let tries = self.conf.tries();
        let Some(p) = self.pending.get_mut(&token) else {
            return Vec::new();
        };
        if let Some(o) = p.outstanding.get_mut(server) {
            *o = false;
        }
        if p.sent < tries {
            self.send_next(token)
        } else if p.outstanding.contains(&true) {
            Vec::new()
        } else {
            self.finish(token, None)
        }
    }

    /// The TCP answer after a truncated one.
    pub fn tcp_answer(&mut self, token: u64, msg: &[u8]) -> Vec<Action> {
        let Some(p) = self.pending.get(&token) else {
            return Vec::new();
        };
        match Upstream::parse(msg, &p.query) {
            Ok(up) => self.finish(token, Some(up)),
            Err(_) => self.finish(token, None),
        }
    }

    /// The TCP connection failed or closed without an answer.
    pub fn tcp_failed(&mut self, token: u64) -> Vec<Action> {
        self.finish(token, None)
    }

    /// The timer of `step` fired with no answer: the next try, or after the last, SERVFAIL,
    /// remembered for [`FAILURE_MEMORY`] (asking again at once would wait out the deadline
    /// again).
    pub fn timed_out(&mut self, token: u64, step: u32) -> Vec<Action> {
        match self.pending.get(&token) {
            // Answered, a try sent early (a server failed), or moved on to TCP (which has its
            // own timeout): a stale timer.
            Some(p) if p.sent == step && !p.tcp => {
                if p.sent < self.conf.tries() {
                    self.send_next(token)
                } else {
                    let key = p.key.clone();
                    let mut out = self.finish(token, None);
                    out.push(Action::Failed { key });
                    out
                }
            }
            _ => Vec::new(),
        }
    }

    /// The question is done: relay the answer to each client waiting (and keep it), or
    /// SERVFAIL. An answer is NOERROR or NXDOMAIN; any other code (the last server's
    /// SERVFAIL or REFUSED, a FORMERR to our query) is SERVFAIL to the client, as twistd
    /// answers (its client turns them into errors, its server those into SERVFAIL): a
    /// REFUSED relayed would read as our policy.
    fn finish(&mut self, token: u64, answer: Option<Upstream>) -> Vec<Action> {
        let Some(p) = self.pending.remove(&token) else {
            return Vec::new();
        };
        if self.in_flight.get(&p.key) == Some(&token) {
            self.in_flight.remove(&p.key);
        }
        self.waiting -= p.waiters.len();
        let mut ports = p.ports;
        let mut out = close_ports(&mut ports);
        let answer = answer.filter(|up| {
            matches!(
                Rcode::checked_from_int(up.rcode),
                Some(Rcode::NOERROR | Rcode::NXDOMAIN)
            )
        });
        match answer {
            Some(up) => {
                let mut kept = None;
                for (client, req) in p.waiters {
                    out.push(Action::Reply {
                        client,
                        bytes: up.relay(&req, 0),
                    });
                    kept.get_or_insert(req);
                }
                if let Some(req) = kept {
                    out.push(Action::Keep {
                        req,
                        answer: Rc::new(up),
                    });
                }
            }
            None => out.extend(p.waiters.iter().map(|(c, r)| servfail(*c, r))),
        }
        out
    }
}

/// Closes the ports open: a port still opening is closed when it opens, its question gone.
fn close_ports(ports: &mut [Port; 2]) -> Vec<Action> {
    let mut out = Vec::new();
    for p in ports {
        if let Port::Open(id) = *p {
            out.push(Action::Close(id));
            *p = Port::Unopened;
        }
    }
    out
}

/// Whether an upstream answer is that server's failure rather than an answer, so that the
/// next server is asked (within the same tries), as glibc's res_send does with the same
/// resolv.conf: SERVFAIL, NOTIMP and REFUSED, and a referral (NOERROR with no answer and
/// no additional record, neither AA nor RA: a server that does not recurse for us). glibc
/// counts the OPT as an additional record, but sends none unless told (`options edns0`);
/// we always send one, so the upstream's OPT is not counted.
fn next_server(msg: &[u8], up: &Upstream) -> bool {
    let (Some(&f1), Some(&f2)) = (msg.get(2), msg.get(3)) else {
        return false;
    };
    let [an, _, ar] = up.counts();
    let rcode = Rcode::checked_from_int(up.rcode);
    let referral =
        rcode == Some(Rcode::NOERROR) && an == 0 && ar == 0 && f1 & 0x04 == 0 && f2 & 0x80 == 0;
    referral
        || matches!(
            rcode,
            Some(Rcode::SERVFAIL | Rcode::NOTIMP | Rcode::REFUSED)
        )
}

/// SERVFAIL for a forwarded question (no server answered).
pub fn servfail(client: Client, req: &Forward) -> Action {
    Action::Reply {
        client,
        bytes: servfail_bytes(req),
    }
}

/// The bytes of a SERVFAIL to the client of `req`.
pub fn servfail_bytes(req: &Forward) -> Vec<u8> {
    let mut b = Vec::with_capacity(12 + req.client_question().len() + 11);
    b.extend_from_slice(&req.id.to_be_bytes());
    let cd = if req.cd { 0x10 } else { 0 };
    b.extend_from_slice(&[
        0x80 | u8::from(req.rd),
        0x82 | cd,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        u8::from(req.edns.is_some()),
    ]);
    b.extend_from_slice(req.client_question());
    if let Some(edns) = req.edns {
        b.extend_from_slice(&crate::cache::opt_record(edns.dnssec_ok));
    }
    b
}

/// Questions that ran out their deadline lately, by key: the same question within
/// [`FAILURE_MEMORY`] gets SERVFAIL at once instead of another 4 s chase, as BIND's
/// `servfail-ttl` answers. Only a deadline is remembered: a SERVFAIL made of the upstreams'
/// own failures (SERVFAIL, REFUSED) came fast, so asking again costs the client nothing, and
/// the upstream keeps its own (BIND's 1 s). Kept whether `-c` is given or not: it is not a
/// cache of records but the end of the question, like the joining of one in flight.
#[derive(Default)]
pub struct Failures {
    at: HashMap<Key, Instant>,
    /// Oldest first: every entry lives as long, so the front expires first.
    order: VecDeque<(Key, Instant)>,
}

impl Failures {
    /// Remembers that `key`'s question failed `now`; past [`MAX_FAILURES`], the oldest goes.
    pub fn remember(&mut self, key: Key, now: Instant) {
        self.expire(now);
        while self.order.len() >= MAX_FAILURES {
            self.pop();
        }
        self.order.push_back((key.clone(), now));
        self.at.insert(key, now);
    }

    /// Whether `key`'s question failed within the last [`FAILURE_MEMORY`].
    pub fn failed(&mut self, key: &Key, now: Instant) -> bool {
        self.expire(now);
        self.at.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Forgets them all (the servers changed).
    pub fn clear(&mut self) {
        self.at.clear();
        self.order.clear();
    }

    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) >= FAILURE_MEMORY)
        {
            self.pop();
        }
    }

    /// Drops the oldest position, and its entry unless the key was remembered again since.
    fn pop(&mut self) {
        if let Some((key, at)) = self.order.pop_front()
            && self.at.get(&key) == Some(&at)
        {
            self.at.remove(&key);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::responder::{Reply, Responder, Via};
    use crate::tests::{Read, query, read};
    use domain::base::iana::Rtype;
    use std::time::Instant;

    fn port(n: u32) -> PortId {
        twistrs_core::testing::port_id(n)
    }

    pub(crate) fn req(name: &str, qtype: Rtype) -> Forward {
        let mut r = Responder::new(crate::lookup::Store::default());
        r.recursion = true;
        match r.respond(
            &query(name, qtype, Some(1232)),
            Via::Udp,
            "127.0.0.1".parse().unwrap(),
        ) {
            Reply::Forward(f) => f,
            other => panic!("{other:?}"),
        }
    }

    fn conf(servers: &[&str]) -> ResolvConf {
        ResolvConf::parse(
            &servers
                .iter()
                .map(|s| format!("nameserver {s}\n"))
                .chain(["options timeout:1 attempts:2\n".to_string()])
                .collect::<String>(),
        )
    }

    pub(crate) fn client() -> Client {
        Client::Tcp {
            conn: twistrs_core::testing::conn_id(9),
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// What the forwarder sent, answered by an authoritative responder of the test zone.
    fn upstream_answer(sent: &[u8]) -> Vec<u8> {
        let mut up = Responder::new(crate::tests::store());
        match up.respond(sent, Via::Udp, "127.0.0.1".parse().unwrap()) {
            Reply::Send(b) => b,
            other => panic!("{other:?}"),
        }
    }

    /// The answer the forwarder keeps for `r`, asked of the test zone's responder.
    pub(crate) fn kept_answer(r: &Forward) -> Rc<Upstream> {
        let mut f = Forwarder::new(conf(&["127.0.0.1:5301"]));
        let a = f.start(r.clone(), client());
        let token = open_of(&a, Family::V4);
        let a = f.opened(token, Family::V4, port(1));
        let [Action::Send { bytes, to, .. }, _] = a.as_slice() else {
            panic!("{a:?}")
        };
        f.datagram(token, Family::V4, *to, &upstream_answer(bytes))
            .into_iter()
            .find_map(|x| match x {
                Action::Keep { answer, .. } => Some(answer),
                _ => None,
            })
            .expect("an answer to keep")
    }

    #[test]
    fn resolv_conf_lines() {
        let c = ResolvConf::parse(
            "# x\nnameserver 192.0.2.1\nnameserver ::1\nnameserver 127.0.0.1#5353\n\
             search example.com\noptions ndots:2 timeout:3 attempts:4\n",
        );
        assert_eq!(
            c.servers,
            [
                "192.0.2.1:53".parse().unwrap(),
                "[::1]:53".parse().unwrap(),
                "127.0.0.1:5353".parse().unwrap()
            ]
        );
        assert_eq!((c.timeout, c.attempts), (Duration::from_secs(3), 4));
        let empty = ResolvConf::parse("");
        assert_eq!(empty.servers, [DEFAULT_SERVER.parse().unwrap()]);
        // A server listed twice is one server.
        let twice =
            ResolvConf::parse("nameserver 192.0.2.1\nnameserver ::1\nnameserver 192.0.2.1\n");
        assert_eq!(
            twice.servers,
            ["192.0.2.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }

    #[test]
    fn a_question_goes_up_and_its_answer_comes_back() {
        let mut f = Forwarder::new(conf(&["127.0.0.1:5301"]));
        let a = f.start(req("WEB.example.com", Rtype::A), client());
        let token = open_of(&a, Family::V4);
        assert_eq!(Family::V4.any().port(), 0, "a port the kernel picks");
        let a = f.opened(token, Family::V4, port(1));
        let [Action::Send { bytes, to, .. }, Action::Arm { .. }] = a.as_slice() else {
            panic!("{a:?}")
        };
        assert_eq!(to.port(), 5301);
        let answer = upstream_answer(bytes);
        // From another address or with another id: ignored.
        assert!(
            f.datagram(
                token,
                Family::V4,
                "127.0.0.1:5302".parse().unwrap(),
                &answer
            )
            .is_empty()
        );
        let mut wrong = answer.clone();
        wrong[0] ^= 1;
        assert!(f.datagram(token, Family::V4, *to, &wrong).is_empty());
        let a = f.datagram(token, Family::V4, *to, &answer);
        let [
            Action::Close(_),
            Action::Reply { bytes, .. },
            Action::Keep { req, answer },
        ] = a.as_slice()
        else {
            panic!("{a:?}")
        };
        let r = read(bytes);
        assert_eq!(r.id, 0xABCD, "the client's id");
        assert!(r.ra && !r.aa, "recursion available, not authoritative");
        assert_eq!(r.answer, ["web.example.com 300 A 192.0.2.3"]);
        assert_eq!(r.opt, Some(crate::message::OUR_PAYLOAD));
        assert_eq!(f.pending(), 0);

        // Kept: answered from the cache with the TTL lowered by the time spent there.
        let mut c = Cache::new(10);
        let t0 = Instant::now();
        c.store(req, answer.clone(), t0);
        let hit = c.answer(req, t0 + Duration::from_secs(100)).unwrap();
        assert_eq!(read(&hit).answer, ["web.example.com 200 A 192.0.2.3"]);
        assert!(
            c.answer(req, t0 + Duration::from_secs(300)).is_none(),
            "expired"
        );
        assert!(c.is_empty());
    }

    /// The client's DO bit goes up in our OPT (so that a validating client behind us gets
    /// the RRSIGs it needs); without it, none. Before, our OPT's flags were always 0.
    #[test]
    fn the_do_bit_is_asked_of_the_upstream() {
        for dnssec_ok in [false, true] {
            let mut r = req("web.example.com", Rtype::A);
            r.edns = Some(crate::message::Edns {
                payload: 1232,
                version: 0,
                dnssec_ok,
            });
            let mut f = Forwarder::new(conf(&["127.0.0.1:5301"]));
            let a = f.start(r, client());
            let token = open_of(&a, Family::V4);
            let a = f.opened(token, Family::V4, port(1));
            let [Action::Send { bytes, .. }, _] = a.as_slice() else {
                panic!("{a:?}")
            };
            let opt = &bytes[bytes.len() - 11..];
            assert_eq!(&opt[..3], &[0, 0, 41], "an OPT last: {bytes:?}");
            assert_eq!(opt[7] & 0x80 != 0, dnssec_ok, "{opt:?}");
        }
    }

    #[test]
    fn questions_in_flight_are_bounded() {
        let mut f = Forwarder::new(conf(&["127.0.0.1:5301"]));
        for i in 0..MAX_PENDING {
            let a = f.start(req(&format!("n{i}.example.com"), Rtype::A), client());
            assert!(matches!(a.as_slice(), [Action::OpenUdp { .. }]), "{a:?}");
        }
        let a = f.start(req("web.example.com", Rtype::A), client());
        let [Action::Reply { bytes, .. }] = a.as_slice() else {
            panic!("{a:?}")
        };
        assert_eq!(read(bytes).rcode, Rcode::SERVFAIL);
        // Joining counts too: another client of a question in flight.
        let other = Client::Udp {
            port: port(7),
            addr: "127.0.0.1:4000".parse().unwrap(),
        };
        let a = f.start(req("n0.example.com", Rtype::A), other);
        let [Action::Reply { bytes, .. }] = a.as_slice() else {
            panic!("{a:?}")
        };
        assert_eq!(read(bytes).rcode, Rcode::SERVFAIL);
        assert_eq!(f.pending(), MAX_PENDING);
        // One answered (its timers run out): room for one more.
        let a = f.opened(0, Family::V4, port(1));
        assert!(matches!(a.as_slice(), [Action::Send { .. }, _]), "{a:?}");
        let a = f.timed_out(0, 1);
        assert!(matches!(a.as_slice(), [Action::Send { .. }, _]), "{a:?}");
        let a = f.timed_out(0, 2);
        assert!(
            matches!(
                a.as_slice(),
                [
                    Action::Close(_),
                    Action::Reply { .. },
                    Action::Failed { .. }
                ]
            ),
            "{a:?}"
        );
        let a = f.start(req("web.example.com", Rtype::A), client());
        assert!(matches!(a.as_slice(), [Action::OpenUdp { .. }]), "{a:?}");
    }

    /// The tries go out `interval` apart, in turn over the servers, and SERVFAIL comes one
    /// interval after the last: 2 servers, 2 rounds of 1 s each (as resolv.conf says: 4 s
    /// fit the deadline). A stale timer does nothing.
    #[test]
    fn timeouts_move_to_the_next_server_then_servfail() {
        let mut f = Forwarder::new(conf(&["127.0.0.1:5301", "127.0.0.1:5302"]));
        let a = f.start(req("web.example.com", Rtype::A), client());
        let token = open_of(&a, Family::V4);
        let a = f.opened(token, Family::V4, port(1));
        let [Action::Send { to, .. }, Action::Arm { step: 1, after, .. }] = a.as_slice() else {
            panic!("{a:?}")
        };
        assert_eq!(*after, Duration::from_secs(1));
        let mut servers = vec![to.port()];
        for step in 1..=4 {
            let a = f.timed_out(token, step);
            match a.as_slice() {
                [Action::Send { to, .. }, Action::Arm { step: n, .. }] => {
                    assert_eq!(*n, step + 1);
                    servers.push(to.port());
                }
                [
                    Action::Close(_),
                    Action::Reply { bytes, .. },
                    Action::Failed { key },
                ] => {
                    assert_eq!(step, 4, "2 servers x 2 attempts");
                    assert_eq!(read(bytes).rcode, Rcode::SERVFAIL);
                    assert_eq!(*key, Cache::key(&req("web.example.com", Rtype::A)));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(servers, [5301, 5302, 5301, 5302]);
        assert!(
            f.timed_out(token, 1).is_empty(),
            "a stale timer does nothing"
        );
    }

    /// resolv.conf's schedule, fitted into the deadline: glibc's own defaults (5 s, 2
    /// rounds) with three servers would take 30 s; here the six tries go out 0.67 s apart
    /// and SERVFAIL comes at 4 s. A schedule shorter than the deadline is kept as it is.
    /// Before, each try waited its whole timeout: 3 servers x 2 rounds x 2 s = 12 s, after
    /// a stub resolver had given up (5 s).
    #[test]
    fn the_tries_fit_in_the_deadline() {
        let three = ["127.0.0.1:5301", "127.0.0.1:5302", "127.0.0.1:5303"];
        for (text, tries, interval) in [
            ("", 6, DEADLINE / 6),
            ("options timeout:5 attempts:2\n", 6, DEADLINE / 6),
            ("options timeout:1 attempts:1\n", 3, Duration::from_secs(1)),
        ] {
            let mut c = ResolvConf::parse(text);
            c.servers = three.iter().map(|s| s.parse().unwrap()).collect();
            assert_eq!((c.tries(), c.interval()), (tries, interval), "{text}");
            assert!(c.interval() * c.tries() <= DEADLINE);
        }
        let one = ResolvConf::parse("nameserver 127.0.0.1\n");
        assert_eq!(
            (one.tries(), one.interval()),
            (2, Duration::from_secs(2)),
            "one server, the defaults: as before, 2 tries of 2 s"
        );
    }

    /// While a later server is asked, an earlier one's answer still counts (a slow upstream
    /// is not given up on because the next was asked): the answer is relayed, and the
    /// timers left are stale.
    #[test]
    fn an_earlier_servers_answer_counts_after_the_next_was_asked() {
        let mut f = Forwarder::new(conf(&["127.0.0.1:5301", "127.0.0.1:5302"]));
        let (token, sent, first) = started(&mut f);
        let a = f.timed_out(token, 1);
        assert!(matches!(a.as_slice(), [Action::Send { to, .. }, _] if to.port() == 5302));
        // Not from a server asked: ignored.
        let stranger = "127.0.0.1:5303".parse().unwrap();
        assert!(
            f.datagram(token, Family::V4, stranger, &upstream_answer(&sent))
                .is_empty()
        );
        let a = f.datagram(token, Family::V4, first, &upstream_answer(&sent));
        let [
            Action::Close(_),
            Action::Reply { bytes, .. },
            Action::Keep { .. },
        ] = a.as_slice()
        else {
            panic!("{a:?}")
        };
        assert_eq!(read(bytes).answer, ["web.example.com 300 A 192.0.2.3"]);
        assert!(f.timed_out(token, 2).is_empty());
        assert_eq!(f.pending(), 0);
    }

    /// The same question while it is on its way joins it, as twistd's client and BIND join
    /// it: another client's (another id, the name in other case) gets the answer with its own
    /// id and question; the same UDP client asking again with the same id (a stub's retry)
    /// gets the one answer; the upstream is asked once. Before, each started its own round of
    /// tries, so a stub retrying every 5 s against dead upstreams began one every 5 s.
    /// Past `MAX_JOINED` clients, SERVFAIL at once; once answered, the question starts anew.
    #[test]
    fn the_same_question_in_flight_is_joined() {
        let mut f = Forwarder::new(conf(&["127.0.0.1:5301"]));
        let (token, sent, to) = started(&mut f);
        let other = Client::Udp {
            port: port(7),
            addr: "127.0.0.1:4000".parse().unwrap(),
        };
        let mut theirs = req("WEB.Example.com", Rtype::A);
        theirs.id = 0x1234;
        assert!(f.start(theirs.clone(), other).is_empty(), "joined");
        assert!(f.start(theirs.clone(), other).is_empty(), "its retry");
        let mut cd = req("web.example.com", Rtype::A);
        cd.cd = true;
        assert!(
            matches!(f.start(cd, client()).as_slice(), [Action::OpenUdp { .. }]),
            "another key (CD): a question of its own"
        );
        assert_eq!(f.pending(), 2);
        for i in 2..MAX_JOINED {
            let c = Client::Udp {
                port: port(7),
                addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000 + i as u16),
            };
            assert!(f.start(theirs.clone(), c).is_empty());
        }
        let late = Client::Udp {
            port: port(7),
            addr: "127.0.0.1:9999".parse().unwrap(),
        };
        let a = f.start(theirs.clone(), late);
        let [Action::Reply { client: who, bytes }] = a.as_slice() else {
            panic!("{a:?}")
        };
        assert_eq!((*who, read(bytes).rcode), (late, Rcode::SERVFAIL));

        let a = f.datagram(token, Family::V4, to, &upstream_answer(&sent));
        let replies: Vec<(Client, Read)> = a
            .iter()
            .filter_map(|x| match x {
                Action::Reply { client, bytes } => Some((*client, read(bytes))),
                _ => None,
            })
            .collect();
        assert_eq!(replies.len(), MAX_JOINED, "each client once");
        assert_eq!((replies[0].0, replies[0].1.id), (client(), 0xABCD));
        assert_eq!((replies[1].0, replies[1].1.id), (other, 0x1234));
        assert!(replies.iter().all(|(_, r)| r.answer.len() == 1));
        let m = domain::base::Message::from_octets(match &a[2] {
            Action::Reply { bytes, .. } => bytes.as_slice(),
            x => panic!("{x:?}"),
        })
        .unwrap();
        assert_eq!(
            m.first_question().unwrap().qname().to_string(),
            "WEB.Example.com",
            "its own question"
        );
        assert_eq!(
            a.iter()
                .filter(|x| matches!(x, Action::Keep { .. }))
                .count(),
            1
        );
        assert!(matches!(
            f.start(theirs, other).as_slice(),
            [Action::OpenUdp { .. }]
        ));
    }

    /// Over TCP the same id twice is two pipelined questions, not a retry: each gets its
    /// answer. Dropping the second left the connection counting a question never answered,
    /// so at its limit of questions upstream it read no more, and never closed after EOF.
    #[test]
    fn the_same_id_twice_over_tcp_is_answered_twice() {
        let mut f = Forwarder::new(conf(&["127.0.0.1:5301"]));
        let (token, sent, to) = started(&mut f);
        assert!(
            f.start(req("web.example.com", Rtype::A), client())
                .is_empty(),
            "joined"
        );
        let a = f.datagram(token, Family::V4, to, &upstream_answer(&sent));
        let replies = a
            .iter()
            .filter(|x| matches!(x, Action::Reply { client: c, .. } if *c == client()))
            .count();
        assert_eq!(replies, 2, "{a:?}");
    }

    /// What the forwarder sent, answered with `rcode` and nothing else, RA set unless a
    /// referral is wanted (rcode NOERROR, RA and AA clear).
    fn bare_answer(sent: &[u8], rcode: Rcode, ra: bool) -> Vec<u8> {
        let mut b = sent.to_vec();
        b[2] |= 0x80;
        b[3] = u8::from(ra) << 7 | rcode.to_int();
        b
    }

    /// A question started, its port open: the token and where its first try went.
    fn started(f: &mut Forwarder) -> (u64, Vec<u8>, SocketAddr) {
        let a = f.start(req("web.example.com", Rtype::A), client());
        let token = open_of(&a, Family::V4);
        let a = f.opened(token, Family::V4, port(1));
        let [Action::Send { bytes, to, .. }, Action::Arm { .. }] = a.as_slice() else {
            panic!("{a:?}")
        };
        (token, bytes.clone(), *to)
    }

    /// SERVFAIL, REFUSED and NOTIMP from a server, and a referral (no answer, neither AA
    /// nor RA: it does not recurse for us), send the question to the next server at once,
    /// whose answer is relayed, as glibc's resolver does with the same resolv.conf. Before,
    /// the first server's SERVFAIL or REFUSED went to the client as the answer.
    #[test]
    fn a_server_that_fails_or_refuses_hands_over_to_the_next() {
        for (rcode, ra) in [
            (Rcode::SERVFAIL, true),
            (Rcode::REFUSED, true),
            (Rcode::NOTIMP, true),
            (Rcode::NOERROR, false),
        ] {
            let mut f = Forwarder::new(conf(&["127.0.0.1:5301", "127.0.0.1:5302"]));
            let (token, sent, first) = started(&mut f);
            assert_eq!(first.port(), 5301);
            let a = f.datagram(token, Family::V4, first, &bare_answer(&sent, rcode, ra));
            let [Action::Send { bytes, to, .. }, Action::Arm { step: 2, .. }] = a.as_slice() else {
                panic!("{rcode}: {a:?}")
            };
            assert_eq!((to.port(), bytes), (5302, &sent), "{rcode}");
            assert!(
                f.timed_out(token, 1).is_empty(),
                "the first try's timer is stale"
            );
            let a = f.datagram(token, Family::V4, *to, &upstream_answer(&sent));
            let [_, Action::Reply { bytes, .. }, Action::Keep { .. }] = a.as_slice() else {
                panic!("{rcode}: {a:?}")
            };
            assert_eq!(read(bytes).answer, ["web.example.com 300 A 192.0.2.3"]);
        }
    }

    /// When every try fails (refusals and timeouts alike, attempts x servers in all), the
    /// client gets SERVFAIL, never an upstream's REFUSED, which would read as our policy;
    /// and nothing is kept. Once every try is out, SERVFAIL waits for a server asked that
    /// has not failed since, and comes as soon as none is left. Not remembered as a failure
    /// (no `Failed`): it came before the deadline.
    #[test]
    fn every_server_failing_is_servfail_within_the_same_tries() {
        let mut f = Forwarder::new(conf(&["127.0.0.1:5301", "127.0.0.1:5302"]));
        let (token, sent, one) = started(&mut f);
        let two: SocketAddr = "127.0.0.1:5302".parse().unwrap();
        let refused = bare_answer(&sent, Rcode::REFUSED, true);
        let mut servers = vec![one.port()];
        // 5301 refuses: 5302 at once; its timer: 5301 again; 5302 refuses: 5302 again.
        for a in [
            f.datagram(token, Family::V4, one, &refused),
            f.timed_out(token, 2),
            f.datagram(token, Family::V4, two, &refused),
        ] {
            let [Action::Send { to, .. }, Action::Arm { .. }] = a.as_slice() else {
                panic!("{a:?}")
            };
            servers.push(to.port());
        }
        assert_eq!(servers, [5301, 5302, 5301, 5302]);
        // Every try out; 5302 refuses again, 5301 (asked again) may still answer.
        assert!(f.datagram(token, Family::V4, two, &refused).is_empty());
        let a = f.datagram(token, Family::V4, one, &refused);
        let [Action::Close(_), Action::Reply { bytes, .. }] = a.as_slice() else {
            panic!("{a:?}")
        };
        let r = read(bytes);
        assert_eq!((r.rcode, r.ra), (Rcode::SERVFAIL, true));
        assert_eq!(r.opt, Some(crate::message::OUR_PAYLOAD));
        assert_eq!(f.pending(), 0);
    }

    /// Any other code is final (glibc relays it) but goes to the client as SERVFAIL, as
    /// twistd's does: a FORMERR says our query was malformed, not the client's. A TCP
    /// answer (after TC) that refuses is SERVFAIL too. NXDOMAIN is an answer, relayed.
    #[test]
    fn other_codes_are_final_and_servfail_but_nxdomain_is_relayed() {
        for (rcode, want) in [
            (Rcode::FORMERR, Rcode::SERVFAIL),
            (Rcode::YXDOMAIN, Rcode::SERVFAIL),
            (Rcode::NXDOMAIN, Rcode::NXDOMAIN),
        ] {
            let mut f = Forwarder::new(conf(&["127.0.0.1:5301", "127.0.0.1:5302"]));
            let (token, sent, to) = started(&mut f);
            let a = f.datagram(token, Family::V4, to, &bare_answer(&sent, rcode, true));
            let (Action::Close(_), Some(Action::Reply { bytes, .. })) = (&a[0], a.get(1)) else {
                panic!("{rcode}: {a:?}")
            };
            assert_eq!(read(bytes).rcode, want, "{rcode}");
            assert_eq!(f.pending(), 0);
        }
        let mut f = Forwarder::new(conf(&["127.0.0.1:5301"]));
        let (token, sent, to) = started(&mut f);
        let mut tc = bare_answer(&sent, Rcode::NOERROR, true);
        tc[2] |= 0x02;
        assert!(matches!(
            f.datagram(token, Family::V4, to, &tc).as_slice(),
            [Action::Close(_), Action::Connect { .. }]
        ));
        let a = f.tcp_answer(token, &bare_answer(&sent, Rcode::REFUSED, true));
        let [Action::Reply { bytes, .. }] = a.as_slice() else {
            panic!("{a:?}")
        };
        assert_eq!(read(bytes).rcode, Rcode::SERVFAIL);
    }

    #[test]
    fn truncated_answers_are_asked_again_over_tcp() {
        let mut f = Forwarder::new(conf(&["127.0.0.1:5301"]));
        let a = f.start(req("big.example.com", Rtype::TXT), client());
        let token = open_of(&a, Family::V4);
        let a = f.opened(token, Family::V4, port(1));
        let [Action::Send { bytes, to, .. }, _] = a.as_slice() else {
            panic!()
        };
        let sent = bytes.clone();
        let udp = upstream_answer(&sent);
        assert!(read(&udp).tc);
        let a = f.datagram(token, Family::V4, *to, &udp);
        let [Action::Close(_), Action::Connect { bytes, .. }] = a.as_slice() else {
            panic!("{a:?}")
        };
        assert_eq!(bytes, &sent);
        assert!(
            f.timed_out(token, 0).is_empty(),
            "the UDP timer no longer counts"
        );
        let mut up = Responder::new(crate::tests::store());
        let Reply::Send(full) = up.respond(&sent, Via::Tcp, "127.0.0.1".parse().unwrap()) else {
            panic!()
        };
        let a = f.tcp_answer(token, &full);
        let [Action::Reply { bytes, .. }, Action::Keep { .. }] = a.as_slice() else {
            panic!("{a:?}")
        };
        // The client asked over UDP with 1232 bytes: the 3 KB answer is truncated for it.
        assert!(read(bytes).tc);
    }

    #[test]
    fn negative_answers_are_kept_by_the_soa_minimum() {
        let mut f = Forwarder::new(conf(&["127.0.0.1:5301"]));
        let r = req("nope.example.com", Rtype::A);
        let a = f.start(r.clone(), client());
        let token = open_of(&a, Family::V4);
        let a = f.opened(token, Family::V4, port(1));
        let [Action::Send { bytes, to, .. }, _] = a.as_slice() else {
            panic!()
        };
        let a = f.datagram(token, Family::V4, *to, &upstream_answer(bytes));
        let [_, Action::Reply { bytes, .. }, Action::Keep { answer, .. }] = a.as_slice() else {
            panic!()
        };
        assert_eq!(read(bytes).rcode, Rcode::NXDOMAIN);
        assert_eq!(answer.keep, 60, "the SOA's MINIMUM");
        let mut c = Cache::new(2);
        let t0 = Instant::now();
        c.store(&r, answer.clone(), t0);
        assert_eq!(read(&c.answer(&r, t0).unwrap()).rcode, Rcode::NXDOMAIN);
        // Bounded: the oldest goes first.
        c.store(&req("a.example.com", Rtype::A), answer.clone(), t0);
        c.store(&req("b.example.com", Rtype::A), answer.clone(), t0);
        assert_eq!(c.len(), 2);
        assert!(c.answer(&r, t0).is_none());
    }

    /// Our zone `local.test`, with CNAMEs out of it: to the hosts file, to another of our
    /// zones, to the upstream's zone (the test zone, example.com) twice, and to a name the
    /// upstream does not know.
    fn chaser() -> Responder {
        let d = tempfile::tempdir().unwrap();
        let (local, other) = (d.path().join("local.test"), d.path().join("other.test"));
        std::fs::write(
            &local,
            "$ORIGIN local.test.\n$TTL 300\n@ SOA ns h 1 2 3 4 60\n@ NS ns\nns A 192.0.2.9\n\
             tohost CNAME host.local.\ncross CNAME hop\nhop 60 CNAME www.other.test.\n\
             out CNAME web.example.com.\nfar CNAME www.example.com.\nbig CNAME big.example.com.\n\
             gone CNAME nope.example.com.\n",
        )
        .unwrap();
        std::fs::write(
            &other,
            "$ORIGIN other.test.\n@ 300 SOA ns.local.test. h 1 2 3 4 30\n@ NS ns.local.test.\n\
             www A 192.0.2.20\n",
        )
        .unwrap();
        let mut s = crate::lookup::Store::default();
        for p in [&local, &other] {
            s.add_zone(Rc::new(crate::zonefile::load(p).unwrap()));
        }
        s.hosts = Some(Rc::new(crate::hosts::Hosts::parse(
            "192.0.2.80 host.local\n",
        )));
        let mut r = Responder::new(s);
        r.recursion = true;
        r
    }

    /// The client's answer to `name`, forwarded (to the test zone's responder) when it must be.
    fn chased(r: &mut Responder, name: &str, edns: Option<u16>) -> Vec<u8> {
        chased_via(r, name, Rtype::A, edns, Via::Udp)
    }

    fn chased_via(
        r: &mut Responder,
        name: &str,
        qtype: Rtype,
        edns: Option<u16>,
        via: Via,
    ) -> Vec<u8> {
        let peer = "127.0.0.1".parse().unwrap();
        let req = match r.respond(&query(name, qtype, edns), via, peer) {
            Reply::Send(b) => return b,
            Reply::Forward(f) => f,
            other => panic!("{other:?}"),
        };
        let mut f = Forwarder::new(conf(&["127.0.0.1:5301"]));
        let a = f.start(req, client());
        let token = open_of(&a, Family::V4);
        let a = f.opened(token, Family::V4, port(1));
        let [Action::Send { bytes, to, .. }, _] = a.as_slice() else {
            panic!("{a:?}")
        };
        let mut a = f.datagram(token, Family::V4, *to, &upstream_answer(bytes));
        if let [_, Action::Connect { token, bytes, .. }] = a.as_slice() {
            let mut up = Responder::new(crate::tests::store());
            let Reply::Send(whole) = up.respond(bytes, Via::Tcp, "127.0.0.1".parse().unwrap())
            else {
                panic!()
            };
            a = f.tcp_answer(*token, &whole);
            a.insert(0, Action::Close(port(1)));
        }
        match a.as_slice() {
            [_, Action::Reply { bytes, .. }, Action::Keep { req, answer }] => {
                // The cache gives the same answer, its TTLs lowered.
                let mut c = Cache::new(10);
                let t0 = Instant::now();
                c.store(req, answer.clone(), t0);
                let later = read(&c.answer(req, t0 + Duration::from_secs(10)).unwrap());
                let now = read(bytes);
                assert_eq!(
                    (later.rcode, later.answer.len()),
                    (now.rcode, now.answer.len())
                );
                bytes.clone()
            }
            [Action::Reply { bytes, .. }] => bytes.clone(),
            other => panic!("{other:?}"),
        }
    }

    /// With `-r`, a CNAME chain that leaves a zone is followed, as BIND and dnsmasq follow
    /// it: into our other zones and the hosts file, and out to the upstream, the client's
    /// answer holding the whole chain under its own question. Before, it stopped at the
    /// zone's edge: glibc's stub resolver (getent, curl, ping) does not ask again for the
    /// target, and found no address (found pointing getent at twistrs and at BIND).
    #[test]
    fn a_cname_chain_out_of_our_zones_is_followed_with_recursion() {
        let mut r = chaser();
        let local = read(&chased(&mut r, "cross.local.test", None));
        assert_eq!(
            local.answer,
            [
                "cross.local.test 300 CNAME hop.local.test.",
                "hop.local.test 60 CNAME www.other.test.",
                "www.other.test 300 A 192.0.2.20"
            ]
        );
        assert!(local.aa && local.ra && local.rcode == Rcode::NOERROR);
        let host = read(&chased(&mut r, "tohost.local.test", None));
        assert_eq!(host.answer[1], "host.local 3600 A 192.0.2.80");

        let out = chased(&mut r, "OUT.local.test", Some(1232));
        let m = domain::base::Message::from_octets(out.as_slice()).unwrap();
        let q = m.first_question().unwrap();
        assert_eq!(
            q.qname().to_string(),
            "OUT.local.test",
            "the client's question"
        );
        let out = read(&out);
        assert_eq!(
            out.answer,
            [
                "out.local.test 300 CNAME web.example.com.",
                "web.example.com 300 A 192.0.2.3"
            ]
        );
        assert!(!out.aa && out.ra && out.opt.is_some() && out.id == 0xABCD);
        let far = read(&chased(&mut r, "far.local.test", None));
        assert_eq!(far.answer.len(), 3, "{far:?}");

        let gone = read(&chased(&mut r, "gone.local.test", None));
        assert_eq!(gone.rcode, Rcode::NXDOMAIN);
        assert_eq!(gone.answer, ["gone.local.test 300 CNAME nope.example.com."]);
        assert!(
            gone.authority[0].starts_with("example.com 60 SOA"),
            "{gone:?}"
        );

        // Too big for the client's 512 bytes: TC, and all of it over TCP.
        let big = read(&chased_via(
            &mut r,
            "big.local.test",
            Rtype::TXT,
            None,
            Via::Udp,
        ));
        assert!(big.tc && big.answer.is_empty(), "{big:?}");
        let big = read(&chased_via(
            &mut r,
            "big.local.test",
            Rtype::TXT,
            None,
            Via::Tcp,
        ));
        assert_eq!(big.answer.len(), 42, "the CNAME and 41 TXT: {big:?}");

        // Without -r, the chain stops at the zone's edge, as an authoritative server's does.
        let mut r = chaser();
        r.recursion = false;
        let edge = read(&chased(&mut r, "cross.local.test", None));
        assert_eq!(edge.answer.len(), 2, "{edge:?}");
    }

    /// The question's token from `a`, which must be just the opening of a UDP port of
    /// `family`.
    fn open_of(a: &[Action], family: Family) -> u64 {
        match a {
            [Action::OpenUdp { token, family: f }] if *f == family => *token,
            other => panic!("{other:?}"),
        }
    }

    /// A question's UDP port of one family in, its answer out.
    fn send_of(a: &[Action]) -> (PortId, SocketAddr) {
        match a {
            [Action::Send { port, to, .. }, Action::Arm { .. }] => (*port, *to),
            other => panic!("{other:?}"),
        }
    }

    /// resolv.conf naming an IPv6 server before an IPv4 one (a router's of each, common):
    /// each is asked from a port of its own family, the second opened when its first try is
    /// due, and each port is used again for its family's next try; an answer counts only on
    /// the port its server was asked from. Before, the one port was the first server's
    /// family: the IPv4 server's answer came back to it from `[::ffff:127.0.0.1]` and was
    /// ignored, and the other way round an IPv6 server was never asked, so a live server of
    /// the other family ended in SERVFAIL after 4 s.
    #[test]
    fn servers_of_both_families_are_asked_each_from_a_port_of_its_family() {
        let mut f = Forwarder::new(conf(&["[::1]:5301", "127.0.0.1:5302"]));
        let a = f.start(req("web.example.com", Rtype::A), client());
        let token = open_of(&a, Family::V6);
        assert_eq!(Family::V6.any(), "[::]:0".parse().unwrap());
        let (p6, to) = send_of(&f.opened(token, Family::V6, port(6)));
        assert_eq!((p6, to), (port(6), "[::1]:5301".parse().unwrap()));
        let a = f.timed_out(token, 1);
        assert_eq!(
            open_of(&a, Family::V4),
            token,
            "the IPv4 try waits for its port: {a:?}"
        );
        let a = f.opened(token, Family::V4, port(4));
        let [
            Action::Send {
                port: p4,
                bytes,
                to,
            },
            Action::Arm { step: 2, .. },
        ] = a.as_slice()
        else {
            panic!("{a:?}")
        };
        assert_eq!((*p4, *to), (port(4), "127.0.0.1:5302".parse().unwrap()));
        let sent = bytes.clone();
        // The second round: each family's port again, none opened anew.
        assert_eq!(
            send_of(&f.timed_out(token, 2)),
            (port(6), "[::1]:5301".parse().unwrap())
        );
        let answer = upstream_answer(&sent);
        let v4: SocketAddr = "127.0.0.1:5302".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5302".parse().unwrap();
        assert!(
            f.datagram(token, Family::V6, v4, &answer).is_empty(),
            "not the port it was asked from"
        );
        assert!(
            f.datagram(token, Family::V6, mapped, &answer).is_empty(),
            "a mapped address is not the server listed"
        );
        let a = f.datagram(token, Family::V4, v4, &answer);
        let [
            Action::Close(one),
            Action::Close(two),
            Action::Reply { bytes, .. },
            Action::Keep { .. },
        ] = a.as_slice()
        else {
            panic!("{a:?}")
        };
        assert_eq!((*one, *two), (port(4), port(6)), "both ports closed");
        assert_eq!(read(bytes).answer, ["web.example.com 300 A 192.0.2.3"]);
        assert_eq!(f.pending(), 0);
    }

    /// A host without IPv6: the IPv6 port cannot be opened, so each try to the IPv6 server
    /// fails at once and the next try (the IPv4 server) goes out instead, its port opened
    /// then; no IPv6 port is asked for again. The question ends at the deadline of its tries
    /// like any other, and is remembered as a failure. With only IPv6 servers, SERVFAIL at
    /// once, not remembered (nothing was waited for).
    #[test]
    fn a_family_without_a_port_fails_its_tries_at_once() {
        let mut f = Forwarder::new(conf(&["[::1]:5301", "127.0.0.1:5302"]));
        let a = f.start(req("web.example.com", Rtype::A), client());
        let token = open_of(&a, Family::V6);
        let a = f.open_failed(token, Family::V6);
        assert_eq!(open_of(&a, Family::V4), token, "{a:?}");
        let a = f.opened(token, Family::V4, port(4));
        let [Action::Send { to, .. }, Action::Arm { step: 2, .. }] = a.as_slice() else {
            panic!("{a:?}")
        };
        assert_eq!(to.port(), 5302);
        // Try 3 (IPv6) fails at once: try 4 (IPv4) goes out in its place.
        let a = f.timed_out(token, 2);
        let [Action::Send { to, .. }, Action::Arm { step: 4, .. }] = a.as_slice() else {
            panic!("{a:?}")
        };
        assert_eq!(to.port(), 5302);
        let a = f.timed_out(token, 4);
        let [
            Action::Close(_),
            Action::Reply { bytes, .. },
            Action::Failed { .. },
        ] = a.as_slice()
        else {
            panic!("{a:?}")
        };
        assert_eq!(read(bytes).rcode, Rcode::SERVFAIL);
        assert_eq!(f.pending(), 0);

        // The last try's family has no port: the server asked before it has the last
        // interval still, a timer of its own.
        let mut f = Forwarder::new(conf(&["127.0.0.1:5301", "[::1]:5302"]));
        let (token, _, first) = started(&mut f);
        let a = f.timed_out(token, 1);
        assert!(matches!(a.as_slice(), [Action::OpenUdp { .. }]), "{a:?}");
        let a = f.open_failed(token, Family::V6);
        let [Action::Send { to, .. }, Action::Arm { step: 3, .. }] = a.as_slice() else {
            panic!("{a:?}")
        };
        assert_eq!(*to, first);
        let a = f.timed_out(token, 3);
        assert!(
            matches!(a.as_slice(), [Action::Arm { step: 4, after, .. }] if *after == Duration::from_secs(1)),
            "{a:?}"
        );
        let a = f.timed_out(token, 4);
        assert!(
            matches!(
                a.as_slice(),
                [_, Action::Reply { .. }, Action::Failed { .. }]
            ),
            "{a:?}"
        );

        let mut f = Forwarder::new(conf(&["[::1]:5301", "[::1]:5302"]));
        let a = f.start(req("web.example.com", Rtype::A), client());
        let token = open_of(&a, Family::V6);
        let a = f.open_failed(token, Family::V6);
        let [Action::Reply { bytes, .. }] = a.as_slice() else {
            panic!("{a:?}")
        };
        assert_eq!(read(bytes).rcode, Rcode::SERVFAIL);
        assert_eq!(f.pending(), 0);
    }

    /// A try that cannot leave its port (IPv6 switched off: EADDRNOTAVAIL; no route) fails
    /// that server at once, and the next try goes out, as glibc moves on when it cannot
    /// connect its socket to a server; its timer is stale. Before, the try waited out its
    /// interval as if sent. Once every try is out, the servers asked before still have
    /// until the deadline: a late answer counts.
    #[test]
    fn a_try_that_cannot_leave_fails_at_once() {
        let mut f = Forwarder::new(conf(&["127.0.0.1:5301", "[::1]:5302"]));
        let (token, sent, first) = started(&mut f);
        let a = f.timed_out(token, 1);
        assert_eq!(open_of(&a, Family::V6), token, "{a:?}");
        let six: SocketAddr = "[::1]:5302".parse().unwrap();
        assert_eq!(
            send_of(&f.opened(token, Family::V6, port(6))),
            (port(6), six)
        );
        assert!(
            f.send_failed(token, "[::1]:5399".parse().unwrap())
                .is_empty(),
            "not a server asked"
        );
        // Try 3 at once: the first server again.
        assert_eq!(send_of(&f.send_failed(token, six)), (port(1), first));
        assert!(f.timed_out(token, 2).is_empty(), "stale");
        // Try 4 cannot leave either: every try is out, the first server may still answer
        // until the deadline.
        assert_eq!(send_of(&f.timed_out(token, 3)), (port(6), six));
        assert!(
            f.send_failed(token, six).is_empty(),
            "no SERVFAIL yet: try 4's timer is the deadline"
        );
        let a = f.datagram(token, Family::V4, first, &upstream_answer(&sent));
        assert!(
            matches!(
                a.as_slice(),
                [_, _, Action::Reply { .. }, Action::Keep { .. }]
            ),
            "{a:?}"
        );
        assert!(f.timed_out(token, 4).is_empty());
    }

    /// A failure is remembered for `FAILURE_MEMORY`, by key, and at most `MAX_FAILURES` of
    /// them, the oldest dropped first.
    #[test]
    fn failures_are_remembered_a_second_and_bounded() {
        let mut m = Failures::default();
        let key = |i: usize| Cache::key(&req(&format!("n{i}.example.com"), Rtype::A));
        let t0 = Instant::now();
        m.remember(key(0), t0);
        assert!(m.failed(&key(0), t0 + FAILURE_MEMORY - Duration::from_millis(1)));
        assert!(!m.failed(&key(1), t0), "another question");
        let aaaa = Cache::key(&req("n0.example.com", Rtype::AAAA));
        assert!(!m.failed(&aaaa, t0), "another type");
        let mut bits = key(0);
        bits.3 = 1;
        assert!(!m.failed(&bits, t0), "other DO/CD bits");
        assert!(
            !m.failed(&key(0), t0 + FAILURE_MEMORY),
            "forgotten after a second"
        );
        assert!(m.is_empty());

        for i in 0..=MAX_FAILURES {
            m.remember(key(i), t0);
        }
        assert_eq!(m.len(), MAX_FAILURES);
        assert!(!m.failed(&key(0), t0), "the oldest went first");
        assert!(m.failed(&key(1), t0) && m.failed(&key(MAX_FAILURES), t0));
        // Remembered again later: the first position's expiry leaves the later one.
        m.clear();
        m.remember(key(0), t0);
        m.remember(key(0), t0 + Duration::from_millis(500));
        assert!(m.failed(&key(0), t0 + Duration::from_millis(1200)));
        assert!(!m.failed(&key(0), t0 + Duration::from_millis(1500)));
    }
}
