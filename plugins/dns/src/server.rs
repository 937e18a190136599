//! The dns plugin on the reactor: the UDP and TCP protocols, the forwarder's ports and
//! connections, secondary zone refreshes, and reloading on SIGHUP.
//!
//! One [`Server`] holds the state every protocol shares (the responder with its zones, the
//! forwarder, the cache). Protocols, timers and client ports hold a `Weak` to it and borrow
//! it for the length of one callback; the reactor never runs two callbacks at once, and
//! everything the server asks of the reactor is a queued command, so no borrow overlaps.

use std::any::Any;
use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use domain::base::Name;
use domain::base::iana::Rtype;
use twistrs_core::line::InputBuffer;
use twistrs_core::{
    Address, ClientFactory, DatagramProtocol, DatagramTransport, DelayedCall, Factory, Handle,
    PortId, Protocol, Reason, Transport,
};

use crate::axfr::ZoneCopy;
use crate::cache::Cache;
use crate::forward::{Action, Client, Failures, Family, Forwarder, ResolvConf};
use crate::hosts::Hosts;
use crate::lookup::Store;
use crate::responder::{AxfrAllow, Forward, Reply, Responder, Via};
use crate::secondary::{Outcome, SecondarySpec, Step, Transfer};
use crate::stream::{self, Frame};
use crate::zone::{SoaTimers, Zone};
use crate::zonefile;

/// The longest query taken over TCP; a longer one closes the connection (queries are a
/// question and an OPT: 512 bytes is plenty, this leaves room for options).
pub const MAX_TCP_QUERY: usize = 4096;
/// Unsent answers above which a TCP client's pipelined queries wait (and reading stops):
/// one read of small queries for a large RRset would otherwise queue thousands of answers
/// (63 KB of queries held 108 MB for a client that never read).
const TCP_OUTPUT_MAX: usize = 256 * 1024;
/// Questions one TCP connection may have forwarded and not yet answered: further queries wait
/// (and reading stops) until answers come. Each answer is written when it comes, whatever the
/// output holds, so without it one read of some 1,800 queries for names whose answers are
/// large (a wildcard's 60 KB TXT set upstream, fetched over TCP) held every answer at once:
/// 18 MB for such a client that read nothing, up to the forwarder's 1,024 questions in
/// flight (64 MB). BIND serves 23 pipelined queries of a connection at once.
const MAX_FORWARDED: usize = 16;
/// `DnsStream`'s timer key for a query that has not arrived whole within `--timeout`.
const PARTIAL_KEY: u64 = 0;
/// `DnsStream`'s timer key for the transfer's deadline (`--transfer-timeout`).
const XFR_KEY: u64 = 1;
/// Unsent output below which a transfer served writes its next message: the reactor's
/// high-water mark, so a client that reads nothing holds this and one message (16 KiB) of
/// its transfer, not the whole zone.
const XFR_OUTPUT: usize = 64 * 1024;
/// How long a refresh may wait for the primary to connect or to send anything (the
/// overall limit, `--transfer-timeout`, is `Config::xfr_deadline`), and the retry while no
/// copy exists.
const XFR_IDLE: Duration = Duration::from_secs(30);
/// `Xfr`'s timer key for the overall deadline.
const XFR_DEADLINE_KEY: u64 = 1;
const FIRST_RETRY: Duration = Duration::from_secs(10);

/// What the command line asked for.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub zone_files: Vec<PathBuf>,
    pub hosts_file: Option<PathBuf>,
    pub secondaries: Vec<SecondarySpec>,
    /// `-r`: the resolv.conf to read (and re-read on SIGHUP).
    pub resolv_conf: Option<PathBuf>,
    pub cache: bool,
    pub cache_size: usize,
    pub verbose: u8,
    pub axfr: AxfrAllow,
    pub tcp_timeout: Duration,
    /// How long a whole zone transfer may take: a primary that trickles bytes is cut off.
    pub xfr_deadline: Duration,
}

struct Secondary {
    spec: SecondarySpec,
    zone: Option<Rc<Zone>>,
    busy: bool,
    last_ok: Option<Instant>,
    timer: Option<DelayedCall>,
}

/// The state the dns protocols share.
pub struct Server {
    pub responder: Responder,
    config: Config,
    forwarder: Option<Forwarder>,
    cache: Option<Cache>,
    /// Questions that ran out the forwarder's deadline lately (with or without `-c`).
    failures: Failures,
    /// Upstream servers (and, as `Family::any`, port families) whose failure to be asked was
    /// logged, with the kind of error: once each until a reload, not once a question.
    warned: std::collections::HashSet<(SocketAddr, std::io::ErrorKind)>,
    zones: Vec<Rc<Zone>>,
    hosts: Option<Rc<Hosts>>,
    secondaries: Vec<Secondary>,
    handle: Option<Handle>,
    me: Weak<RefCell<Server>>,
    stopped: bool,
    /// A reload is being parsed on a worker thread; another SIGHUP came meanwhile.
    reloading: bool,
    reload_again: bool,
}

/// What a reload read, on its worker thread.
struct Loaded {
    zones: Vec<Result<Zone, zonefile::LoadError>>,
    hosts: Option<Result<Hosts, String>>,
    resolv_conf: Option<Result<ResolvConf, String>>,
}

pub type Shared = Rc<RefCell<Server>>;

impl Server {
    /// Loads every file (the first error is the start-up's: exit 1) and builds the server.
    pub fn load(mut config: Config) -> Result<Shared, String> {
        let mut zones = Vec::new();
        for f in &config.zone_files {
            zones.push(Rc::new(zonefile::load(f).map_err(|e| e.to_string())?));
        }
        // Each file is read again on SIGHUP (zone files and their `$INCLUDE`s note
        // themselves as they are read), as the user privileges were dropped to.
        let hosts = match &config.hosts_file {
            Some(p) => {
                twistrs_core::reread::note_file(p);
                Some(Rc::new(Hosts::load(p)?))
            }
            None => None,
        };
        let forwarder = match &config.resolv_conf {
            Some(p) => {
                twistrs_core::reread::note_file(p);
                Some(Forwarder::new(ResolvConf::load(p)?))
            }
            None => None,
        };
        // A reload comes after the launcher's chdir to --rundir: it must read the files
        // loaded now, so their names are made absolute against the start directory (start-up
        // errors above name them as they were given).
        let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
        config.zone_files = config.zone_files.iter().map(abs).collect();
        config.hosts_file = config.hosts_file.as_ref().map(abs);
        config.resolv_conf = config.resolv_conf.as_ref().map(abs);
        let cache = config.cache.then(|| Cache::new(config.cache_size));
        let secondaries = config
            .secondaries
            .iter()
            .map(|spec| Secondary {
                spec: spec.clone(),
                zone: None,
                busy: false,
                last_ok: None,
                timer: None,
            })
            .collect();
        let mut responder = Responder::new(Store::default());
        responder.recursion = forwarder.is_some();
        responder.axfr = config.axfr.clone();
        responder.verbose = config.verbose;
        let server = Rc::new(RefCell::new(Server {
            responder,
            config,
            forwarder,
            cache,
            failures: Failures::default(),
            warned: Default::default(),
            zones,
            hosts,
            secondaries,
            handle: None,
            me: Weak::new(),
            stopped: false,
            reloading: false,
            reload_again: false,
        }));
        {
            let mut s = server.borrow_mut();
            s.me = Rc::downgrade(&server);
            s.rebuild();
        }
        Ok(server)
    }

    /// The zones, secondaries and hosts as one store for the responder.
    fn rebuild(&mut self) {
        let mut store = Store::default();
        for s in &self.secondaries {
            match &s.zone {
                Some(z) => store.add_zone(z.clone()),
                None => store.add_pending(&s.spec.apex),
            }
        }
        for z in &self.zones {
            store.add_zone(z.clone());
        }
        store.hosts = self.hosts.clone();
        self.responder.set_store(store);
    }

    /// The service started: refresh the secondaries, reload on SIGHUP.
    pub fn start(&mut self, handle: &Handle) {
        self.handle = Some(handle.clone());
        // Registered now, so a scrape shows them at zero.
        crate::metrics::with(|_| {});
        for z in &self.zones {
            log::info!(target: "twistrs.dns", "Serving zone {} ({} names, serial {})",
                z.apex, z.len(), z.soa_timers().map_or(0, |t| t.serial));
        }
        for i in 0..self.secondaries.len() {
            self.refresh(i);
        }
        let me = self.me.clone();
        handle.on_reopen(Box::new(move || {
            if let Some(s) = me.upgrade() {
                s.borrow_mut().reload();
            }
        }));
    }

    pub fn stop(&mut self) {
        self.stopped = true;
        for s in &mut self.secondaries {
            if let Some(t) = s.timer.take() {
                t.cancel();
            }
        }
    }

    /// SIGHUP: every zone file, the hosts file and resolv.conf again, read and parsed on a
    /// worker thread so that answers go on meanwhile (a large zone takes seconds); the result
    /// is swapped in on the reactor thread. A SIGHUP during a reload asks for one more after it.
    pub fn reload(&mut self) {
        let Some(h) = self.handle.clone() else { return };
        if self.reloading {
            self.reload_again = true;
            return;
        }
        self.reloading = true;
        let zone_files = self.config.zone_files.clone();
        let hosts_file = self.config.hosts_file.clone();
        let resolv_conf = self
            .forwarder
            .is_some()
            .then(|| self.config.resolv_conf.clone())
            .flatten();
        let me = self.me.clone();
        h.defer_to_thread_abandonable(move || {
            Ok(Loaded {
                zones: zone_files.iter().map(|f| zonefile::load(f)).collect(),
                hosts: hosts_file.map(|p| Hosts::load(&p)),
                resolv_conf: resolv_conf.map(|p| ResolvConf::load(&p)),
            })
        })
        .consume(move |r| {
            if let Some(s) = me.upgrade() {
                s.borrow_mut().reloaded(r);
            }
        });
    }

    /// A reload's files, parsed: one that failed keeps what was loaded before, and the log
    /// says why.
    fn reloaded(&mut self, r: Result<Loaded, twistrs_core::Failure>) {
        self.reloading = false;
        let loaded = match r {
            Ok(l) => l,
            Err(e) => {
                log::error!(target: "twistrs.dns", "The reload failed: {e}; keeping what was loaded before");
                return self.reload_if_asked();
            }
        };
        if self.stopped {
            return;
        }
        let mut zones = Vec::with_capacity(self.zones.len());
        let mut failed = 0;
        for (i, z) in loaded.zones.into_iter().enumerate() {
            match z {
                Ok(z) => {
                    crate::metrics::with(|m| m.reloads_ok.inc());
                    zones.push(Rc::new(z));
                }
                Err(e) => {
                    crate::metrics::with(|m| m.reloads_failed.inc());
                    failed += 1;
                    log::error!(target: "twistrs.dns", "{e}; keeping the zone loaded before");
                    zones.extend(self.zones.get(i).cloned());
                }
            }
        }
        self.zones = zones;
        match loaded.hosts {
            Some(Ok(h)) => {
                crate::metrics::with(|m| m.reloads_ok.inc());
                self.hosts = Some(Rc::new(h));
            }
            Some(Err(e)) => {
                crate::metrics::with(|m| m.reloads_failed.inc());
                failed += 1;
                log::error!(target: "twistrs.dns", "{e}; keeping the hosts loaded before");
            }
            None => {}
        }
        match (loaded.resolv_conf, &mut self.forwarder) {
            (Some(Ok(c)), Some(f)) => {
                f.conf = c;
                // Servers read before may be gone, or back; their failures say nothing of
                // these.
                self.failures.clear();
                self.warned.clear();
            }
            (Some(Err(e)), _) => {
                log::error!(target: "twistrs.dns", "{e}; keeping the servers read before")
            }
            _ => {}
        }
        self.rebuild();
        log::info!(target: "twistrs.dns", "Reloaded {} zone file(s){}", self.config.zone_files.len(),
            if failed > 0 { format!(", {failed} kept from before") } else { String::new() });
        self.reload_if_asked();
    }

    fn reload_if_asked(&mut self) {
        if std::mem::take(&mut self.reload_again) && !self.stopped {
            self.reload();
        }
    }

    /// One message from a client.
    fn query(&mut self, msg: &[u8], via: Via, peer: SocketAddr, client: Client) -> Option<Reply> {
        crate::metrics::with(|m| m.query(via));
        match self.responder.respond(msg, via, peer.ip()) {
            Reply::Forward(req) => {
                self.forward(req, client);
                None
            }
            other => {
                crate::metrics::with(|m| match &other {
                    Reply::Send(b) => {
                        m.local(b);
                        m.rcode(b);
                    }
                    Reply::Transfer(_) => m.axfr_served.inc(),
                    Reply::Drop | Reply::Forward(_) => {}
                });
                Some(other)
            }
        }
    }

    fn forward(&mut self, req: Forward, client: Client) {
        let now = self.handle.as_ref().map_or_else(Instant::now, Handle::now);
        // Built once: the cache, the failures remembered and the forwarder all key by it.
        let key = Cache::key(&req);
        if let Some(c) = self.cache.as_mut() {
            let hit = c.answer_by(&key, &req, now);
            let len = c.len();
            crate::metrics::with(|m| {
                m.cache_entries.set(len as i64);
                match &hit {
                    Some(b) => {
                        m.from_cache.inc();
                        m.rcode(b);
                    }
                    None => m.cache_misses.inc(),
                }
            });
            if let Some(bytes) = hit {
                self.log_answer(&bytes, client, "from the cache");
                return self.deliver(client, bytes);
            }
        }
        if self.forwarder.is_some() && self.failures.failed(&key, now) {
            // Ran out the deadline within the last second: SERVFAIL again, without asking.
            let bytes = crate::forward::servfail_bytes(&req);
            crate::metrics::with(|m| {
                m.forwarded.inc();
                m.rcode(&bytes);
            });
            self.log_answer(&bytes, client, "a failure remembered");
            return self.deliver(client, bytes);
        }
        match &mut self.forwarder {
            Some(f) => {
                let actions = f.start_by(key, req, client);
                self.run(actions);
            }
            // Not asked without one (`responder.recursion`); were it, the client still gets
            // its one answer, which a TCP connection counts on.
            None => self.deliver(client, crate::forward::servfail_bytes(&req)),
        }
    }

    /// Logs that a server (or, as `Family::any`, a port family) could not be asked, the
    /// first time for that error.
    fn warn_once(
        &mut self,
        what: SocketAddr,
        error: &std::io::Error,
        line: impl FnOnce() -> String,
    ) {
        if self.warned.insert((what, error.kind())) {
            log::warn!(target: "twistrs.dns", "{}", line());
        }
    }

    /// `-v`: a forwarded question's line, once its answer is known.
    fn log_answer(&self, bytes: &[u8], client: Client, how: &str) {
        if self.config.verbose > 0 {
            log::info!(target: "twistrs.dns", "{}", answer_line(bytes, client.peer(), how));
        }
    }

    fn deliver(&self, client: Client, bytes: Vec<u8>) {
        let Some(h) = &self.handle else { return };
        match client {
            Client::Udp { port, addr } => h.send_datagram(port, bytes, addr),
            Client::Tcp { conn, .. } => h.notify(conn, Box::new(Answer(bytes))),
        }
    }

    fn with_forwarder(&mut self, f: impl FnOnce(&mut Forwarder) -> Vec<Action>) {
        if let Some(fw) = &mut self.forwarder {
            let actions = f(fw);
            self.run(actions);
        }
    }

    /// Carries out what the forwarder asks.
    fn run(&mut self, actions: Vec<Action>) {
        let Some(h) = self.handle.clone() else { return };
        for a in actions {
            match a {
                Action::OpenUdp { token, family } => h.open_udp(
                    family.any(),
                    Box::new(UpstreamPort {
                        token,
                        family,
                        server: self.me.clone(),
                    }),
                ),
                Action::Send { port, bytes, to } => h.send_datagram(port, bytes, to),
                Action::Arm { token, step, after } => {
                    let me = self.me.clone();
                    h.call_later(after, move || {
                        if let Some(s) = me.upgrade() {
                            s.borrow_mut().with_forwarder(|f| {
                                let actions = f.timed_out(token, step);
                                // Nothing to do: the answer came, or the question moved on.
                                if !actions.is_empty() {
                                    crate::metrics::with(|m| m.forward_timeouts.inc());
                                }
                                actions
                            });
                        }
                    });
                }
                Action::Connect {
                    token,
                    to,
                    bytes,
                    timeout,
                } => h.connect_tcp(
                    to,
                    Box::new(UpstreamTcpFactory {
                        token,
                        query: Some(bytes),
                        timeout,
                        server: self.me.clone(),
                    }),
                    timeout,
                ),
                Action::Close(port) => h.close_port(port),
                Action::Reply { client, bytes } => {
                    crate::metrics::with(|m| {
                        m.forwarded.inc();
                        m.rcode(&bytes);
                    });
                    self.log_answer(&bytes, client, "forwarded");
                    self.deliver(client, bytes)
                }
                Action::Keep { req, answer } => {
                    let now = h.now();
                    if let Some(c) = &mut self.cache {
                        c.store(&req, answer, now);
                        let len = c.len() as i64;
                        crate::metrics::with(|m| m.cache_entries.set(len));
                    }
                }
                Action::Failed { key } => self.failures.remember(key, h.now()),
            }
        }
    }

    /// Starts a refresh of secondary `i` (one at a time per zone).
    fn refresh(&mut self, i: usize) {
        let Some(h) = self.handle.clone() else { return };
        let Some(s) = self.secondaries.get_mut(i) else {
            return;
        };
        if s.busy || self.stopped {
            return;
        }
        s.busy = true;
        let have = s
            .zone
            .as_ref()
            .and_then(|z| z.soa_timers())
            .map(|t| t.serial);
        let deadline = self.config.xfr_deadline;
        let factory = XfrFactory {
            index: i,
            transfer: Some(Transfer::new(s.spec.apex.clone(), have)),
            deadline,
            started: Instant::now(),
            server: self.me.clone(),
        };
        h.connect_tcp(s.spec.primary, Box::new(factory), XFR_IDLE.min(deadline));
    }

    /// A refresh ended: install a new copy, and set the next refresh (the SOA's refresh
    /// after a success, its retry after a failure; a copy older than its expire is dropped).
    fn transfer_done(&mut self, i: usize, outcome: Outcome) {
        let now = self.handle.as_ref().map_or_else(Instant::now, Handle::now);
        let Some(s) = self.secondaries.get_mut(i) else {
            return;
        };
        s.busy = false;
        let mut changed = false;
        match outcome {
            Outcome::New(z, outside) => {
                crate::metrics::with(|m| m.transfers_in_ok.inc());
                if let Some(first) = &outside.first {
                    let n = outside.count;
                    log::warn!(target: "twistrs.dns",
                        "Transfer of zone {} from {}: ignored {n} record{} outside the zone (the first at {first})",
                        s.spec.apex, s.spec.primary, if n == 1 { "" } else { "s" });
                }
                log::info!(target: "twistrs.dns", "Transferred zone {} serial {} from {} ({} names)",
                    s.spec.apex, z.soa_timers().map_or(0, |t| t.serial), s.spec.primary, z.len());
                s.zone = Some(Rc::new(z));
                s.last_ok = Some(now);
                changed = true;
            }
            Outcome::UpToDate(serial) => {
                crate::metrics::with(|m| m.transfers_in_ok.inc());
                log::debug!(target: "twistrs.dns", "Zone {} is up to date (serial {serial})", s.spec.apex);
                s.last_ok = Some(now);
            }
            Outcome::Failed(why) => {
                crate::metrics::with(|m| m.transfers_in_failed.inc());
                log::warn!(target: "twistrs.dns", "Transfer of zone {} from {} failed: {why}",
                    s.spec.apex, s.spec.primary);
                let timers = s.zone.as_ref().and_then(|z| z.soa_timers());
                if let (Some(t), Some(ok)) = (timers, s.last_ok)
                    && now.saturating_duration_since(ok) >= Duration::from_secs(t.expire.into())
                {
                    log::error!(target: "twistrs.dns",
                        "Zone {} expired: no refresh from {} for {} s; answering SERVFAIL",
                        s.spec.apex, s.spec.primary, t.expire);
                    s.zone = None;
                    changed = true;
                }
            }
        }
        let success = s.last_ok == Some(now);
        let delay = match s.zone.as_ref().and_then(|z| z.soa_timers()) {
            Some(SoaTimers { refresh, retry, .. }) => Duration::from_secs(
                u64::from(if success { refresh } else { retry }).clamp(1, 86_400),
            ),
            None => FIRST_RETRY,
        };
        if changed {
            self.rebuild();
        }
        self.schedule(i, delay);
    }

    fn schedule(&mut self, i: usize, delay: Duration) {
        let Some(h) = self.handle.clone() else { return };
        if self.stopped {
            return;
        }
        let me = self.me.clone();
        let timer = h.call_later(delay, move || {
            if let Some(s) = me.upgrade() {
                s.borrow_mut().refresh(i);
            }
        });
        if let Some(s) = self.secondaries.get_mut(i)
            && let Some(old) = s.timer.replace(timer)
        {
            old.cancel();
        }
    }
}

/// The log line of a forwarded question (`how`: `from the cache`, or `forwarded` when the
/// upstream answered or every try failed), as the responder's lines for the zones' answers
/// give it: `NAME TYPE from PEER: HOW, RCODE, N answers`. The name and type are the
/// answer's question, which is the client's.
fn answer_line(bytes: &[u8], peer: IpAddr, how: &str) -> String {
    let n = crate::name::name_len(bytes, 12).unwrap_or(0);
    let name = bytes
        .get(12..12 + n)
        .and_then(|n| Name::from_slice(n).ok())
        .map_or_else(|| "?".into(), |n| n.to_string());
    let qtype = bytes
        .get(12 + n..12 + n + 2)
        .map_or(0, |t| u16::from_be_bytes([t[0], t[1]]));
    format!(
        "{name} {} from {peer}: {how}, {}",
        Rtype::from_int(qtype),
        crate::responder::summary(bytes)
    )
}

/// A forwarded answer for a TCP client, through `Handle::notify`.
struct Answer(Vec<u8>);

/// The UDP listener (twistd's `DNSDatagramProtocol`).
pub struct DnsDatagram {
    pub server: Weak<RefCell<Server>>,
}

impl DatagramProtocol for DnsDatagram {
    fn name(&self) -> &'static str {
        "DNSDatagramProtocol"
    }

    fn datagram_received(&mut self, t: &mut DatagramTransport<'_>, data: &[u8], from: SocketAddr) {
        let Some(s) = self.server.upgrade() else {
            return;
        };
        let client = Client::Udp {
            port: t.port(),
            addr: from,
        };
        let reply = s.borrow_mut().query(data, Via::Udp, from, client);
        if let Some(Reply::Send(b)) = reply {
            t.write(&b, from);
        }
    }
}

/// The TCP listeners' factory (twistd's `DNSServerFactory`).
pub struct DnsFactory {
    pub server: Weak<RefCell<Server>>,
    pub max: Option<usize>,
    pub timeout: Duration,
    /// `--transfer-timeout`, for the AXFRs served.
    pub xfr_deadline: Duration,
}

impl Factory for DnsFactory {
    fn name(&self) -> &'static str {
        "DNSServerFactory"
    }

    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(DnsStream::new(
            self.server.clone(),
            self.timeout,
            self.xfr_deadline,
        )))
    }

    fn max_connections(&self) -> Option<usize> {
        self.max
    }
}

/// A transfer being sent on a connection.
struct Sending {
    /// The messages still to make; `None` once all are written.
    copy: Option<ZoneCopy>,
    /// Where the transfer ends in the output, once written whole: it is done once the bytes
    /// sent reach it.
    end: u64,
    /// `--transfer-timeout`, from the query: a client that reads a byte now and then is cut
    /// off.
    deadline: DelayedCall,
}

/// One TCP client: length-prefixed queries in, answers out, in any order.
struct DnsStream {
    server: Weak<RefCell<Server>>,
    input: InputBuffer,
    timeout: Duration,
    /// How long an AXFR served may take to leave: the idle timeout alone lets a client that
    /// reads a byte now and then hold the zone (the version it is sent, which a reload may
    /// have replaced) and the connection for ever.
    xfr_deadline: Duration,
    /// The transfer being sent, one per connection.
    xfr: Option<Sending>,
    /// Queries wait, and reading stops, while a transfer is being sent (its messages are
    /// made as the output drains, and a client pipelining transfers would otherwise have a
    /// zone's copy made for each at once), or while the answers waiting to leave pass
    /// `TCP_OUTPUT_MAX`.
    held: bool,
    /// The deadline of a query begun but not whole: the idle timeout alone lets a client
    /// that sends a byte now and then hold a connection (and, with enough of them, every
    /// one `--max-connections` allows) for hours.
    partial: Option<DelayedCall>,
    /// A graceful stop (a stop, or the old process of a restart) came: the connection closes
    /// once no query is left to answer.
    stopping: bool,
    /// Queries forwarded upstream whose answers (or SERVFAILs) have not come back: each
    /// comes once, through `notified`. At most [`MAX_FORWARDED`].
    forwarded: usize,
    /// The client half-closed: the connection closes once the queries sent before it are
    /// answered (the forwarded ones too, whose answers come later).
    eof: bool,
}

impl DnsStream {
    fn new(server: Weak<RefCell<Server>>, timeout: Duration, xfr_deadline: Duration) -> Self {
        DnsStream {
            server,
            input: InputBuffer::new(),
            timeout,
            xfr_deadline,
            xfr: None,
            held: false,
            partial: None,
            stopping: false,
            forwarded: 0,
            eof: false,
        }
    }

    /// Queries must wait: a transfer still leaving, the answers waiting to leave, or the
    /// questions forwarded and not yet answered.
    fn must_wait(&self, t: &Transport<'_>) -> bool {
        self.xfr.is_some() || t.buffered() >= TCP_OUTPUT_MAX || self.forwarded >= MAX_FORWARDED
    }

    /// Takes the queries held back, if nothing makes them wait any more.
    fn resume(&mut self, t: &mut Transport<'_>) {
        if self.held {
            self.send_xfr(t);
            if !self.must_wait(t) {
                self.held = false;
                t.resume_producing();
                self.serve_input(t);
            }
        }
        self.close_if_answered(t);
    }

    /// After the client's EOF, closes once every query it sent is answered: none waits in
    /// the input (a partial one never will be whole) and no forwarded answer is to come.
    fn close_if_answered(&mut self, t: &mut Transport<'_>) {
        if self.eof && !self.held && self.forwarded == 0 {
            t.lose_connection();
        }
    }
    fn cancel_partial(&mut self) {
        if let Some(c) = self.partial.take() {
            c.cancel();
        }
    }

    /// Writes the transfer's next messages while the output holds less than `XFR_OUTPUT`
    /// (the rest wait for `resume_producing`), and forgets the transfer once it has all left.
    fn send_xfr(&mut self, t: &mut Transport<'_>) {
        let Some(x) = &mut self.xfr else { return };
        while let Some(copy) = &mut x.copy {
            if t.buffered() >= XFR_OUTPUT {
                return;
            }
            match copy.next() {
                Some(m) => t.write(&stream::frame(&m)),
                None => {
                    // Done once the bytes sent reach its end.
                    x.copy = None;
                    x.end = t.bytes_written();
                }
            }
        }
        if t.bytes_sent() >= x.end {
            x.deadline.cancel();
            self.xfr = None;
        }
    }

    /// Answers the queries waiting in the input, in order, until one is a transfer whose copy
    /// has not left yet, or the answers not yet sent pass `TCP_OUTPUT_MAX`: then the rest
    /// wait (and reading stops) until `resume_producing`.
    fn serve_input(&mut self, t: &mut Transport<'_>) {
        let Some(peer) = t.peer().socket_addr() else {
            return;
        };
        let Some(s) = self.server.upgrade() else {
            return;
        };
        loop {
            self.send_xfr(t);
            if self.must_wait(t) {
                if !self.held {
                    self.held = true;
                    t.pause_producing();
                }
                return;
            }
            match stream::next(&mut self.input, MAX_TCP_QUERY) {
                Frame::Partial => {
                    // What is left began a query: it must be whole within `--timeout` of now.
                    if self.input.is_empty() {
                        self.cancel_partial();
                        if self.stopping {
                            t.lose_connection();
                        }
                    } else if self.partial.is_none() {
                        self.partial = Some(t.call_later(self.timeout, PARTIAL_KEY));
                    }
                    return;
                }
                Frame::TooLong(n) => {
                    log::info!(target: "twistrs.dns", "A {n}-byte message from {peer} over TCP: closing");
                    return t.lose_connection();
                }
                Frame::Message(m) => {
                    self.cancel_partial();
                    match s.borrow_mut().query(
                        &m,
                        Via::Tcp,
                        peer,
                        Client::Tcp {
                            conn: t.id(),
                            peer: peer.ip(),
                        },
                    ) {
                        Some(Reply::Send(b)) => t.write(&stream::frame(&b)),
                        // Sent from the top of the loop, as the output has room; queries wait.
                        Some(Reply::Transfer(copy)) => {
                            self.xfr = Some(Sending {
                                copy: Some(copy),
                                end: u64::MAX,
                                deadline: t.call_later(self.xfr_deadline, XFR_KEY),
                            });
                        }
                        // No header to answer (under 12 bytes) or a response: over UDP
                        // such datagrams go unlogged (a spoofed flood would fill the log);
                        // a TCP peer is who it says, so the line costs it a connection.
                        Some(Reply::Drop) => {
                            log::info!(target: "twistrs.dns",
                                "A {}-byte message from {peer} over TCP is not a query \
                                 (no header, or a response): closing", m.len());
                            return t.lose_connection();
                        }
                        // Forwarded: its answer comes through `notified`.
                        None => self.forwarded += 1,
                        Some(Reply::Forward(_)) => {}
                    }
                }
            }
        }
    }
}

impl Protocol for DnsStream {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.set_timeout(Some(self.timeout));
        // For `resume_producing`, called as the output drains: a held transfer's progress.
        t.register_producer();
    }

    fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
        self.input.feed(data);
        self.serve_input(t);
    }

    fn resume_producing(&mut self, t: &mut Transport<'_>) {
        self.resume(t);
    }

    /// The client half-closed: the answers to what it sent before still go out, forwarded
    /// ones included (the default closed once the output had left, dropping answers still
    /// upstream).
    fn read_eof(&mut self, t: &mut Transport<'_>) {
        self.eof = true;
        self.cancel_partial();
        self.close_if_answered(t);
    }

    fn notified(&mut self, t: &mut Transport<'_>, msg: Box<dyn Any>) {
        if let Ok(a) = msg.downcast::<Answer>() {
            t.write(&stream::frame(&a.0));
            self.forwarded = self.forwarded.saturating_sub(1);
            self.resume(t);
            if self.stopping && self.forwarded == 0 && self.input.is_empty() && self.xfr.is_none() {
                t.lose_connection();
            }
        }
    }

    /// A query begun `--timeout` ago and still not whole, or the transfer's deadline.
    fn timer_fired(&mut self, t: &mut Transport<'_>, key: u64) {
        if key == PARTIAL_KEY {
            self.partial = None;
            if self.held {
                // The input waits for our output to leave, not for the client.
                self.partial = Some(t.call_later(self.timeout, PARTIAL_KEY));
                return;
            }
            log::info!(
                target: "twistrs.dns",
                "A query from {} over TCP not whole after {} s (--timeout): closing",
                t.peer(),
                self.timeout.as_secs()
            );
            return t.lose_connection();
        }
        // The deadline is cancelled once the transfer has left; it may have left since the
        // last callback.
        self.send_xfr(t);
        if key == XFR_KEY && self.xfr.is_some() {
            log::info!(
                target: "twistrs.dns",
                "AXFR to {} not sent after {} s (--transfer-timeout): closing",
                t.peer(),
                self.xfr_deadline.as_secs()
            );
            // A reset: the kernel's copy of the rest goes too.
            self.xfr = None;
            t.reset_connection();
        }
    }

    fn stop_requested(&mut self, t: &mut Transport<'_>) {
        // Between messages, a graceful stop closes at once; otherwise once the queries in
        // are answered, or when idle for a second. A connection that has had no answer yet
        // is not "between messages": it was accepted a moment ago (just before a restart's
        // old process stopped accepting, say) and its first query is on its way, or unread
        // in the socket, which a close now would answer with a reset.
        self.stopping = true;
        if self.input.is_empty()
            && t.bytes_written() > 0
            && self.xfr.is_none()
            && self.forwarded == 0
        {
            t.lose_connection();
        } else {
            t.set_timeout(Some(twistrs_core::STOP_GRACE));
        }
    }
}

/// A UDP port of one forwarded question, for its servers of one family.
struct UpstreamPort {
    token: u64,
    family: Family,
    server: Weak<RefCell<Server>>,
}

impl DatagramProtocol for UpstreamPort {
    fn name(&self) -> &'static str {
        "DNSDatagramProtocol"
    }

    fn port_opened(&mut self, t: &mut DatagramTransport<'_>) {
        let port: PortId = t.port();
        if let Some(s) = self.server.upgrade() {
            s.borrow_mut()
                .with_forwarder(|f| f.opened(self.token, self.family, port));
        }
    }

    fn open_failed(&mut self, error: &std::io::Error) {
        if let Some(s) = self.server.upgrade() {
            let mut s = s.borrow_mut();
            let any = self.family.any();
            s.warn_once(any, error, || {
                format!(
                    "Cannot open a port on {any} to forward questions: {error}; \
                     the servers of its family are skipped"
                )
            });
            s.with_forwarder(|f| f.open_failed(self.token, self.family));
        }
    }

    fn send_failed(&mut self, to: SocketAddr, error: &std::io::Error) {
        if let Some(s) = self.server.upgrade() {
            let mut s = s.borrow_mut();
            s.warn_once(to, error, || {
                format!("Cannot send a question to {to}: {error}; the next server is asked")
            });
            s.with_forwarder(|f| f.send_failed(self.token, to));
        }
    }

    fn datagram_received(&mut self, _t: &mut DatagramTransport<'_>, data: &[u8], from: SocketAddr) {
        if let Some(s) = self.server.upgrade() {
            s.borrow_mut()
                .with_forwarder(|f| f.datagram(self.token, self.family, from, data));
        }
    }
}

/// A forwarded question asked again over TCP after a truncated answer.
struct UpstreamTcpFactory {
    token: u64,
    query: Option<Vec<u8>>,
    timeout: Duration,
    server: Weak<RefCell<Server>>,
}

impl ClientFactory for UpstreamTcpFactory {
    fn name(&self) -> &'static str {
        "DNSClientFactory"
    }

    fn build_protocol(&mut self, _peer: &Address) -> Box<dyn Protocol> {
        Box::new(UpstreamTcp {
            token: self.token,
            query: self.query.take().unwrap_or_default(),
            timeout: self.timeout,
            input: InputBuffer::new(),
            done: false,
            server: self.server.clone(),
        })
    }

    fn client_connection_failed(&mut self, _reason: &Reason) {
        if let Some(s) = self.server.upgrade() {
            s.borrow_mut().with_forwarder(|f| f.tcp_failed(self.token));
        }
    }
}

struct UpstreamTcp {
    token: u64,
    query: Vec<u8>,
    timeout: Duration,
    input: InputBuffer,
    done: bool,
    server: Weak<RefCell<Server>>,
}

impl Protocol for UpstreamTcp {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.set_timeout(Some(self.timeout));
        t.write(&stream::frame(&self.query));
    }

    fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
        self.input.feed(data);
        if let Frame::Message(m) = stream::next(&mut self.input, u16::MAX as usize) {
            self.done = true;
            if let Some(s) = self.server.upgrade() {
                s.borrow_mut()
                    .with_forwarder(|f| f.tcp_answer(self.token, &m));
            }
            t.lose_connection();
        }
    }

    fn connection_lost(&mut self, _t: &mut Transport<'_>, _reason: &Reason) {
        if !self.done
            && let Some(s) = self.server.upgrade()
        {
            s.borrow_mut().with_forwarder(|f| f.tcp_failed(self.token));
        }
    }
}

/// A refresh of a secondary zone.
struct XfrFactory {
    index: usize,
    transfer: Option<Transfer>,
    deadline: Duration,
    /// When the refresh began: `--transfer-timeout` counts the connect too.
    started: Instant,
    server: Weak<RefCell<Server>>,
}

impl XfrFactory {
    fn done(&self, outcome: Outcome) {
        if let Some(s) = self.server.upgrade() {
            s.borrow_mut().transfer_done(self.index, outcome);
        }
    }
}

impl ClientFactory for XfrFactory {
    fn name(&self) -> &'static str {
        "AXFRClient"
    }

    fn build_protocol(&mut self, _peer: &Address) -> Box<dyn Protocol> {
        Box::new(Xfr {
            index: self.index,
            transfer: self.transfer.take(),
            deadline: self.deadline,
            started: self.started,
            input: InputBuffer::new(),
            server: self.server.clone(),
        })
    }

    fn client_connection_failed(&mut self, reason: &Reason) {
        self.done(Outcome::Failed(format!("cannot connect: {reason}")));
    }
}

struct Xfr {
    index: usize,
    transfer: Option<Transfer>,
    deadline: Duration,
    started: Instant,
    input: InputBuffer,
    server: Weak<RefCell<Server>>,
}

impl Xfr {
    fn done(&mut self, outcome: Outcome) {
        self.transfer = None;
        if let Some(s) = self.server.upgrade() {
            s.borrow_mut().transfer_done(self.index, outcome);
        }
    }
}

impl Protocol for Xfr {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.set_timeout(Some(XFR_IDLE.min(self.deadline)));
        // The idle timeout alone lets a primary that sends a byte now and then go on for ever.
        // The deadline counts from the refresh's start, so a slow connect is part of it.
        let left = self.deadline.saturating_sub(self.started.elapsed());
        t.call_later(left, XFR_DEADLINE_KEY);
        if let Some(x) = &mut self.transfer {
            t.write(&stream::frame(&x.start()));
        }
    }

    fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
        self.input.feed(data);
        while let Frame::Message(m) = stream::next(&mut self.input, u16::MAX as usize) {
            let Some(x) = &mut self.transfer else { return };
            match x.message(&m) {
                Step::More => {}
                Step::Send(q) => t.write(&stream::frame(&q)),
                Step::Done(o) => {
                    self.done(o);
                    return t.lose_connection();
                }
            }
        }
    }

    fn timer_fired(&mut self, t: &mut Transport<'_>, key: u64) {
        if key == XFR_DEADLINE_KEY && self.transfer.is_some() {
            self.done(Outcome::Failed(format!(
                "not done after {} s (--transfer-timeout)",
                self.deadline.as_secs()
            )));
            t.abort_connection();
        }
    }

    fn timeout_connection(&mut self, t: &mut Transport<'_>) {
        if self.transfer.is_some() {
            self.done(Outcome::Failed(format!(
                "nothing from the primary for {} s",
                XFR_IDLE.min(self.deadline).as_secs()
            )));
        }
        t.abort_connection();
    }

    fn connection_lost(&mut self, _t: &mut Transport<'_>, reason: &Reason) {
        if self.transfer.is_some() {
            self.done(Outcome::Failed(format!(
                "the connection closed early: {reason}"
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::tests::{kept_answer, req};
    use twistrs_core::testing::Harness;

    /// A forwarder (to a server that never answers: the test hands the answers in) and a
    /// TCP connection to it, on a string transport; the tempdir holds its resolv.conf.
    fn forwarding_stream() -> (Shared, Harness<DnsStream>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("resolv.conf");
        std::fs::write(&conf, "nameserver 127.0.0.1#9\n").unwrap();
        let server = Server::load(Config {
            resolv_conf: Some(conf),
            ..Config::default()
        })
        .unwrap();
        let stream = DnsStream::new(
            Rc::downgrade(&server),
            Duration::from_secs(30),
            Duration::from_secs(600),
        );
        let mut h = Harness::new(stream);
        server.borrow_mut().handle = Some(h.handle().clone());
        h.connect();
        (server, h, dir)
    }

    /// `n` framed queries for names outside every zone: each is forwarded.
    fn forwarded_queries(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                let q = crate::tests::query(&format!("q{i}.example.org"), Rtype::TXT, None);
                stream::frame(&q)
            })
            .collect()
    }

    /// The answers in `out`: length-framed messages.
    fn frames(out: &[u8]) -> Vec<Vec<u8>> {
        let mut buf = InputBuffer::new();
        buf.feed(out);
        let mut got = Vec::new();
        while let Frame::Message(m) = stream::next(&mut buf, u16::MAX as usize) {
            got.push(m);
        }
        got
    }

    fn pending(server: &Shared) -> usize {
        server
            .borrow()
            .forwarder
            .as_ref()
            .map_or(0, Forwarder::pending)
    }

    /// A client that pipelines many forwarded queries has at most `MAX_FORWARDED` of them
    /// upstream at once: each answer is written as it comes, whatever the output holds, so
    /// one read of queries for large answers held every answer at once (18 MB measured).
    /// The rest are read and forwarded as answers come back, and all are answered.
    #[test]
    fn forwarded_queries_of_one_connection_wait_for_answers_past_the_limit() {
        let (server, mut h, _dir) = forwarding_stream();
        h.feed(&forwarded_queries(100));
        assert_eq!(pending(&server), MAX_FORWARDED, "forwarded at once");
        assert!(h.reading_paused(), "the rest wait, and reading stops");
        let mut answered = 0;
        for round in 0..100 {
            if answered == 100 {
                break;
            }
            let before = h.proto.forwarded;
            assert!(before <= MAX_FORWARDED, "round {round}: {before} upstream");
            for _ in 0..before {
                h.notify(Box::new(Answer(format!("answer {answered}").into_bytes())));
                answered += 1;
            }
        }
        assert_eq!(answered, 100);
        let out = frames(&h.take_output());
        assert_eq!(out.len(), 100, "every query answered once");
        assert_eq!(out[99], b"answer 99");
        assert_eq!(h.proto.forwarded, 0);
        assert!(!h.reading_paused());
    }

    /// A client that sends forwarded queries and half-closes gets their answers, which
    /// come after its EOF; the connection closes after the last.
    #[test]
    fn a_half_closed_client_gets_the_answers_still_upstream() {
        let (_server, mut h, _dir) = forwarding_stream();
        h.feed(&forwarded_queries(3)).eof();
        assert!(
            h.lost().is_none() && !h.disconnecting(),
            "open for the answers"
        );
        for i in 0..3 {
            h.notify(Box::new(Answer(format!("answer {i}").into_bytes())));
        }
        let out = frames(&h.take_output());
        assert_eq!(
            out,
            [
                b"answer 0".to_vec(),
                b"answer 1".to_vec(),
                b"answer 2".to_vec()
            ]
        );
        assert!(h.lost().is_some(), "closed after the last answer");
    }

    /// A cache hit's line says so, with the code and count the zones' lines give; the
    /// server logged every forwarded question `forwarded`, cache hits too, and no code.
    #[test]
    fn a_forwarded_answer_is_logged_with_its_code_and_count() {
        let r = req("WWW.example.com", Rtype::A);
        let hit = kept_answer(&r).relay(&r, 10);
        let peer = IpAddr::from([192, 0, 2, 9]);
        assert_eq!(
            answer_line(&hit, peer, "from the cache"),
            "WWW.example.com A from 192.0.2.9: from the cache, NOERROR, 2 answers"
        );
        let crate::forward::Action::Reply { bytes, .. } =
            crate::forward::servfail(crate::forward::tests::client(), &r)
        else {
            panic!("a reply")
        };
        assert_eq!(
            answer_line(&bytes, peer, "forwarded"),
            "WWW.example.com A from 192.0.2.9: forwarded, SERVFAIL, 0 answers"
        );
        assert_eq!(
            answer_line(&[0; 5], peer, "forwarded"),
            "? TYPE0 from 192.0.2.9: forwarded, NOERROR, 0 answers"
        );
    }

    /// A server whose only zone is `zone`, and a TCP connection to it on a string
    /// transport whose peer reads nothing until the test takes the output.
    fn transfer_stream(zone: Zone, deadline: Duration) -> (Shared, Harness<DnsStream>) {
        let server = Server::load(Config::default()).unwrap();
        {
            let mut s = server.borrow_mut();
            s.zones = vec![Rc::new(zone)];
            s.rebuild();
        }
        let stream = DnsStream::new(Rc::downgrade(&server), Duration::from_secs(30), deadline);
        let mut h = Harness::new(stream);
        server.borrow_mut().handle = Some(h.handle().clone());
        h.connect();
        (server, h)
    }

    /// The most a transfer leaves in a connection's output: the high-water mark and one
    /// framed message.
    const HELD_MOST: usize = XFR_OUTPUT + crate::axfr::AXFR_MESSAGE + 2;

    /// The serials of the SOA records in `msgs`, and how many records they hold.
    fn soa_serials(msgs: &[Vec<u8>]) -> (Vec<String>, usize) {
        let records: Vec<String> = msgs
            .iter()
            .flat_map(|m| crate::tests::read(m).answer)
            .collect();
        let serials = records
            .iter()
            .filter(|r| r.contains(" SOA "))
            .map(|r| r.split(' ').nth(5).unwrap_or("?").to_string())
            .collect();
        (serials, records.len())
    }

    /// A transfer of a 20,000-name zone (0.7 MB) to a client that reads nothing holds at
    /// most the high-water mark and one message in the connection's output, not the whole
    /// copy (written at once, it held all 0.7 MB); taken a piece at a time, it is the
    /// transfer built at once, byte for byte, and every piece left the output as bounded.
    /// Queries sent behind it wait for it, then are answered.
    #[test]
    fn a_transfer_to_a_client_that_reads_nothing_holds_one_window_of_it() {
        let zone = crate::axfr::tests::zone(1, 20_000, "h");
        let q = crate::tests::query("example.com", Rtype::AXFR, None);
        let whole = crate::axfr::tests::at_once(&zone, &q);
        let size: usize = whole.iter().map(|m| m.len() + 2).sum();
        assert!(size > 600_000, "{size} bytes");
        let (_server, mut h) = transfer_stream(zone, Duration::from_secs(600));
        let mut input = stream::frame(&q);
        input.extend(stream::frame(&crate::tests::query(
            "h7.example.com",
            Rtype::A,
            None,
        )));
        h.feed(&input);
        let held = h.output().len();
        assert!(
            held > 0 && held <= HELD_MOST,
            "{held} bytes held of a {size}-byte transfer"
        );
        assert!(h.reading_paused(), "the query behind it waits");
        let mut out = Vec::new();
        let mut takes = 0;
        for _ in 0..1000 {
            let piece = h.take_output();
            if piece.is_empty() {
                break;
            }
            takes += 1;
            out.extend(piece);
            assert!(h.output().len() <= HELD_MOST, "{} held", h.output().len());
        }
        assert!(takes > 3, "taken in {takes} pieces");
        let mut got = frames(&out);
        let after = got.pop().expect("the answer to the query behind");
        assert_eq!(
            crate::tests::read(&after).answer,
            ["h7.example.com 300 A 10.0.0.7"]
        );
        assert_eq!(got.len(), whole.len(), "messages");
        assert!(
            got == whole,
            "the transfer differs from the one built at once"
        );
        assert!(h.proto.xfr.is_none() && !h.reading_paused());
    }

    /// The zone replaced (a reload, a refresh) after the first messages of a transfer have
    /// gone: the rest of the transfer is still the old version's, its records and its
    /// closing SOA, and the next transfer is the new one's.
    #[test]
    fn a_transfer_goes_on_from_the_zone_it_began_with_after_a_reload() {
        let old = crate::axfr::tests::zone(1, 20_000, "h");
        let q = crate::tests::query("example.com", Rtype::AXFR, None);
        let whole = crate::axfr::tests::at_once(&old, &q);
        let (server, mut h) = transfer_stream(old, Duration::from_secs(600));
        h.feed(&stream::frame(&q));
        let mut out = h.take_output();
        let first = frames(&out).len();
        assert!(
            first > 0 && first < whole.len(),
            "{first} of {} messages before the reload",
            whole.len()
        );
        let new = crate::axfr::tests::zone(2, 100, "new");
        {
            let mut s = server.borrow_mut();
            s.zones = vec![Rc::new(new)];
            s.rebuild();
        }
        out.extend(h.take_all_output());
        let got = frames(&out);
        let (serials, records) = soa_serials(&got);
        assert_eq!(serials, ["1", "1"], "the opening and closing SOA");
        assert_eq!(records, 20_000 + 3);
        assert!(got == whole, "the old version's transfer, whole");
        h.feed(&stream::frame(&q));
        let (serials, records) = soa_serials(&frames(&h.take_all_output()));
        assert_eq!((serials, records), (vec!["2".into(), "2".into()], 100 + 3));
    }

    /// A client that asks for a transfer and half-closes gets all of it, made as it reads;
    /// the connection closes after its last message.
    #[test]
    fn a_half_closed_client_gets_its_whole_transfer() {
        let zone = crate::axfr::tests::zone(1, 5_000, "h");
        let q = crate::tests::query("example.com", Rtype::AXFR, None);
        let whole = crate::axfr::tests::at_once(&zone, &q);
        let (_server, mut h) = transfer_stream(zone, Duration::from_secs(600));
        h.feed(&stream::frame(&q)).eof();
        assert!(
            h.lost().is_none() && !h.disconnecting(),
            "open for the rest"
        );
        assert!(h.output().len() <= HELD_MOST);
        let got = frames(&h.take_all_output());
        assert!(got == whole, "{} of {} messages", got.len(), whole.len());
        assert!(h.lost().is_some(), "closed after the last message");
    }

    /// `--transfer-timeout` (here shorter than the idle timeout) still cuts off a client
    /// that takes nothing of its transfer.
    #[test]
    fn a_transfer_not_taken_by_its_deadline_is_cut_off() {
        let zone = crate::axfr::tests::zone(1, 20_000, "h");
        let (_server, mut h) = transfer_stream(zone, Duration::from_secs(10));
        h.feed(&stream::frame(&crate::tests::query(
            "example.com",
            Rtype::AXFR,
            None,
        )));
        h.advance(Duration::from_secs(9));
        assert!(h.lost().is_none());
        h.advance(Duration::from_secs(2));
        assert!(h.lost().is_some(), "cut off at the deadline");
    }
}
